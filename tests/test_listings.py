"""Listings of real blogs (issue 30): the posts on front pages that are not a plain list of cards,
read through the real CLI against pages served on 127.0.0.1; and edits of known posts seen at the
check where their summary-feed entry changes, without waiting for a sweep.

- real pages from bench/corpus/listings (a link-blog whose headlines point off-site, an h-feed of
  untitled notes, cards inside one <article> wrapper) and small self-written ones (a WordPress
  front page with link/aside posts, schema.org JSON-LD and microdata, an archive list, a news
  index whose stories are links around headings): `sources test` finds every post, `check` reports
  a new one and nothing on an unchanged second check;
- `sources test` on a page without posts suggests the `selectors` kind with an example;
- a summary feed whose description of a known post changes has that post's page read in the same
  check, and the edit is mailed from that check (confirmed by the usual second fetch).
"""
from __future__ import annotations

import gzip
import json
import re
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crawler.feeds import parse_feed
from support.harness import Cli, write_config
from postwatch.testing.replica import BlogReplica, WordPressReplica

CORPUS = Path(__file__).resolve().parent.parent / "bench" / "corpus" / "listings"
MANIFEST = {Path(p["file"]).name.removesuffix(".html.gz"): p
            for p in json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))}
HTML = {"Content-Type": "text/html; charset=utf-8"}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Pages:
    """Listing pages at fixed paths of a replica (its own posts are not used), and a small
    article page for every post path they link to."""

    def __init__(self, site: BlogReplica):
        self.site = site

    def listing(self, path: str, html: str) -> str:
        self.site.route(path, lambda request, body=html.encode(): (200, HTML, body))
        return f"{self.site.base_url}{path}"

    def corpus(self, name: str, path: str) -> tuple[str, list[str]]:
        """The corpus page `name` at `path`, its site's own address replaced by the replica's; the
        URLs its listing must yield."""
        page = MANIFEST[name]
        origin = _origin(page["url"])
        html = gzip.decompress((CORPUS / page["file"]).read_bytes()).decode("utf-8")
        html = html.replace(origin, self.site.base_url).replace(origin.replace("https:", "http:"), self.site.base_url)
        expected = [self.site.base_url + urlsplit(u).path for u in page["expected"]]
        for url in expected:
            self.post(urlsplit(url).path)
        return self.listing(path, html), expected

    def post(self, path: str, title: str = "A post") -> None:
        body = (f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
                f"<p>The text of {path}, long enough to be a body of its own.</p></article></body></html>").encode()
        for variant in {path, path.rstrip("/"), path.rstrip("/") + "/"}:
            self.site.route(variant, lambda request, body=body: (200, HTML, body))


@pytest.fixture
def pages(site):
    return Pages(site)


def _found(output: str) -> int:
    match = re.search(r"posts:\s+(\d+) found", output)
    assert match, output
    return int(match.group(1))


def _source_config(tmp_path: Path, url: str, kind: str = "html", feed_url: str | None = None, extra: str = "") -> Cli:
    config = write_config(tmp_path, url, None, extra=extra)
    text = config.read_text().replace('kind = "link"', f'kind = "{kind}"' + (f'\nfeed_url = "{feed_url}"' if feed_url else ""))
    config.write_text(text)
    return Cli(config)


# ------------------------------------------------------------------------------------------
# Self-written pages of the shapes the corpus lacks
# ------------------------------------------------------------------------------------------
CHROME = ('<header id="masthead" class="site-header"><a href="/">Home</a><nav><a href="/about/">About us here</a>'
          '<a href="/category/world/">World news</a></nav></header>')
SIDEBAR = ('<aside id="secondary" class="widget-area"><h2>Recent Posts</h2><ul>'
           '<li><a href="/2019/01/01/an-old-favourite/">An old favourite post</a></li>'
           '<li><a href="/2019/01/02/another-old-one/">Another old favourite</a></li>'
           '<li><a href="/2019/01/03/a-third-old-one/">A third old favourite</a></li></ul></aside>'
           '<footer id="colophon" class="site-footer"><a href="/privacy-policy/">Privacy policy page</a></footer>')


def wordpress_front(posts: list[tuple[str, str]]) -> str:
    """A WordPress front page: a sticky post, standard posts, a link-format post whose headline
    points off-site (permalink on its date) and an untitled aside (permalink on its date only)."""
    articles = []
    for i, (slug, title) in enumerate(posts):
        url = f"/2024/05/{10 + i:02d}/{slug}/"
        date = f'<a href="{url}" class="entry-date-link"><time datetime="2024-05-{10 + i:02d}T09:00:00+00:00">May {10 + i}, 2024</time></a>'
        meta = (f'<footer class="entry-footer"><span class="cat-links"><a href="/category/news/" rel="category tag">News</a></span>'
                f'<a href="/author/ann/">Ann</a> <a href="{url}#respond">Leave a comment</a></footer>')
        if slug.startswith("link-"):
            articles.append(f'<article class="post format-link hentry"><header class="entry-header"><h2 class="entry-title">'
                            f'<a href="https://elsewhere.example/{slug}">{title}</a></h2>{date}</header>'
                            f'<div class="entry-content"><p>Worth reading.</p></div>{meta}</article>')
        elif slug.startswith("aside-"):
            articles.append(f'<article class="post format-aside hentry"><div class="entry-content"><p>{title}: see '
                            f'<a href="https://elsewhere.example/aside">this</a>.</p></div>'
                            f'<footer class="entry-footer">{date} <a href="/author/ann/">Ann</a></footer></article>')
        else:
            sticky = " sticky" if i == 0 else ""
            articles.append(f'<article class="post type-post hentry{sticky}"><header class="entry-header"><h2 class="entry-title">'
                            f'<a href="{url}" rel="bookmark">{title}</a></h2>{date}</header>'
                            f'<div class="entry-summary"><p>The start of {title}.</p></div>{meta}</article>')
    return (f'<!DOCTYPE html><html><head><title>Daily</title></head><body class="home blog">{CHROME}'
            f'<main id="main">{"".join(articles)}<nav class="navigation pagination"><span class="page-numbers current">1'
            f'</span><a class="page-numbers" href="/page/2/">2</a></nav></main>{SIDEBAR}</body></html>')


def page_builder_front(posts: list[tuple[str, str]]) -> str:
    """A WordPress front page made with a page builder: a static page (itself an hentry article)
    whose post-loop widget holds the latest posts, each dated in a heading above its title, and
    beside them in the same page a widget listing the site's pages and a recent-posts widget."""
    loop = "".join(f'<article class="entry post type-post hentry"><h1 class="date-time">May {10 + i}, 2024</h1>'
                   f'<h1 class="entry-title"><a href="/{slug}/" rel="bookmark">{title}</a></h1>'
                   f'<div class="entry-content"><p>The start of {title}.</p></div></article>'
                   for i, (slug, title) in enumerate(posts))
    pages = "".join(f'<li><a href="/{slug}-{n}/">An older page number {n}</a></li>' for n in range(8) for slug, _ in posts[:1])
    recent = "".join(f'<li><a href="/{slug}/">{title}</a></li>' for slug, title in posts)
    return (f'<!DOCTYPE html><html><head><title>Home</title></head><body class="home page">{CHROME}'
            f'<div id="content" class="site-content" role="main"><article class="entry page type-page hentry">'
            f'<div class="entry-content"><div class="panel-grid"><div class="so-panel widget widget_text"><h1>New every '
            f'Wednesday</h1></div><div class="so-panel widget widget_postloop">{loop}</div>'
            f'<div class="so-panel widget widget_pages"><ul>{pages}</ul></div>'
            f'<div class="so-panel widget widget_recent_entries"><ul>{recent}</ul></div></div></div></article></div>'
            f'</body></html>')


def test_a_news_index_lists_the_stories_of_its_headline_bar_beside_those_of_its_sections():
    """A news index whose top stories sit in a bar of plain links, of another shape than the
    sections' story cards: the stories of both are the listing, the topic pages and the
    most-read box are not."""
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind

    slugs = [f"story-{i}" for i in range(9)]
    bar = "".join(f'<li class="top-story"><a href="{_story_path(f"top-{i}")}">Top story number {i} today</a></li>'
                  for i in range(4))
    html = news_index(_posts(slugs)).replace("<main>", f'<main><ul class="headline-bar">{bar}</ul>', 1)
    entries, _ = SourceKind.named("html")().listing(selector_for(html, "https://news.example/news/"),
                                                    "https://news.example/news/", "https://news.example/")
    stories = {"https://news.example" + _story_path(slug) for slug in slugs + [f"top-{i}" for i in range(4)]}
    assert {e.url for e in entries} == stories


def test_a_page_builder_front_page_lists_the_posts_of_its_post_loop_titled_by_their_permalink_headings():
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind

    posts = [("pineapples", "Pineapples"), ("animate-your-edit", "Animate your edit")]
    html = page_builder_front(posts)
    entries, _ = SourceKind.named("html")().listing(selector_for(html, "https://weekly.example/"),
                                                    "https://weekly.example/", "https://weekly.example/")
    assert [(e.url, e.title) for e in entries] == [("https://weekly.example/pineapples", "Pineapples"),
                                                   ("https://weekly.example/animate-your-edit", "Animate your edit")]


def json_ld_page(posts: list[tuple[str, str]]) -> str:
    """A script-rendered blog: its posts only in JSON-LD (a Blog's blogPost, an ItemList)."""
    blog = {"@context": "https://schema.org", "@type": "Blog", "blogPost": [
        {"@type": "BlogPosting", "headline": title, "url": f"/writing/{slug}", "datePublished": f"2024-04-{i + 1:02d}"}
        for i, (slug, title) in enumerate(posts)]}
    return (f'<!DOCTYPE html><html><head><title>Writing</title><script type="application/ld+json">{json.dumps(blog)}'
            f'</script></head><body>{CHROME}<div id="app">Loading…</div>{SIDEBAR}</body></html>')


def microdata_page(posts: list[tuple[str, str]]) -> str:
    items = "".join(f'<div itemprop="blogPost" itemscope itemtype="https://schema.org/BlogPosting">'
                    f'<a itemprop="url" href="/p/{slug}"><span itemprop="headline">{title}</span></a>'
                    f'<meta itemprop="datePublished" content="2024-03-{i + 1:02d}"></div>'
                    for i, (slug, title) in enumerate(posts))
    return (f'<!DOCTYPE html><html><body>{CHROME}<div itemscope itemtype="https://schema.org/Blog">{items}</div>'
            f'{SIDEBAR}</body></html>')


def archive_page(posts: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><time datetime="2023-0{1 + i % 9}-1{i % 9}">{1 + i % 9}/1{i % 9}/2023</time> '
                    f'<a href="/notes/{slug}.html">{title}</a></li>' for i, (slug, title) in enumerate(posts))
    return (f'<!DOCTYPE html><html><body>{CHROME}<main><h1>Archive</h1><ul class="archive">{items}</ul></main>'
            f'{SIDEBAR}</body></html>')


TOPICS = ("world", "science", "culture")


def _topic(slug: str) -> str:
    return TOPICS[sum(map(ord, slug)) % 3]


def _story_path(slug: str) -> str:
    return f"/{_topic(slug)}/2024/06/{1 + sum(map(ord, slug)) % 28:02d}/{slug}"


def news_index(posts: list[tuple[str, str]]) -> str:
    """Sections of stories, each story a link around its heading and standfirst."""
    sections = []
    for topic in TOPICS:
        stories = "".join(f'<a class="story-card" href="{_story_path(slug)}">'
                          f'<h3 class="story-title">{title}</h3><p>Standfirst of {title}.</p></a>'
                          f'<a class="topic-tag" href="/topics/{topic}">{topic.title()} coverage</a>'
                          for slug, title in posts if _topic(slug) == topic)
        sections.append(f'<section class="topic topic-{topic}"><h2><a href="/{topic}/">{topic.title()}</a></h2>{stories}</section>')
    return (f'<!DOCTYPE html><html><body>{CHROME}<main>{"".join(sections)}</main>'
            f'<aside class="most-read"><ol><li><a href="/world/2019/01/01/old">Most read story one</a></li></ol></aside>'
            f'{SIDEBAR}</body></html>')


SHAPES = {
    "wordpress": (wordpress_front, "/", ["sticky-note", "standard-one", "link-to-elsewhere", "aside-thought", "standard-two"]),
    "json-ld": (json_ld_page, "/writing/", ["first", "second", "third", "fourth"]),
    "microdata": (microdata_page, "/blog/", ["alpha", "beta", "gamma", "delta"]),
    "archive": (archive_page, "/archive/", [f"note-{i}" for i in range(7)]),
    "news": (news_index, "/news/", [f"story-{i}" for i in range(9)]),
}


def _posts(slugs: list[str]) -> list[tuple[str, str]]:
    return [(s, f"Title of {s.replace('-', ' ')}") for s in slugs]


@pytest.mark.parametrize("name", ["adactio-links", "waterpigs-home", "hexo-matery-home"])
def test_sources_test_finds_every_post_of_real_front_pages(tmp_path, site, pages, name):
    """Real pages: link-blog (0 found before, 1 with the first one's tag page), h-feed of notes (1
    before), cards in one <article> wrapper (1 before)."""
    url, expected = pages.corpus(name, "/front/")
    result = _source_config(tmp_path, url)("sources", "test", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _found(result.stdout) == len(expected), result.stdout


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sources_test_finds_every_post_of_each_listing_shape(tmp_path, site, pages, shape):
    render, path, slugs = SHAPES[shape]
    url = pages.listing(path, render(_posts(slugs)))
    result = _source_config(tmp_path, url)("sources", "test", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _found(result.stdout) == len(slugs), result.stdout


def test_the_link_blog_headline_is_the_title_and_the_on_site_permalink_the_url():
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind

    page = MANIFEST["adactio-links"]
    html = gzip.decompress((CORPUS / page["file"]).read_bytes()).decode("utf-8")
    entries, following = SourceKind.named("html")().listing(selector_for(html, page["url"]), page["url"], page["url"])
    assert [e.url for e in entries] == [u.rstrip("/") for u in page["expected"]]
    assert entries[0].title == "A Book Apart, Front-End Next Steps"
    assert entries[0].published.isoformat() == "2018-11-08T19:08:33+00:00"
    assert following == "https://adactio.com/links?start=20"
    wp = wordpress_front(_posts(SHAPES["wordpress"][2]))
    entries, _ = SourceKind.named("html")().listing(selector_for(wp, "https://daily.example/"), "https://daily.example/",
                                                    "https://daily.example/")
    by_url = {e.url: e.title for e in entries}
    assert by_url["https://daily.example/2024/05/12/link-to-elsewhere"] == "Title of link to elsewhere"
    assert "https://daily.example/2024/05/13/aside-thought" in by_url and len(by_url) == 5
    assert not any("/category/" in u or "/author/" in u or "/2019/" in u or "/page/" in u for u in by_url)


def test_a_new_post_on_a_real_link_blog_is_one_event_and_an_unchanged_check_none(tmp_path, site, pages):
    page = MANIFEST["adactio-links"]
    html = gzip.decompress((CORPUS / page["file"]).read_bytes()).decode("utf-8").replace(_origin(page["url"]), site.base_url)
    url = pages.listing("/links", html)
    for expected in page["expected"]:
        pages.post(urlsplit(expected).path)
    cli = _source_config(tmp_path, url)
    assert "baseline recorded, 20 posts" in cli("check", check=True).stdout
    assert "no changes" in cli("check", check=True).stdout
    # A new entry at the top: a copy of the first one with another permalink and headline.
    first = html.index('<article class="xfolkentry h-entry">')
    end = html.index("</article>", first) + len("</article>")
    entry = html[first:end].replace("/links/14501", "/links/14502").replace("A Book Apart, Front-End Next Steps",
                                                                             "A freshly shared link")
    pages.listing("/links", html[:first] + entry + html[first:])
    pages.post("/links/14502", "A freshly shared link")
    second = cli("check", check=True).stdout
    assert "1 new" in second and "updated" not in second, second
    assert "no changes" in cli("check", check=True).stdout
    history = cli("history", check=True).stdout
    assert "A freshly shared link" in history and len(re.findall(r"\snew\s", history)) == 1, history


def test_a_new_story_on_a_news_index_is_one_event_and_an_unchanged_check_none(tmp_path, site, pages):
    slugs = SHAPES["news"][2]
    for slug in slugs + ["story-new"]:
        pages.post(_story_path(slug), f"Title of {slug}")
    url = pages.listing("/news/", news_index(_posts(slugs)))
    cli = _source_config(tmp_path, url)
    assert "baseline recorded, 9 posts" in cli("check", check=True).stdout
    assert "no changes" in cli("check", check=True).stdout
    pages.listing("/news/", news_index(_posts(["story-new", *slugs])))
    second = cli("check", check=True).stdout
    assert "1 new" in second and "removed" not in second, second
    assert "no changes" in cli("check", check=True).stdout


def test_sources_test_suggests_the_selectors_kind_with_an_example_when_nothing_is_found(tmp_path, site, pages):
    url = pages.listing("/empty/", f"<html><body>{CHROME}<main><p>Welcome!</p></main>{SIDEBAR}</body></html>")
    result = _source_config(tmp_path, url)("sources", "test", url)
    assert result.returncode == 1
    out = result.stdout
    assert "no posts found" in out and 'kind = "selectors"' in out and "listing_item" in out and "post_link" in out
    assert "--selector listing_item=" in out and "docs/listings.md" in out


# ------------------------------------------------------------------------------------------
# Edits without a sweep: a changed summary-feed entry has its post's page read at this check
# ------------------------------------------------------------------------------------------
def _feed_source(tmp_path: Path, site: WordPressReplica) -> Cli:
    cli = _source_config(tmp_path, site.blog_url, kind="feed", feed_url=f"{site.base_url}/feed/")
    cli.config.write_text(cli.config.read_text().replace("[crawl]\n", '[crawl]\nconfirm_edits_after = "0s"\n'))
    return cli


def _page_reads(site: WordPressReplica) -> list[str]:
    return [r.path.rstrip("/") for r in site.requests if re.match(r"/\d{4}/", r.path)]


def test_a_changed_summary_in_the_feed_has_the_post_page_read_and_the_edit_mailed_at_this_check(tmp_path):
    """A post published ten days ago, read when it was new; its correction changes the feed's
    summary. Its page is not due for a revisit by age (daily, and read today): before, the check
    read the feed and reported nothing."""
    with WordPressReplica(feed_content=False) as site:
        cli = _feed_source(tmp_path, site)
        assert "baseline recorded" in cli("check", check=True).stdout
        post = site.add_post("A rescue, told in full", ["The first account of the rescue, as published.",
                                                       "A second paragraph."], date=date.today() - timedelta(days=10))
        path = urlsplit(site.post_url(post)).path
        assert "1 new" in cli("check", check=True).stdout          # its page read: the reference body
        assert "no changes" in cli("check", check=True).stdout
        site.edit_post(post.slug, body_paragraphs=["A corrected account of the rescue, with the right dates.",
                                                   "A second paragraph."])
        site.clear_log()
        edited = cli("check", check=True).stdout
        assert "1 updated" in edited and "seen once" not in edited, edited
        reads = [r.status for r in site.requests if r.path.rstrip("/") == path.rstrip("/")]
        assert reads == [200, 200], reads     # read because the summary changed, then the confirming read
        history = cli("history", check=True).stdout
        assert re.search(r"\supdated\s+A rescue, told in full", history), history

        site.clear_log()
        assert "no changes" in cli("check", check=True).stdout
        assert path.rstrip("/") not in _page_reads(site)          # the entry's new summary is known now


def test_an_unchanged_summary_feed_costs_no_post_page_read(tmp_path):
    with WordPressReplica(feed_content=False) as site:
        cli = _feed_source(tmp_path, site)
        cli("check", check=True)
        site.add_post("A fresh post", ["A new post's only paragraph, for the feed and its page."],
                      date=date.today() - timedelta(days=10))
        site.clear_log()
        assert "1 new" in cli("check", check=True).stdout
        assert len(_page_reads(site)) == 1             # the new post's page only: no known post re-read
        site.edit_post(site.posts[5].slug, title="A retitled old post")      # the feed changes, this entry only
        site.clear_log()
        out = cli("check", check=True).stdout
        assert "updated" not in out, out              # a baseline post's page is read once: its reference
        assert _page_reads(site) == [urlsplit(site.post_url(site.posts[5])).path.rstrip("/")]
        site.clear_log()
        assert "no changes" in cli("check", check=True).stdout
        assert _page_reads(site) == []


def _confirm_at_once(cli: Cli) -> None:
    cli.config.write_text(cli.config.read_text().replace("[crawl]\n", '[crawl]\nconfirm_edits_after = "0s"\n'))


def _a_ten_day_old_post_read_when_new(tmp_path, site):
    """An `html` source (no feed) past its baseline, with a post published ten days ago that was
    read when it was new; an unchanged listing entry then costs no page: (cli, post, its path)."""
    cli = _source_config(tmp_path, site.blog_url, kind="html")
    _confirm_at_once(cli)
    assert "baseline recorded" in cli("check", check=True).stdout
    post = site.add_post("A rescue, told in full", ["The first account of the rescue, as published.",
                                                   "A second paragraph."], date=date.today() - timedelta(days=10))
    assert "1 new" in cli("check", check=True).stdout
    site.clear_log()
    assert "no changes" in cli("check", check=True).stdout
    assert _page_reads(site) == []
    return cli, post, urlsplit(site.post_url(post)).path.rstrip("/")


def test_a_retitled_listing_entry_has_the_post_page_read_and_the_edit_mailed_at_this_check(tmp_path):
    """Kind `html`, no feed: a post published ten days ago, read when it was new, is retitled and
    corrected. Its page is not due for a revisit by age; the listing's new title puts it on this
    check's read list (as a changed feed entry does), and the next check reads it no more."""
    with WordPressReplica() as site:
        cli, post, path = _a_ten_day_old_post_read_when_new(tmp_path, site)
        site.edit_post(post.slug, title="A rescue, told in full (corrected)",
                       body_paragraphs=["A corrected account of the rescue, with the right dates.", "A second paragraph."])
        site.clear_log()
        edited = cli("check", check=True).stdout
        assert "1 updated" in edited, edited
        assert _page_reads(site) == [path, path]                  # the retitled entry's read, then the confirming one
        site.clear_log()
        assert "no changes" in cli("check", check=True).stdout
        assert _page_reads(site) == []                            # the entry's new title is known now

        site.edit_post(site.posts[5].slug, title="A retitled old post")     # a baseline post, retitled only
        site.clear_log()
        out = cli("check", check=True).stdout
        assert "updated" not in out, out
        assert _page_reads(site) == [urlsplit(site.post_url(site.posts[5])).path.rstrip("/")]


def test_a_changed_lead_on_the_listing_has_the_post_page_read_and_the_edit_mailed_at_the_next_check(tmp_path):
    """Kind `html`, no feed: the listing shows each post's excerpt. A post published ten days ago,
    read when it was new, has its opening corrected under the same title. Its page is not due for
    a revisit by age; the listing's new lead puts it on this check's read list, and the check
    after that reads it no more."""
    with WordPressReplica() as site:
        cli, post, path = _a_ten_day_old_post_read_when_new(tmp_path, site)
        site.edit_post(post.slug, body_paragraphs=["A corrected account of the rescue, with the right dates.",
                                                   "A second paragraph."])
        site.clear_log()
        edited = cli("check", check=True).stdout
        assert "1 updated" in edited, edited
        assert _page_reads(site) == [path, path]                  # the changed lead's read, then the confirming one
        site.clear_log()
        assert "no changes" in cli("check", check=True).stdout
        assert _page_reads(site) == []                            # the entry's new lead is known now


def test_a_changed_lastmod_in_the_sitemap_has_the_post_page_read_and_the_edit_mailed(tmp_path):
    """Kind `html` with the site's `sitemap_url`: a post's later paragraph is corrected, which
    neither its listing title nor its lead shows; its <lastmod> in the sitemap changes, and the next
    check reads its page. The sitemap is asked conditionally at each check (a 304 when unchanged),
    never at the baseline."""
    long_opening = ("The first account of the rescue, as published, long enough that the listing's excerpt "
                    "ends inside it: what follows it never shows on the listing page of this blog at all.")
    with WordPressReplica(sitemap=True) as site:
        cli = _source_config(tmp_path, site.blog_url, kind=f'html"\nsitemap_url = "{site.base_url}/sitemap.xml')
        _confirm_at_once(cli)
        assert "baseline recorded" in cli("check", check=True).stdout
        assert not [r for r in site.requests if r.path == "/sitemap.xml"]
        post = site.add_post("A rescue, told in full", [long_opening, "The boat left at nine."],
                             date=date.today() - timedelta(days=10))
        path = urlsplit(site.post_url(post)).path.rstrip("/")
        assert "1 new" in cli("check", check=True).stdout
        for _ in range(2):              # the new post's <lastmod> is recorded, then nothing to read
            site.clear_log()
            assert "no changes" in cli("check", check=True).stdout
            assert _page_reads(site) == []
        assert [r.status for r in site.requests if r.path == "/sitemap.xml"] == [304]
        site.edit_post(post.slug, body_paragraphs=[long_opening, "The boat left at ten, not at nine."])
        site.clear_log()
        edited = cli("check", check=True).stdout
        assert "1 updated" in edited, edited
        assert _page_reads(site) == [path, path]
        # the changed sitemap, then asked again (conditionally) by the pass that confirms the edit
        assert [r.status for r in site.requests if r.path == "/sitemap.xml"] == [200, 304]
        site.clear_log()
        assert "no changes" in cli("check", check=True).stdout
        assert _page_reads(site) == []


def test_a_feed_entry_fingerprint_follows_its_summary_content_title_and_update_time():
    from crawler.plan import feed_entry_key

    def atom(summary: str, updated: str, title: str = "A post") -> bytes:
        return (f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>'
                f'<entry><title>{title}</title><link href="https://b.example/p/1"/><id>1</id>'
                f'<updated>{updated}</updated><summary type="html">{summary}</summary></entry></feed>').encode()

    def fingerprint(document: bytes) -> str:
        return parse_feed(document, "https://b.example/feed", site="https://b.example/").fingerprints["https://b.example/p/1"]

    base = fingerprint(atom("Short &lt;b&gt;summary&lt;/b&gt;.", "2024-05-01T10:00:00Z"))
    assert fingerprint(atom("Short &lt;i&gt;summary&lt;/i&gt;.", "2024-05-01T10:00:00Z")) == base    # markup alone
    assert fingerprint(atom("Short summary, corrected.", "2024-05-01T10:00:00Z")) != base
    assert fingerprint(atom("Short &lt;b&gt;summary&lt;/b&gt;.", "2024-05-02T10:00:00Z")) != base
    assert fingerprint(atom("Short &lt;b&gt;summary&lt;/b&gt;.", "2024-05-01T10:00:00Z", "Retitled")) != base
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [
        {"id": "1", "url": "https://b.example/p/1", "summary": "S", "date_modified": "2024-05-01T10:00:00Z"}]}
    first = parse_feed(json.dumps(feed).encode(), "https://b.example/feed.json", site="https://b.example/")
    feed["items"][0]["date_modified"] = "2024-05-03T10:00:00Z"
    second = parse_feed(json.dumps(feed).encode(), "https://b.example/feed.json", site="https://b.example/")
    assert first.fingerprints != second.fingerprints
    assert feed_entry_key("https://b.example/p/1").endswith("https://b.example/p/1")


# ------------------------------------------------------------------------------------------
# Shapes of the second held-out set (bench/corpus/heldout2), written here at small size
# ------------------------------------------------------------------------------------------
def _read_listing(html: str, page_url: str) -> list[tuple[str, str, str | None]]:
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind

    entries, _ = SourceKind.named("html")().listing(selector_for(html, page_url), page_url, page_url)
    return [(e.url, e.title, e.published.date().isoformat() if e.published else None) for e in entries]


def aggregator_front(stories: list[tuple[int, str, str]]) -> str:
    """A link aggregator's front page: each story two table rows, the headline off-site with its
    site filter, then a meta row whose age link is the on-site permalink (its date in a title
    attribute) beside "hide" and comments links; a top bar of short navigation links."""
    rows = "".join(
        f'<tr class="athing"><td class="title">{n}.</td><td><a href="vote?id={n}&how=up"><div class="arrow"></div></a></td>'
        f'<td class="title"><span class="titleline"><a href="https://elsewhere{n}.example/post">{headline}</a>'
        f' (<a href="from?site=elsewhere{n}.example">elsewhere{n}.example</a>)</span></td></tr>'
        f'<tr><td colspan="2"></td><td class="subtext">{n * 7} points by <a href="user?id=someone">someone</a> '
        f'<span class="age" title="{day}T10:00:00"><a href="item?id={n}">{n} hours ago</a></span> | '
        f'<a href="hide?id={n}&goto=news">hide</a> | <a href="item?id={n}">{n * 3}&nbsp;comments</a></td></tr>'
        f'<tr class="spacer"></tr>'
        for n, headline, day in stories)
    top = ('<tr><td><span class="pagetop"><b><a href="news">Links</a></b> <a href="newest">new</a> | '
           '<a href="front">past</a> | <a href="newcomments">comments</a> | <a href="ask">ask</a> | '
           '<a href="submit">submit</a></span><span class="pagetop"><a href="login?goto=news">login</a></span></td></tr>')
    return (f'<html><body><center><table>{top}<tr><td><table>{rows}</table></td></tr>'
            f'<tr><td><a href="news?p=2" class="morelink">More</a></td></tr></table></center></body></html>')


def test_a_link_aggregator_lists_its_two_row_stories_by_permalink_headline_and_age_not_its_links_to_act():
    stories = [(1, "A long read about compilers", "2023-10-18"), (2, "Why the sky is blue, again", "2023-10-17"),
               (3, "Show: a tiny text editor", "2023-10-18"), (4, "Notes on a quiet database", "2023-10-16")]
    assert _read_listing(aggregator_front(stories), "https://links.example/") == [
        (f"https://links.example/item?id={n}", headline, day) for n, headline, day in stories]


def test_a_card_whose_date_links_to_the_day_archive_lists_the_post_with_its_cjk_date():
    """A WordPress page-builder card: the date, written in the site's locale, links to the day's
    archive; the post's link wraps its heading; a comment count links to the post's comments."""
    posts = [("2025/08/open-party", "オープンパーティーを開催します", "8月 18, 2025", "2025/08/18"),
             ("2025/08/summer-camp", "夏合宿の報告", "8月 5, 2025", "2025/08/05"),
             ("2025/07/seminar", "柔道セミナー", "7月 14, 2025", "2025/07/14")]
    cards = "".join(
        f'<div class="post-list-item post-{i} hentry"><a href="{slug}.html"><img src="/i{i}.jpg" alt=""></a>'
        f'<div class="metadata-item">by <a href="https://dojo.example/blog/author/admin">admin</a></div>'
        f'<div class="metadata-item"><a href="{day}.html">{shown}</a></div>'
        f'<div class="h-blog-title"><a href="{slug}.html"><h4>{title}</h4></a></div>'
        f'<div class="excerpt">本文の抜粋 [&hellip;]</div><a href="{slug}.html#respond">0</a></div>'
        for i, (slug, title, shown, day) in enumerate(posts))
    html = f'<html><body><main><div class="post-list">{cards}</div></main></body></html>'
    assert _read_listing(html, "https://dojo.example/blog/") == [
        (f"https://dojo.example/blog/{slug}.html", title, day.replace("/", "-"))
        for slug, title, _, day in posts]


def test_a_definition_list_of_posts_takes_each_date_from_its_dt():
    posts = [("static-site-generators", "Static site generators", "Sat 03 October 2015", "2015-10-03"),
             ("virtual-temperature", "Virtual Temperature", "Mon 31 August 2015", "2015-08-31"),
             ("geopotential", "Geopotential", "Sun 30 August 2015", "2015-08-30")]
    items = "".join(f'<dt>{shown}</dt><dd><a href="/{slug}.html">{title}</a></dd>' for slug, title, shown, _ in posts)
    html = f'<html><body><div class="archive"><h2><a href="/index.html">Recent Posts</a></h2><dl>{items}</dl></div></body></html>'
    assert _read_listing(html, "https://physics.example/") == [
        (f"https://physics.example/{slug}.html", title, day) for slug, title, _, day in posts]


def test_a_home_page_lists_its_dated_recent_posts_not_its_longer_undated_link_lists_of_the_same_shape():
    posts = [("wellness-halfway", "Wellness challenge halfway point", "2023-11-15"),
             ("first-week", "First week of wellness challenge", "2023-11-05"),
             ("currently", "Currently", "2023-09-18")]
    recent = "".join(f'<li>{day}: <a href="/blog/{slug}/">{title}</a></li>' for slug, title, day in posts)
    topics = "".join(f'<li><a href="kb/{t.lower()}">{t}</a></li>'
                     for t in ("Coding", "Geography", "Heraldry", "Linguistics", "Places", "Rhetoric", "Sysadmin"))
    tools = "".join(f'<li><a href="kb/{t}">{t.title()}</a> - things I use</li>' for t in ("books", "movies", "uses"))
    html = (f'<html><body><nav><ul><li><a href="/about">About</a></li></ul></nav><section><h1>Ben</h1>'
            f'<h2>Most Recent Blog Posts</h2><ul>{recent}</ul><h2>My stuff</h2><ul>{tools}</ul>'
            f'<h2>Knowledge Base</h2><ul>{topics}</ul></section></body></html>')
    assert _read_listing(html, "https://ben.example/") == [
        (f"https://ben.example/blog/{slug}", title, day) for slug, title, day in posts]


@pytest.mark.parametrize("text, day", [
    ("投稿日：2024年1月5日 更新", "2024-01-05"), ("2025년 8월 19일", "2025-08-19"), ("by admin 8月 19, 2025", "2025-08-19"),
    ("released 2025.08.19.", "2025-08-19"), ("2025/8/9", "2025-08-09"), ("version 2019.1.2.3", None),
    ("13月 40, 2025", None)])
def test_dates_written_with_a_numbered_month_are_read(text, day):
    from crawler.dates import find_date_in_text

    found = find_date_in_text(text)
    assert (found.date().isoformat() if found else None) == day


def test_a_page_whose_body_class_names_its_navigation_layout_still_lists_its_posts():
    """A magazine theme names its layout on <body> ("standardnavigation-site-navigation"); that
    class says nothing about the links inside the page (read as chrome, the page fell back to every
    link on it, a shop's promotion among them)."""
    posts = _posts([f"story-{i}" for i in range(4)])
    cards = "".join(f'<div class="summary-item"><a href="/story/{slug}/"><h3>{title}</h3></a><p>Dek.</p></div>'
                    for slug, title in posts)
    html = (f'<html><body class="standardnavigation-site-navigation"><header class="site-navigation">'
            f'<a href="/about/">About this magazine</a></header><main>{cards}</main>'
            f'<div class="promo"><a href="/shop/gift-subscription">Give a subscription</a></div></body></html>')
    assert [(url, title) for url, title, _ in _read_listing(html, "https://mag.example/")] == [
        (f"https://mag.example/story/{slug}", title) for slug, title in posts]
