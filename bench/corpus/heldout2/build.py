"""Rebuild bench/corpus/heldout2/ (the second held-out set of issue 30) from local snapshots (bare
git dirs) of its source repositories.

    python bench/corpus/heldout2/build.py /work/.mirror   # the folder holding owner+name/repo snapshots

None of these repositories is used by bench/corpus, bench/corpus/listings or bench/corpus/heldout,
except mozilla/readability, whose test pages here are the real-site ones the first held-out set
did not take. Nobody here looked at these pages while writing the listing detection or choosing
the extraction settings; `first-run.txt` is bench/bench_corpus.py --set heldout2 run once on them
before any code was changed.

Writes pages/*.html.gz and manifest.json in the form of bench/corpus/heldout/:
- `listings`: real front pages; `entries` are the page's own listing entries in page order (URL,
  title and date as the page shows them), picked by selectors written for each page's theme after
  reading its HTML (ENTRY: one element per entry; in it LINK the permalink, TITLE the title's
  text, DATE the element holding the date, as an attribute or as text matching DATE_PATTERN read
  with DATE_FORMAT). A selector starting with "xpath:" is an XPath relative to the entry.
  `also_posts`: posts the page links elsewhere (a link aggregator's off-site stories, a
  magazine's videos): neither a hit nor a false entry.
- `articles`: real article pages with a reference extraction: Mozilla Readability's remaining
  real-site test pages (reference body `expected.html`, title and `publishedTime` from
  `expected-metadata.json`) and newspaper4k's test pages that carry a reference text and metadata
  (`tests/data/txt/*.txt`, `tests/data/metadata/*.json`: url, title, publish_date).
Nothing here is imported by postwatch, and nothing here runs postwatch's code.
"""
from __future__ import annotations

import gzip
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urljoin

from parsel import Selector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # bench/corpus: snapshots.py
from snapshots import git, readability_articles, snapshot, text  # noqa: E402

HERE = Path(__file__).parent
NO_LICENCE = "no licence file in the repository; the built pages of the author's own site"
ISO_DAY = (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d")

# name, repository, commit (None: the snapshot's HEAD), path, (page URL, how it was set), shape,
# licence, ENTRY, LINK, TITLE, DATE (selector, "@attr" or "text"), (DATE_PATTERN, DATE_FORMAT),
# ALSO (selector of posts shown elsewhere, over the whole page)
LISTINGS = [
    ("linkagg-hn-front", "jblanava/hackernewsScrapper", None, "src/utils/exampleHTML.ts",
     ("https://news.ycombinator.com/", "the page's own links (relative to news.ycombinator.com)"),
     "link aggregator front page (Hacker News, October 2023), the link-blog shape: each entry's headline "
     "points off-site, its on-site permalink (item?id=) is the age link and the comments link below; "
     "saved whole inside a TypeScript template string",
     "MIT (repository); page content: Hacker News'",
     "xpath://tr[@class='athing']", "xpath:following-sibling::tr[1]//span[@class='age']/a",
     "span.titleline > a", ("xpath:following-sibling::tr[1]//span[@class='age']", "@title"), ISO_DAY,
     "span.titleline > a"),
    ("wp-colibri-home", "ryosuke-horie/hides_blog_archive", None, "simple_mirror/blog/index.html",
     ("https://hidemiyoshi.jp/blog/", "the posts' absolute data-href links"),
     "WordPress 5.9 front page (Colibri page builder, Japanese), saved by wget: a masonry grid of "
     "div.post-list-item cards, the permalink on the thumbnail, the title and a 'read more' button, "
     "the date a link to the day's archive",
     NO_LICENCE.replace("site", "WordPress blog, mirrored as static files"),
     "div.post-list-item", ".h-blog-title a", ".h-blog-title h4",
     ("xpath:.//div[@class='metadata-item'][@name='2']", "text"), (r"\d{1,2}月 \d{1,2}, \d{4}", "%m月 %d, %Y"),
     None),
    ("pelican-nest-home", "0x7df/0x7df.github.io", "d8f6944593019b6b679137d5f99d912f78886919", "output/index.html",
     ("http://0x7df.io/", "the page's own absolute links"),
     "Pelican (Nest theme): a definition list of recent posts, the date in each <dt>, the link in the <dd> after it",
     NO_LICENCE.replace("site", "Pelican blog"),
     "dl.dl-horizontal > dd", "a", "a", ("xpath:preceding-sibling::dt[1]", "text"),
     (r"\d{2} [A-Z][a-z]+ \d{4}", "%d %B %Y"), None),
    ("zola-homepage", "BenOvermyer/benovermyer.com", "83cad206cf13965e1818f3e9e95701a78cbb1185", "public/index.html",
     ("https://www.benovermyer.com/", "the page's own absolute links"),
     "hand-made home page built with Zola: an introduction, then 'Most Recent Blog Posts' as a plain <ul> of "
     "'date: link' lines, followed by more lists of on-site links (a knowledge base, personal pages)",
     NO_LICENCE, "xpath://h2[contains(., 'Most Recent Blog Posts')]/following-sibling::ul[1]/li", "a", "a",
     ("xpath:.", "text"), ISO_DAY, None),
    ("jekyll-nickk-home", "0foo/nickk.info", None, "src/_site/index.html",
     ("https://0foo.github.io/nickk.info/", "assumed: the GitHub Pages project address; the page links "
      "root-relative under /nickk.info/"),
     "Jekyll (a home-made theme): <article class='article'> per post with title link, summary and a "
     "'Read more' link; no date shown (the date is in the permalink only)",
     NO_LICENCE.replace("site", "Jekyll blog"),
     "article.article", ".article-title a", ".article-title a", None, None, None),
    ("news-wired-home", "AndyTheFactory/newspaper4k", None, "tests/data/html/wired_main_site.html",
     ("https://www.wired.com/", "the page's rel=canonical"),
     "magazine index (WIRED's home page, February 2024): stories and reviews in many modules, each "
     "often linked twice (image and headline), video modules, category and shop navigation",
     "MIT (repository); page content: WIRED's",
     "a[href^='/story/'], a[href^='/review/'], a[href^='https://www.wired.com/story/'], "
     "a[href^='https://www.wired.com/review/']", None, None, None, None,
     "a[href*='/video/watch/']"),
]

# Readability's test pages of real sites that the first held-out set did not take (its 36 are in
# bench/corpus/heldout/build.py); the synthetic ones (001.., base-url, replace-brs, dev418 and rtl-*
# with their lorem ipsum, ...) are left out.
READABILITY = ["aktualne", "archive-of-our-own", "breitbart", "buzzfeed-1", "cnn", "daringfireball-1",
               "ehow-1", "ehow-2", "folha", "gmw", "google-sre-book-1", "guardian-1", "hukumusume", "la-nacion",
               "lifehacker-post-comment-load", "lifehacker-working", "lwn-1", "medicalnewstoday", "medium-3",
               "mozilla-1", "mozilla-2", "msn", "nytimes-1", "nytimes-2", "nytimes-3", "nytimes-4", "nytimes-5",
               "pixnet", "qq", "royal-road", "tmz-1", "wapo-1", "wapo-2",
               "webmd-1", "webmd-2", "wikia", "wikipedia", "wikipedia-2", "wikipedia-3", "wikipedia-4",
               "yahoo-1", "yahoo-2", "yahoo-3", "yahoo-4", "youth"]
# newspaper4k's test pages with all three of html, reference text and metadata, each page once
# (video_article_01.html is the very file cleveland.com1.html is).
NEWSPAPER4K = "AndyTheFactory/newspaper4k"








def pick(node: Selector, selector: str):
    return node.xpath(selector[6:]) if selector.startswith("xpath:") else node.css(selector)


def reference_date(entry: Selector, spec, pattern_format):
    if not spec:
        return None
    selector, where = spec
    node = pick(entry, selector)[:1]
    if not node:
        return None
    value = node[0].attrib.get(where[1:], "") if where.startswith("@") else text(node[0])
    pattern, fmt = pattern_format
    found = re.search(pattern, value)
    return datetime.strptime(found.group(0), fmt).date().isoformat() if found else None


def page_html(raw: bytes, path: str) -> bytes:
    """The page itself: a page kept inside a TypeScript template string is taken out of it."""
    if not path.endswith(".ts"):
        return raw
    inner = re.search(rb"=\s*`(.*?)`;", raw, re.S)
    return inner.group(1).replace(rb"\`", b"`")


def listing_entries(html: str, url: str, entry_sel, link_sel, title_sel, date_spec, pattern_format) -> list[dict]:
    entries, seen = [], set()
    for entry in pick(Selector(text=html), entry_sel):
        link = pick(entry, link_sel)[:1] if link_sel else [entry]
        if not link or not link[0].attrib.get("href"):
            continue
        absolute = urljoin(url, link[0].attrib["href"]).split("#", 1)[0]
        if absolute in seen:
            continue
        seen.add(absolute)
        title_node = pick(entry, title_sel)[:1] if title_sel else [entry]
        entries.append({"url": absolute, "title": text(title_node[0]) if title_node else "",
                        "date": reference_date(entry, date_spec, pattern_format)})
    return entries


def first_titles(entries: list[dict], html: str, url: str) -> None:
    """A story linked twice (image, then headline) takes the first non-empty link text as its title."""
    for entry in entries:
        if entry["title"]:
            continue
        for node in Selector(text=html).xpath("//a[@href]"):
            if urljoin(url, node.attrib["href"]).split("#", 1)[0] == entry["url"] and text(node):
                entry["title"] = text(node)
                break


def build_listings(mirrors: Path, pages: Path) -> list[dict]:
    manifest = []
    for (name, repository, commit, path, (url, url_from), shape, licence, entry_sel, link_sel, title_sel, date_spec,
         pattern_format, also_sel) in LISTINGS:
        repo = snapshot(mirrors, repository)
        commit = commit or git(repo, "rev-parse", "HEAD").decode().strip()
        raw = page_html(git(repo, "show", f"{commit}:{path}"), path)
        (pages / f"{name}.html.gz").write_bytes(gzip.compress(raw, mtime=0))
        html = raw.decode("utf-8", "replace")
        entries = listing_entries(html, url, entry_sel, link_sel, title_sel, date_spec, pattern_format)
        if not link_sel:
            first_titles(entries, html, url)
        expected = {e["url"] for e in entries}
        also = []
        for href in pick(Selector(text=html), also_sel).xpath("@href").getall() if also_sel else []:
            absolute = urljoin(url, href).split("#", 1)[0]
            if absolute not in expected and absolute not in also:
                also.append(absolute)
        manifest.append({"file": f"pages/{name}.html.gz", "url": url, "url_from": url_from, "repository": repository,
                         "commit": commit, "path": path, "licence": licence, "shape": shape,
                         "entries_by": {"entry": entry_sel, "link": link_sel, "title": title_sel,
                                        "date": list(date_spec) if date_spec else None},
                         "ignore_query": False, "entries": entries, "also_posts": also})
    return manifest






def newspaper4k_articles(mirrors: Path, pages: Path) -> list[dict]:
    manifest = []
    repo = snapshot(mirrors, NEWSPAPER4K)
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    tree = set(git(repo, "ls-tree", "-r", "--name-only", "HEAD", "tests/data/").decode().splitlines())
    blobs = set()
    for path in sorted(p for p in tree if p.startswith("tests/data/html/")):
        key, blob = Path(path).stem, git(repo, "rev-parse", f"HEAD:{path}").strip()
        reference, metadata = f"tests/data/txt/{key}.txt", f"tests/data/metadata/{key}.json"
        if reference not in tree or metadata not in tree or blob in blobs:
            continue
        blobs.add(blob)
        body = [p.strip() for p in git(repo, "show", f"HEAD:{reference}").decode("utf-8", "replace").split("\n")
                if len(p.strip()) >= 20]
        meta = json.loads(git(repo, "show", f"HEAD:{metadata}"))
        name = f"n4k-{key}.html.gz"
        (pages / name).write_bytes(gzip.compress(git(repo, "show", f"HEAD:{path}"), mtime=0))
        manifest.append({"file": f"pages/{name}", "repository": NEWSPAPER4K, "commit": commit, "path": path,
                         "licence": "MIT (repository); page content: its site's", "url": meta.get("url"),
                         "reference": f"{reference}, {metadata}",
                         "first": body[0] if body else None, "last": body[-1] if body else None,
                         "title": meta.get("title") or None, "published": (meta.get("publish_date") or "")[:10] or None})
    return manifest


def main(mirrors: str) -> None:
    pages = HERE / "pages"
    pages.mkdir(exist_ok=True)
    manifest = {"listings": build_listings(Path(mirrors), pages),
                "articles": readability_articles(Path(mirrors), pages, READABILITY) + newspaper4k_articles(Path(mirrors), pages)}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(manifest['listings'])} listing pages, "
          f"{sum(len(p['entries']) for p in manifest['listings'])} expected entries; "
          f"{len(manifest['articles'])} article pages")


if __name__ == "__main__":
    main(*sys.argv[1:])
