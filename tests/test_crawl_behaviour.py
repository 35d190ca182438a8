"""The crawler against real local servers: cost per check, politeness, feeds, any blog."""
from __future__ import annotations

import gzip
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from crawler.plan import CrawlPlan, SourceSpec
from crawler.run import crawl, crawl_sources
from crawler.runtime import run
from crawler.urls import canonicalize
from postwatch.testing.replica import BlogReplica, StructuredDataReplica, WordPressReplica, generate_posts

FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "RETRY_BACKOFF_BASE": 0.05, "DOWNLOAD_TIMEOUT": 5,
        "RETRY_TIMES": 2}


def do_crawl(plan: CrawlPlan, **overrides):
    return run(lambda: crawl(plan, {**FAST, **overrides}))


def baseline(site, kind="link", url=None, **spec):
    source = SourceSpec(name="blog", url=url or site.blog_url, kind=kind, **spec)
    report = do_crawl(CrawlPlan(source=source, baseline=True))
    assert report.ok, report.error
    return source, report


def follow_up(source, first, **plan):
    return CrawlPlan(source=source, known_urls={p.url for p in first.posts}, validators=first.validators,
                     robots=first.robots, **plan)


def test_a_check_with_nothing_new_costs_one_request_and_no_body_bytes():
    with BlogReplica() as site:
        source, first = baseline(site)
        site.clear_log()
        report = do_crawl(follow_up(source, first))
        assert report.ok and report.not_modified
        assert (report.requests, report.response_bytes) == (1, 0)
        assert [(r.path, r.status) for r in site.requests] == [("/blog", 304)]


def test_n_new_posts_cost_at_most_one_plus_n_requests_and_fetch_only_their_pages():
    with BlogReplica() as site:
        source, first = baseline(site)
        added = [site.add_post(f"Fresh post {n}", body_paragraphs=[f"Body {n}"]) for n in range(3)]
        site.clear_log()
        report = do_crawl(follow_up(source, first))
        assert report.ok
        assert report.requests <= 1 + len(added)
        fetched = {r.path.rstrip("/") for r in site.requests if r.path.startswith("/blog/")}
        assert fetched == {f"/blog/{p.slug}" for p in added}
        pages = {p.url: p for p in report.posts if p.origin == "page"}
        assert set(pages) == {f"{site.blog_url}/{p.slug}" for p in added}
        assert all("Body" in p.body_html for p in pages.values())


def test_baseline_walks_every_listing_page_and_no_post_page():
    with BlogReplica(posts=generate_posts(100)) as site:
        source, report = baseline(site)
        assert len(report.posts) == 100
        assert site.count("/blog/") == 0
        assert report.listing_complete


def test_post_body_excludes_related_lists_newsletter_form_and_navigation():
    with BlogReplica() as site:
        source, first = baseline(site)
        post = site.add_post("Body only please", body_paragraphs=["The one paragraph of this post."])
        report = do_crawl(follow_up(source, first))
        [item] = [p for p in report.posts if p.origin == "page"]
        assert item.title == post.title
        assert "The one paragraph of this post." in item.body_html
        for chrome in ("Check these out", "subscribed", "Oh no!", "Donate Now", "w-form", "navbar", "More from the blog"):
            assert chrome not in item.body_html
        assert item.published == datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def test_url_variants_on_the_listing_fold_into_one_post_each():
    with BlogReplica(url_variants=True) as site:
        _, report = baseline(site)
        assert len(report.posts) == len(site.posts)
        assert {p.url for p in report.posts} == {f"{site.blog_url}/{p.slug}" for p in site.posts}


def test_robots_txt_is_obeyed_for_every_request_even_the_first_burst():
    # The sweep schedules 20 post requests at once, before robots.txt has arrived: Scrapy
    # 2.14-2.19's own middleware lets most of such a burst through.
    with BlogReplica(posts=generate_posts(20), robots_txt="User-agent: *\nDisallow: /blog/generated-post-1\n") as site:
        source = SourceSpec(name="blog", url=site.blog_url, kind="link")
        urls = [f"{site.blog_url}/{p.slug}" for p in site.posts]
        disallowed = {f"/blog/{p.slug}" for p in site.posts if p.slug.startswith("generated-post-1")}
        assert len(disallowed) == 11
        report = do_crawl(CrawlPlan(source=source, known_urls=set(urls), sweep_urls=urls),
                          CONCURRENT_REQUESTS=16, CONCURRENT_REQUESTS_PER_DOMAIN=16)
        assert report.ok, report.error
        fetched = {r.path for r in site.requests}
        assert fetched & disallowed == set()
        assert len(fetched & {f"/blog/{p.slug}" for p in site.posts}) == 20 - 11
        assert site.requests[0].path == "/robots.txt"


def test_robots_txt_is_cached_and_only_refetched_when_stale():
    with BlogReplica() as site:
        source, first = baseline(site)
        assert site.count("/robots.txt") == 1
        do_crawl(follow_up(source, first))
        assert site.count("/robots.txt") == 1
        stale = follow_up(source, first)
        stale.robots = {k: (body, fetched - timedelta(days=2)) for k, (body, fetched) in first.robots.items()}
        do_crawl(stale)
        assert site.count("/robots.txt") == 2


def test_user_agent_names_postwatch_and_the_contact_url():
    with BlogReplica() as site:
        source = SourceSpec(name="blog", url=site.blog_url, kind="link")
        do_crawl(CrawlPlan(source=source, baseline=True), USER_AGENT="postwatch/0.1 (+https://example.org/contact)")
        assert {r.headers["user-agent"] for r in site.requests} == {"postwatch/0.1 (+https://example.org/contact)"}


def test_retry_after_is_honoured_then_the_check_succeeds():
    with BlogReplica() as site:
        source, first = baseline(site)
        site.set_fault("/blog", status=429, headers={"Retry-After": "2"}, times=1)
        started = time.monotonic()
        report = do_crawl(follow_up(source, first))
        waited = time.monotonic() - started
        assert report.ok, report.error
        assert waited >= 1.9
        statuses = [r.status for r in site.requests if r.path == "/blog"]
        assert statuses[-2:] == [429, 304]


def test_a_retry_after_beyond_the_cap_gives_up_with_one_clear_line():
    with BlogReplica() as site:
        source, first = baseline(site)
        site.set_fault("/blog", status=503, headers={"Retry-After": "86400"})
        started = time.monotonic()
        report = do_crawl(follow_up(source, first), RETRY_AFTER_MAX=5)
        assert time.monotonic() - started < 5
        assert not report.ok
        assert report.error.startswith("blog: ") and "Retry-After" in report.error and "\n" not in report.error


def test_server_errors_are_retried_with_backoff_then_fail_naming_the_source():
    with BlogReplica() as site:
        source, first = baseline(site)
        site.set_fault("/blog", status=500)
        site.clear_log()
        report = do_crawl(follow_up(source, first), RETRY_TIMES=2, RETRY_BACKOFF_BASE=0.3)
        assert not report.ok
        assert report.error == f"blog: listing {site.blog_url} answered HTTP 500 after 3 attempts"
        times = [r.time for r in site.requests if r.path == "/blog"]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4     # exponential backoff


def test_a_site_that_is_down_is_one_error_line():
    with BlogReplica() as site:
        url = site.blog_url
    report = do_crawl(CrawlPlan(source=SourceSpec(name="gone", url=url, kind="link"), baseline=True))
    assert not report.ok
    assert report.error.startswith("gone: listing ") and "connection refused" in report.error


def test_a_feed_that_carries_content_costs_one_request_for_new_posts():
    with WordPressReplica() as site:
        source, first = baseline(site, kind="feed", url=site.blog_url, feed_url=f"{site.base_url}/feed/")
        site.add_post("Feed post one", body_paragraphs=["A long enough body. " * 20])
        site.clear_log()
        report = do_crawl(follow_up(source, first))
        assert report.ok
        assert [r.path for r in site.requests] == ["/feed/"]
        [new] = [p for p in report.posts if p.url not in {q.url for q in first.posts}]
        assert new.origin == "feed" and "A long enough body." in new.body_html
        assert new.url == f"{site.base_url}/{new.published:%Y/%m/%d}/feed-post-one"


def test_a_summary_only_feed_fetches_pages_of_new_posts_only():
    with WordPressReplica(feed_content=False) as site:
        source, first = baseline(site, kind="feed", url=site.blog_url, feed_url=f"{site.base_url}/feed/")
        post = site.add_post("Summary only", body_paragraphs=["Body paragraph on the page only."])
        site.clear_log()
        report = do_crawl(follow_up(source, first))
        fetched = [r.path for r in site.requests if r.path != "/feed/"]
        assert len(fetched) == 1 and fetched[0].endswith(f"/{post.slug}/")
        [item] = [p for p in report.posts if p.origin == "page"]
        assert "Body paragraph on the page only." in item.body_html
        assert "Recent Posts" not in item.body_html and "comments" not in item.body_html


def test_auto_source_discovers_the_feed_and_merges_it_with_the_listing():
    with WordPressReplica() as site:
        _, report = baseline(site, kind="auto", url=site.blog_url)
        assert report.discovered_feed == f"{site.base_url}/feed/"
        assert len(report.posts) == len(site.posts)          # listing and feed merged by canonical URL


def test_a_blog_with_only_json_ld_and_opengraph():
    with StructuredDataReplica() as site:
        source, first = baseline(site, kind="auto", url=site.blog_url)
        assert len(first.posts) == len(site.posts)
        site.add_post("Structured news", body_paragraphs=["Only the article counts."])
        report = do_crawl(follow_up(source, first))
        [item] = [p for p in report.posts if p.origin == "page"]
        assert item.title == "Structured news"
        assert item.published.tzinfo is not None and item.published.utcoffset() == timedelta(0)
        assert item.published.hour == 9          # 18:00 at +09:00 in the JSON-LD
        assert "Only the article counts." in item.body_html and "Related" not in item.body_html


def test_gzip_and_a_page_in_a_legacy_encoding():
    with BlogReplica() as site:
        page = ('<html><head><meta charset="windows-1252"></head><body><div class="w-dyn-items">'
                '<div class="w-dyn-item"><a href="/blog/caf"><h3>Caf\u00e9 \u201cquoted\u201d</h3></a></div></div></body></html>')
        site.route("/legacy", lambda req: (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"},
                                           gzip.compress(page.encode("cp1252"))))
        report = do_crawl(CrawlPlan(source=SourceSpec(name="legacy", url=f"{site.base_url}/legacy", kind="link"), baseline=True))
        assert report.ok, report.error
        assert [p.title for p in report.posts] == ["Caf\u00e9 \u201cquoted\u201d"]


def test_brotli_compressed_pages_are_read():
    import brotli

    with BlogReplica() as site:
        page = ('<html><body><div class="w-dyn-items"><div class="w-dyn-item"><a href="/blog/br">'
                '<h3>Squeezed with brotli</h3></a></div></div></body></html>')
        site.route("/br", lambda req: (200, {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "br"},
                                       brotli.compress(page.encode())))
        report = do_crawl(CrawlPlan(source=SourceSpec(name="br", url=f"{site.base_url}/br", kind="link"), baseline=True))
        assert report.ok, report.error
        assert [p.title for p in report.posts] == ["Squeezed with brotli"]


def test_a_huge_page_is_refused_with_one_clear_line():
    with BlogReplica() as site:
        site.route("/huge", lambda req: (200, {"Content-Type": "text/html"}, b"<html>" + b"x" * (3 * 1024 * 1024)))
        report = do_crawl(CrawlPlan(source=SourceSpec(name="huge", url=f"{site.base_url}/huge", kind="link"),
                                    baseline=True), DOWNLOAD_MAXSIZE=1024 * 1024)
        assert not report.ok
        assert report.error.startswith("huge: listing") and "\n" not in report.error


def test_full_sweep_reports_unchanged_edited_and_gone_posts():
    with BlogReplica() as site:
        source, first = baseline(site)
        urls = sorted(p.url for p in first.posts)
        sweep = do_crawl(follow_up(source, first, sweep_urls=urls))
        assert sweep.ok and len([p for p in sweep.posts if p.origin == "page"]) == len(urls)
        validators = {**first.validators, **sweep.validators}
        edited, deleted = site.posts[0], site.posts[1]
        site.edit_post(edited.slug, body_paragraphs=["Edited."])
        site.delete_post(deleted.slug)
        again = do_crawl(CrawlPlan(source=source, known_urls=set(urls), validators=validators, robots=first.robots,
                                   sweep_urls=urls))
        assert again.gone == {f"{site.blog_url}/{deleted.slug}": 404}
        pages = {p.url: p for p in again.posts if p.origin == "page"}
        assert "Edited." in pages[f"{site.blog_url}/{edited.slug}"].body_html
        # Other pages show the edited post in their related lists, so some answer 200 again.
        assert len(pages) + len(again.unchanged_urls) == len(urls) - 1


@hsettings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    www=st.booleans(),
    slash=st.booleans(),
    fragment=st.sampled_from(["", "#top", "#comments"]),
    params=st.lists(st.sampled_from(["utm_source=x", "fbclid=abc", "9801781a_page=3", "bb7dccd8_page=2", "gclid=1"]),
                    max_size=3),
    host_case=st.booleans(),
)
def test_canonical_urls_are_insensitive_to_variants_and_idempotent(scheme, www, slash, fragment, params, host_case):
    host = ("www." if www else "") + ("LibertyInNorthKorea.org" if host_case else "libertyinnorthkorea.org")
    url = f"{scheme}://{host}/blog/finally-free{'/' if slash else ''}{'?' + '&'.join(params) if params else ''}{fragment}"
    site = "https://libertyinnorthkorea.org/blog"
    canonical = canonicalize(url, site=site)
    assert canonical == "https://libertyinnorthkorea.org/blog/finally-free"
    assert canonicalize(canonical, site=site) == canonical


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_canonicalize_is_idempotent_on_arbitrary_paths(path):
    url = canonicalize("https://example.org/" + path)
    assert canonicalize(url) == url


@pytest.mark.parametrize("text,expected", [
    ("April 22, 2022", datetime(2022, 4, 22, tzinfo=timezone.utc)),
    ("22 April 2022", datetime(2022, 4, 22, tzinfo=timezone.utc)),
    ("2022-04-22T18:00:00+09:00", datetime(2022, 4, 22, 9, tzinfo=timezone.utc)),
    ("Fri, 22 Apr 2022 09:00:00 GMT", datetime(2022, 4, 22, 9, tzinfo=timezone.utc)),
    ("Fri, 22 Apr 2022 11:00:00 +0200", datetime(2022, 4, 22, 9, tzinfo=timezone.utc)),
    ("the thirty-second of Smarch", None),
])
def test_dates_in_the_forms_blogs_and_feeds_use(text, expected):
    from crawler.dates import parse_date

    assert parse_date(text) == expected


def test_a_feed_that_lies_about_its_encoding_is_still_read():
    with WordPressReplica(feed_encoding_lie=True) as site:
        source = SourceSpec(name="liar", url=site.blog_url, kind="feed", feed_url=f"{site.base_url}/feed/")
        report = do_crawl(CrawlPlan(source=source, baseline=True))
        assert report.ok, report.error
        assert len(report.posts) == len(site.posts)
        media = next(p for p in report.posts if "Foreign Media" in p.title)
        assert "They\u2019re" in media.body_html        # cp1252 0x92 read as the right quote, not mojibake


def test_one_crawl_of_two_sources_keeps_their_reports_apart():
    # What one crawl per sweep builds on: the middlewares, their signals and the report
    # collector know each request's source from its meta, never from the spider.
    with BlogReplica() as link, WordPressReplica() as wp:
        plans = [CrawlPlan(source=SourceSpec(name="link", url=link.blog_url, kind="webflow"), baseline=True),
                 CrawlPlan(source=SourceSpec(name="wp", url=wp.blog_url, kind="feed", feed_url=f"{wp.base_url}/feed/"),
                           baseline=True)]
        first = run(lambda: crawl_sources(plans, FAST))
        for name, site in (("link", link), ("wp", wp)):
            report = first[name]
            assert report.ok, report.error
            assert report.requests == len(site.requests) > 1
            assert set(report.robots) == {site.base_url}
            # by URL; a post's listing entry and lead under postwatch:listing-entry:/listing-lead:<post URL>
            assert report.validators and all(
                url.removeprefix("postwatch:listing-entry:").removeprefix("postwatch:listing-lead:").startswith(site.base_url)
                for url in report.validators)
        assert {p.url for p in first["link"].posts} == {link.post_url(p) for p in link.posts}
        assert len(first["wp"].posts) == len(wp.posts)
        assert all(p.url.startswith(wp.base_url) for p in first["wp"].posts)

        link.clear_log()
        wp.clear_log()
        again = run(lambda: crawl_sources([follow_up(plan.source, first[plan.source.name]) for plan in plans], FAST))
        assert [(r.path, r.status) for r in link.requests] == [("/blog", 304)]
        assert [(r.path, r.status) for r in wp.requests] == [("/feed/", 304)]
        for name in ("link", "wp"):
            assert again[name].ok and again[name].not_modified
            assert (again[name].requests, again[name].response_bytes, again[name].not_modified_count) == (1, 0, 1)
