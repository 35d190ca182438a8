"""Hostile and broken input: the malformed corpus, misbehaving sites, flapping feeds.

Promise under test: no crash, one clear error line naming the source, nothing stored is lost
and subscribers see no invented change.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from crawler.extract import selector_for
from crawler.feeds import parse_feed
from crawler.kinds import SourceKind
from crawler.runtime import run
from postwatch.config import Config, SourceConfig
from postwatch.testing.replica import BlogReplica, WordPressReplica

CORPUS = sorted((Path(__file__).parent / "data" / "malformed").iterdir())


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_parsers_never_raise_on_the_malformed_corpus(path):
    data = path.read_bytes()
    result = parse_feed(data, "https://broken.example/feed", {"content-type": "application/rss+xml"})
    assert (result.error is None) or ("\n" not in result.error and result.entries == [])
    sel = selector_for(data, "https://broken.example/blog")
    for name in SourceKind.names():
        kind = SourceKind.named(name)()
        kind.listing(sel, "https://broken.example/blog", "https://broken.example/blog")
        kind.post(sel, "https://broken.example/blog/x", "https://broken.example/blog")


def app_for(tmp_path, url: str, kind: str = "link", feed_url: str | None = None, **crawl):
    from postwatch.app import App

    config = Config(path=tmp_path / "postwatch.toml", database="state.db",
                    sources=[SourceConfig(name="src", url=url, kind=kind, feed_url=feed_url)])
    config.crawl.download_delay, config.crawl.autothrottle = 0, False
    config.crawl.timeout, config.crawl.retries = 2, 1
    for key, value in crawl.items():
        setattr(config.crawl, key, value)
    app = App.open(config)
    app.crawl_settings["RETRY_BACKOFF_BASE"] = 0.05
    app.checker.log_failures = False
    return app


def check(app, **kwargs):
    return run(lambda: app.checker.check_source("src", **kwargs))


def test_every_corpus_file_served_as_a_feed_gives_no_crash_and_one_line_errors(tmp_path):
    from postwatch.app import App

    # One source per file, all checked in one sweep as the daemon would: a broken feed costs its
    # own source one line and nothing of the others.
    with WordPressReplica() as site:
        sources = []
        for number, path in enumerate(CORPUS):
            site.route(f"/corpus/{path.name}", lambda req, data=path.read_bytes(): (200, {"Content-Type": "application/rss+xml"}, data))
            sources.append(SourceConfig(name=f"src{number}", url=site.blog_url, kind="feed",
                                        feed_url=f"{site.base_url}/corpus/{path.name}"))
        config = Config(path=tmp_path / "postwatch.toml", database="state.db", sources=sources)
        config.crawl.download_delay, config.crawl.autothrottle = 0, False
        config.crawl.timeout, config.crawl.retries = 2, 1
        app = App.open(config)
        app.crawl_settings["RETRY_BACKOFF_BASE"] = 0.05
        app.checker.log_failures = False
        summaries = run(lambda: app.checker.check_many([s.name for s in sources]))
        app.close()
    failed = [(source.name, summary.error) for source, summary in zip(sources, summaries) if not summary.ok]
    for name, error in failed:
        assert error.startswith(f"{name}: ") and "\n" not in error, error
    assert len(failed) >= 10        # the plainly broken ones are reported, not silently accepted


def seeded_app(tmp_path, site, **crawl):
    app = app_for(tmp_path, site.blog_url, **crawl)
    assert check(app).baseline
    assert check(app, full=True).ok
    return app


def published(app) -> list:
    return [e for e in app.store.history(limit=1000) if e.status == "published"]


@pytest.mark.parametrize("fault", [
    dict(status=500),
    dict(status=503, headers={"Retry-After": "1"}),
    dict(delay=1.5),                     # slower than the 1 s timeout these checks have
    dict(reset=True),
    dict(status=200, body=b"<html><body><h1>We are down for maintenance</h1></body></html>"),
    dict(status=404),
])
def test_site_faults_produce_no_false_events_and_one_error(tmp_path, fault):
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site, timeout=1)
        site.set_fault("/blog", **fault)
        for _ in range(2):
            summary = check(app, full=True)
            assert summary.events == [] or summary.held
            if not summary.ok:
                assert summary.error.startswith("src: ") and "\n" not in summary.error
        assert published(app) == []
        assert app.store.source_status()[0].posts == len(site.posts)
        app.close()


def test_a_listing_that_never_answers_fails_the_check_and_the_console_shows_that_request(tmp_path):
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site, timeout=1)
        site.set_fault("/blog", delay=1.5)          # past the 1 s [crawl] timeout
        summary = check(app)
        assert not summary.ok and summary.error.startswith("src: ") and "timeout" in summary.error
        last = app.store.recorded_checks("src")["src"]
        assert not last.ok
        [request] = [e for e in last.exchanges if e.url.endswith("/blog")]
        assert request.status is None and "timeout" in request.error
        app.close()


def test_a_redirect_loop_is_one_error(tmp_path):
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site)
        site.route("/blog", lambda req: (302, {"Location": "/loop"}, b""))
        site.route("/loop", lambda req: (302, {"Location": "/blog"}, b""))
        summary = check(app)
        assert not summary.ok and summary.error.startswith("src: ")
        assert published(app) == []
        app.close()


def test_a_50_mb_page_and_a_gzip_bomb_are_refused(tmp_path):
    bomb = gzip.compress(b"<html>" + b"A" * (60 * 1024 * 1024), compresslevel=9)
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site)
        site.route("/blog", lambda req: (200, {"Content-Type": "text/html"}, b"<html>" + b"x" * (50 * 1024 * 1024)))
        huge = check(app)
        assert not huge.ok and huge.error.startswith("src: ")
        site.route("/blog", lambda req: (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, bomb))
        bombed = check(app)
        assert not bombed.ok and bombed.error.startswith("src: ")
        assert published(app) == []
        app.close()


def test_invalid_utf8_in_a_listing_is_read_without_inventing_posts(tmp_path):
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site)
        original = site.render("/blog", {})[2]
        site.route("/blog", lambda req: (200, {"Content-Type": "text/html; charset=utf-8"},
                                         original.replace(b"North Korea", b"North \xff\xfe Korea")))
        summary = check(app)
        assert summary.ok and summary.events == []
        app.close()


def test_a_listing_in_random_order_changes_nothing(tmp_path):
    with BlogReplica() as site:
        app = seeded_app(tmp_path, site)
        rng = random.Random(7)
        for _ in range(3):
            order = site.posts
            rng.shuffle(order)
            site._posts = order
            site.change_chrome()
            summary = check(app, full=True)
            assert summary.ok and summary.events == []
        assert published(app) == []
        app.close()


def test_a_feed_flipping_between_two_versions_invents_nothing(tmp_path):
    with WordPressReplica() as site:
        feed_a = site.render_feed()
        site.edit_post(site.posts[0].slug, body_paragraphs=["Truncated by a broken cache."])
        for post in site.posts[1:8]:
            site.edit_post(post.slug, body_paragraphs=["Truncated by a broken cache."])
        feed_b = site.render_feed()
        state = {"n": 0}

        def flip(req):
            state["n"] += 1
            return 200, {"Content-Type": "application/rss+xml"}, feed_a if state["n"] % 2 else feed_b

        site.route("/flip.xml", flip)
        app = app_for(tmp_path, site.blog_url, kind="feed", feed_url=f"{site.base_url}/flip.xml")
        app.store.add_subscriber("ada@example.org")
        assert check(app).baseline
        for _ in range(6):
            assert check(app).ok
        subscriber = app.store.get_subscriber("ada@example.org")
        assert app.store.pending_events(subscriber) == []
        app.close()
