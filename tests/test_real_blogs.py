"""Real blogs, not only our replica (issue 30): real article pages from bench/corpus served on
127.0.0.1 behind a small self-written listing, read through the real CLI.

- `auto` degrades when the feed its listing advertises is dead: the listing's posts, exit 0,
  one warning line per check;
- JSON Feed is discovered and read by `kind = "feed"`; a new item reaches the outbox;
- a real article's body is its main text (non-empty, no navigation, footer or related posts)
  and its date is found although the page has no machine-readable one.
"""
from __future__ import annotations

import email
import email.policy
import gzip
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crawler.feeds import parse_feed
from crawler.plan import FeedFailure, feed_resting
from crawler.urls import canonicalize
from support.harness import ENVIRONMENT, Cli, free_port
from postwatch.testing.replica import BlogReplica, WordPressReplica

CORPUS = Path(__file__).resolve().parent.parent / "bench" / "corpus"
MANIFEST = {entry["file"]: entry for entry in json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))}

# (slug, title on the listing, corpus file): real pages whose old reading was empty or carried boilerplate.
MERCURIAL = ("mercurial-python-3", "Mercurial's Journey to and Reflections on Python 3",
             "pages/trafilatura-gregoryszorc.com.python3.html.gz")
PSEUDONYMS = ("pseudonyms", "Verstößt der Ausschluss von Pseudonymen bei Google gegen deutsches Recht?",
              "pages/trafilatura-internet-law.de.pseudonymen.html.gz")
DJANGO = ("django-post-mortem", "Testing Client-Side Applications with Django Post Mortem",
          "pages/trafilatura-caktusgroup.com.django.html.gz")


def corpus_page(file: str) -> bytes:
    return gzip.decompress((CORPUS / file).read_bytes())


class RealBlog:
    """A hand-written listing at /real/ (an `<article>` per post, no dates) that advertises a
    feed, and real pages from the corpus as its posts."""

    def __init__(self, site: BlogReplica, feed_type: str = "application/rss+xml", feed_path: str = "/real/feed.xml"):
        self.site, self.feed_type, self.feed_path = site, feed_type, feed_path
        self.entries: list[tuple[str, str, str]] = []
        self.feed_items: list[dict] = []
        site.route("/real/", self._listing)

    @property
    def url(self) -> str:
        return f"{self.site.base_url}/real/"

    @property
    def feed_url(self) -> str:
        return f"{self.site.base_url}{self.feed_path}"

    def post_url(self, slug: str) -> str:
        return f"{self.site.base_url}/real/posts/{slug}/"

    def add(self, entry: tuple[str, str, str]) -> None:
        slug, title, file = entry
        body = corpus_page(file)
        self.site.route(f"/real/posts/{slug}/", lambda _request: (200, {"Content-Type": "text/html; charset=utf-8"}, body))
        self.entries.insert(0, entry)

    def serve_json_feed(self) -> None:
        def feed(_request):
            document = {"version": "https://jsonfeed.org/version/1.1", "title": "Real notes",
                        "home_page_url": self.url, "feed_url": self.feed_url, "items": self.feed_items}
            return 200, {"Content-Type": "application/feed+json"}, json.dumps(document).encode()
        self.site.route(self.feed_path, feed)

    def _listing(self, _request):
        articles = "".join(f'<article><h2><a href="/real/posts/{slug}/">{title}</a></h2><p>Read on.</p></article>'
                           for slug, title, _ in self.entries)
        page = (f'<!DOCTYPE html><html><head><title>Real notes</title>'
                f'<link rel="alternate" type="{self.feed_type}" title="Feed" href="{self.feed_path}"></head>'
                f'<body><nav><a href="/">Home</a> <a href="/about/">About</a></nav><main>{articles}</main>'
                f'<footer>Made by hand</footer></body></html>')
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()


def config(folder: Path, url: str, kind: str, feed_url: str | None = None) -> Path:
    feed = f'feed_url = "{feed_url}"\n' if feed_url else ""
    path = folder / "postwatch.toml"
    path.write_text(f'''database = "state.db"

[crawl]
download_delay = 0
autothrottle = false
timeout = 5
retries = 1

[[sources]]
name = "real"
url = "{url}"
kind = "{kind}"
{feed}
[digest]
from = "postwatch <digest@postwatch.test>"

[daemon]
listen = "127.0.0.1:{free_port()}"
''', encoding="utf-8")
    return path


def warning_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "WARNING" in line]


def stored(folder: Path, url: str) -> tuple[str, str | None]:
    """The newest stored text of the post at `url`, and its publication date."""
    with sqlite3.connect(folder / "state.db") as db:
        return db.execute("SELECT v.text, p.published_at FROM posts p JOIN post_versions v ON v.post_id = p.id "
                          "WHERE p.url = ? ORDER BY v.id DESC LIMIT 1", (canonicalize(url, site=url),)).fetchone()


# -- auto degrades when its advertised feed is dead ------------------------------------------
def test_sources_test_reads_the_listing_of_a_blog_whose_advertised_feed_404s(tmp_path):
    with BlogReplica() as site:
        blog = RealBlog(site)
        blog.add(PSEUDONYMS)
        blog.add(MERCURIAL)
        cli = Cli(config(tmp_path, site.blog_url, "webflow"))
        result = cli("sources", "test", blog.url)
        assert result.returncode == 0, result.stderr
        assert "2 found" in result.stdout and MERCURIAL[1] in result.stdout
        assert "feed:    none found" in result.stdout          # a dead feed is not offered to `sources add`
        [warning] = warning_lines(result)
        assert f"feed {blog.feed_url} answered HTTP 404" in warning and "read without it" in warning


def test_an_auto_source_whose_advertised_feed_404s_finds_new_posts_with_one_warning_per_check(tmp_path):
    with BlogReplica() as site:
        blog = RealBlog(site)
        blog.add(PSEUDONYMS)
        blog.add(MERCURIAL)
        cli = Cli(config(tmp_path, blog.url, "auto"))
        first = cli("check")
        assert first.returncode == 0, first.stderr
        assert "baseline recorded, 2 posts" in first.stdout
        assert len(warning_lines(first)) == 1 and "HTTP 404" in warning_lines(first)[0]

        blog.add(DJANGO)
        second = cli("check")
        assert second.returncode == 0, second.stderr
        assert "real: 1 new" in second.stdout and DJANGO[1] in second.stdout
        [warning] = warning_lines(second)
        assert f"real: feed {blog.feed_url} answered HTTP 404" in warning
        assert "ERROR" not in second.stderr

        # The new post's page is a real article: its main text, none of the page's chrome.
        text, published = stored(tmp_path, blog.post_url(DJANGO[0]))
        reference = MANIFEST[DJANGO[2]]
        assert text and all(snippet in text for snippet in reference["with"])
        assert not any(snippet in text for snippet in reference["without"])
        assert published.startswith("2015-06-08")

        third = cli("check")
        assert third.returncode == 0 and "no changes" in third.stdout
        assert len(warning_lines(third)) == 1


def feed_failures(folder: Path) -> list[tuple[str, str | None, str | None]]:
    """(key, failure time, "<failures in a row> <problem>") of the feed failures kept in the state."""
    with sqlite3.connect(folder / "state.db") as db:
        return db.execute("SELECT url, etag, last_modified FROM http_validators "
                          "WHERE url LIKE 'postwatch:feed-failed:%'").fetchall()


def age_feed_failures(folder: Path, hours: float) -> None:
    """Move the kept feed failures `hours` into the past, as if that much time had passed."""
    with sqlite3.connect(folder / "state.db") as db:
        for key, at, _ in db.execute("SELECT url, etag, last_modified FROM http_validators "
                                     "WHERE url LIKE 'postwatch:feed-failed:%' AND etag IS NOT NULL").fetchall():
            db.execute("UPDATE http_validators SET etag = ? WHERE url = ?",
                       ((datetime.fromisoformat(at) - timedelta(hours=hours)).isoformat(), key))


def test_a_feed_that_was_read_before_and_now_fails_hands_the_check_to_the_listing(cli, smtp, tmp_path):
    with WordPressReplica() as wp:
        cli("sources", "add", wp.blog_url, "--name", "wp", check=True)
        assert "baseline recorded, 20 posts" in cli("check", "wp", check=True).stdout
        wp.add_post("Written while the feed is down", body_paragraphs=["The feed plugin broke today. " * 10])
        for status in (404, 200):       # a dead feed; then one that answers, but not with a feed
            wp.clear_faults()
            age_feed_failures(tmp_path, hours=2)       # past the backoff: the feed is asked again
            wp.set_fault("/feed/", status=status, body=b"<html><body>Not a feed</body></html>")
            result = cli("check", "wp")
            assert result.returncode == 0, result.stderr
            assert ("wp: 1 new" in result.stdout) == (status == 404), result.stdout
            [warning] = warning_lines(result)
            assert warning.split(" WARNING ")[1].startswith("wp: ") and f"{wp.base_url}/feed/" in warning
            assert "the listing's posts are read without it" in warning
            assert ("HTTP 404" in warning) == (status == 404)


def test_a_dead_feed_is_not_asked_again_before_its_backoff_and_the_listing_still_finds_new_posts(cli, tmp_path):
    """Issue 30: a feed that failed is retried at a lower rate (1 h, doubling to a day); the checks
    between read the listing alone, with one warning each; a feed that answers again clears it."""
    with WordPressReplica() as wp:
        cli("sources", "add", wp.blog_url, "--name", "wp", check=True)
        assert "baseline recorded, 20 posts" in cli("check", "wp", check=True).stdout
        wp.set_fault("/feed/", status=404, body=b"<html><body>Gone</body></html>")
        wp.add_post("Written while the feed is down", body_paragraphs=["The feed plugin broke today. " * 10])
        first = cli("check", "wp")
        assert first.returncode == 0, first.stderr
        assert "wp: 1 new" in first.stdout and wp.count("/feed/", status=404) == 1
        [(key, at, failed)] = feed_failures(tmp_path)
        assert key == f"postwatch:feed-failed:{wp.base_url}/feed/" and failed.startswith("1 ") and "HTTP 404" in failed

        wp.clear_log()
        wp.add_post("Still no feed today", body_paragraphs=["The plugin is still broken, the posts go on. " * 10])
        second = cli("check", "wp")
        assert second.returncode == 0, second.stderr
        assert wp.count("/feed/") == 0, [r.path for r in wp.requests]          # the feed is not asked
        assert "wp: 1 new" in second.stdout and "Still no feed today" in second.stdout
        [warning] = warning_lines(second)
        assert "HTTP 404" in warning and "read without it" in warning and "asked again after" in warning
        assert feed_failures(tmp_path) == [(key, at, failed)]                   # the same failure, kept

        age_feed_failures(tmp_path, hours=1.1)        # the backoff passed: asked again, still dead
        wp.clear_log()
        third = cli("check", "wp")
        assert third.returncode == 0, third.stderr
        assert wp.count("/feed/", status=404) == 1
        [(_, _, failed)] = feed_failures(tmp_path)
        assert failed.startswith("2 ")                                          # 2 h before the next try

        age_feed_failures(tmp_path, hours=1.1)
        wp.clear_log()
        assert cli("check", "wp", check=True) and wp.count("/feed/") == 0       # doubled: not yet

        age_feed_failures(tmp_path, hours=1)
        wp.clear_faults()                             # the feed is back
        wp.clear_log()
        fourth = cli("check", "wp")
        assert fourth.returncode == 0, fourth.stderr
        assert wp.count("/feed/", status=200) == 1 and warning_lines(fourth) == []
        assert feed_failures(tmp_path) == [(key, None, None)]                   # cleared


def test_a_feed_failure_waits_an_hour_doubling_to_a_day():
    at = datetime(2031, 5, 1, 12, tzinfo=timezone.utc)
    waits = [FeedFailure(at, n, "feed answered HTTP 404").retry_at - at for n in (1, 2, 3, 5, 6, 40)]
    assert waits == [timedelta(hours=1), timedelta(hours=2), timedelta(hours=4), timedelta(hours=16),
                     timedelta(days=1), timedelta(days=1)]
    kept = {"postwatch:feed-failed:https://b.example/feed": FeedFailure(at, 3, "feed timed out").validators()}
    assert FeedFailure.kept(kept, "https://b.example/feed") == FeedFailure(at, 3, "feed timed out")
    assert feed_resting(kept, "https://b.example/feed", at + timedelta(hours=3)) is not None
    assert feed_resting(kept, "https://b.example/feed", at + timedelta(hours=4)) is None
    assert feed_resting(kept, "https://b.example/other", at) is None
    assert FeedFailure.kept({"postwatch:feed-failed:x": ("garbage", "1 x")}, "x") is None


# -- JSON Feed -------------------------------------------------------------------------------
def _json_item(slug: str, title: str, text: str, date: str) -> dict:
    return {"id": f"tag:real,{slug}", "url": f"/real/posts/{slug}/", "title": title,
            "content_html": "".join(f"<p>{text} {n}</p>" for n in range(6)), "date_published": date}


def test_a_json_feed_is_discovered_and_read_and_its_new_item_is_mailed(tmp_path):
    with BlogReplica() as site:
        blog = RealBlog(site, feed_type="application/feed+json", feed_path="/real/feed.json")
        blog.serve_json_feed()
        blog.add(MERCURIAL)
        blog.feed_items[:] = [_json_item(MERCURIAL[0], MERCURIAL[1], "Mercurial now runs on Python 3.",
                                         "2020-01-13T08:45:00-08:00")]
        cli = Cli(config(tmp_path, blog.url, "feed", blog.feed_url))
        shown = cli("sources", "test", blog.url)
        assert shown.returncode == 0 and f"feed:    {blog.feed_url}" in shown.stdout, shown
        assert warning_lines(shown) == []

        cli("subscribers", "add", "ada@example.org", check=True)
        assert "baseline recorded, 1 posts" in cli("check", check=True).stdout
        blog.feed_items.insert(0, _json_item("json-feed-news", "JSON Feed news from the real notes",
                                             "A full-content JSON Feed item, long enough to be the body.",
                                             "2026-01-05T10:00:00Z"))
        second = cli("check", check=True)
        assert "real: 1 new" in second.stdout and "JSON Feed news from the real notes" in second.stdout
        assert warning_lines(second) == []
        text, published = stored(tmp_path, blog.post_url("json-feed-news"))
        assert "A full-content JSON Feed item, long enough to be the body. 5" in text
        assert published.startswith("2026-01-05")
        assert not any(r.path == "/real/posts/json-feed-news/" for r in site.requests)   # full content: no page fetched

        cli("digest", check=True)
        mails = list((tmp_path / "outbox").glob("*.eml"))
        assert len(mails) == 1
        message = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
        assert "JSON Feed news from the real notes" in message.get_body(preferencelist=("plain",)).get_content()


def test_hostile_json_feeds_read_as_errors_or_entries_never_exceptions():
    url = "https://blog.example.org/feed.json"
    version = "https://jsonfeed.org/version/1"
    cases = [b"{" * 200_000, b'{"version": 1}', b'{"version": "' + version.encode() + b'", "items": {"a": 1}}',
             json.dumps({"version": version, "items": [5, None, [], {"url": ["x"]}, {"id": 7}, {"url": 1e308},
                                                        {"url": "javascript:alert(1)"}, {"url": "x" * 10**6}]}).encode(),
             json.dumps({"version": version, "title": {"no": 1}, "items": [
                 {"url": "/a", "title": 12, "content_html": ["no"], "content_text": "t" * 3_000_000,
                  "date_published": "9" * 5000, "summary": {"x": 1}}] * 3}).encode(),
             b"\xef\xbb\xbf" + json.dumps({"version": version + ".1", "items": []}).encode(), b"{\xff\xfe}"]
    for body in cases:
        result = parse_feed(body, url)
        assert result.error or result.warning or result.entries is not None
        for entry in result.entries:
            assert entry.url.startswith("https://blog.example.org/") and len(entry.title) <= 500
    [entry] = parse_feed(cases[4], url).entries             # one item, three times
    assert (entry.url, entry.title, entry.published) == ("https://blog.example.org/a", "https://blog.example.org/a", None)
    assert len(entry.body_html) <= 1_000_100
    assert parse_feed(cases[0], url).error.endswith("invalid JSON (JSONDecodeError)") or "invalid JSON" in parse_feed(cases[0], url).error
    assert "no entry could be read" in parse_feed(cases[3], url).error


# -- imports ---------------------------------------------------------------------------------
def test_the_extraction_libraries_are_not_imported_when_the_cli_starts(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "postwatch", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env={**__import__("os").environ, **ENVIRONMENT})
    assert result.returncode == 0, result.stderr
    loaded = {line.rsplit("|", 1)[1].strip().split(".")[0]
              for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    assert "postwatch" in loaded
    assert loaded & {"trafilatura", "htmldate", "justext", "dateparser", "courlan"} == set()


@pytest.mark.parametrize("entry", [MERCURIAL, PSEUDONYMS])
def test_a_real_article_that_read_as_empty_has_its_main_text_and_date(entry):
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind
    from state.normalize import paragraphs_of

    url = f"http://127.0.0.1:8000/real/posts/{entry[0]}/"
    page = SourceKind.named("auto")().post(selector_for(corpus_page(entry[2]), url), url, "http://127.0.0.1:8000/real/")
    text = "\n\n".join(paragraphs_of(page.body_html))
    reference = MANIFEST[entry[2]]
    assert reference["with"][0] in text
    assert not any(snippet in text for snippet in reference["without"])
    assert page.published is not None and page.published.year in (2011, 2020)
    exact = SourceKind.named("webflow")().post(selector_for(corpus_page(entry[2]), url), url, "http://127.0.0.1:8000/real/")
    assert exact.body_html is None          # the exact kinds keep the old reading: empty on this page


def test_listing_entries_without_a_date_take_their_permalinks_and_the_exact_kinds_do_not():
    from crawler.extract import selector_for
    from crawler.kinds import SourceKind

    site = "https://blog.example.org/"
    page = selector_for('<html><body><main>'
                        '<article><h2><a href="/2019/05/21/a-dated-permalink/">A dated permalink</a></h2></article>'
                        '<article><h2><a href="/2023/02/31/not-a-day/">Not a day</a></h2></article>'
                        '<article><h2><a href="/notes/undated/">No date anywhere</a></h2></article>'
                        '<article><h2><a href="/2018/01/02/shown/">Its own date wins</a></h2>'
                        '<time datetime="2018-01-03T10:00:00Z">January 3, 2018</time></article>'
                        '</main></body></html>', site)
    entries, _ = SourceKind.named("auto")().listing(page, site, site)
    assert [(e.title, e.published and e.published.isoformat()) for e in entries] == [
        ("A dated permalink", "2019-05-21T00:00:00+00:00"), ("Not a day", None), ("No date anywhere", None),
        ("Its own date wins", "2018-01-03T10:00:00+00:00")]
    selected, _ = SourceKind.named("selectors")({"listing_item": "article"}).listing(page, site, site)
    assert selected[0].published is None
