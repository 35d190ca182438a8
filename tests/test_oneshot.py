"""A check that finds nothing is one conditional request per source, and starts nothing it does
not need (issue 32): an `auto` source is revalidated through the feed its listing advertised,
its listing read daily, when the feed fails and at a full sweep; a no-change `postwatch check`
loads neither Scrapy, Twisted, an HTML parser nor SQLAlchemy. Behaviour only: no timings."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.harness import ENVIRONMENT, Cli
from postwatch.testing.replica import WordPressReplica

HEAVY = {"scrapy", "twisted", "trafilatura", "htmldate", "lxml", "parsel", "feedparser", "jinja2", "css_inline",
         "nh3", "sqlalchemy", "alembic", "prometheus_client", "apscheduler"}


def auto_config(folder: Path, url: str, extra_source: str = "", extra: str = "") -> Path:
    path = folder / "postwatch.toml"
    path.write_text(f'''database = "state.db"

[crawl]
download_delay = 0
autothrottle = false
timeout = 5
retries = 0

[[sources]]
name = "wp"
url = "{url}"
kind = "auto"
{extra_source}
[digest]
from = "postwatch <digest@postwatch.test>"
{extra}''', encoding="utf-8")
    return path


def paths(blog: WordPressReplica) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in blog.requests]


def set_listing_read(folder: Path, when: datetime) -> None:
    with sqlite3.connect(folder / "state.db") as db:
        db.execute("UPDATE sources SET listing_read_at = ?",
                   [when.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")])


@pytest.fixture
def blog():
    with WordPressReplica() as replica:
        yield replica


def test_an_auto_source_is_checked_through_its_discovered_feed_alone_and_still_finds_new_posts(tmp_path, blog):
    cli = Cli(auto_config(tmp_path, blog.blog_url))
    assert "baseline recorded" in cli("check", check=True).stdout
    assert ("/feed/", 200) in paths(blog)            # the listing advertised the feed, and it was read

    blog.clear_log()
    out = cli("check", "--digest", check=True).stdout
    assert "wp: no changes (1 requests, 0 bytes)" in out, out
    assert paths(blog) == [("/feed/", 304)]          # one conditional request: the feed, not the listing

    fresh = blog.add_post("A post the feed announces", body_paragraphs=["Long enough body text. " * 20])
    blog.clear_log()
    out = cli("check", check=True).stdout
    assert "wp: 1 new" in out and fresh.title in out, out
    assert [path for path, _ in paths(blog)] == ["/feed/"]     # the feed carries the post in full


def test_the_listing_is_read_again_after_a_day_and_when_the_feed_fails(tmp_path, blog):
    cli = Cli(auto_config(tmp_path, blog.blog_url))
    cli("check", check=True)

    set_listing_read(tmp_path, datetime.now(timezone.utc) - timedelta(days=1, minutes=1))
    blog.clear_log()
    assert "no changes (2 requests, 0 bytes)" in cli("check", check=True).stdout
    assert paths(blog) == [("/feed/", 304), ("/", 304)]         # feed, then the day-old listing
    blog.clear_log()
    cli("check", check=True)
    assert paths(blog) == [("/feed/", 304)]                     # and a day of the feed alone again

    # A post only the listing shows (the feed is stuck on its old copy) is found by that read.
    blog.set_fault("/feed/", status=500)
    only_listed = blog.add_post("Listed but not in the feed", body_paragraphs=["Body text. " * 20])
    blog.clear_log()
    out = cli("check").stdout
    assert "wp: 1 new" in out and only_listed.title in out, out
    requested = [path for path, _ in paths(blog)]
    assert requested[0] == "/feed/" and "/" in requested, requested     # the feed failed: the listing decides


def test_a_configured_feed_keeps_the_listing_read_at_every_check(tmp_path, blog):
    cli = Cli(auto_config(tmp_path, blog.blog_url, extra_source=f'feed_url = "{blog.base_url}/feed/"\n'))
    cli("check", check=True)
    blog.clear_log()
    assert "no changes (2 requests, 0 bytes)" in cli("check", check=True).stdout
    assert paths(blog) == [("/feed/", 304), ("/", 304)]


def test_a_full_sweep_reads_the_listing(tmp_path, blog):
    cli = Cli(auto_config(tmp_path, blog.blog_url))
    cli("check", check=True)
    blog.clear_log()
    cli("check", "--full", check=True)
    requested = [path for path, _ in paths(blog)]
    assert requested[:2] == ["/feed/", "/"], requested


def imported_packages(command: list[str], cwd: Path) -> set[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **ENVIRONMENT, "HOME": str(cwd)})
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stdout, result.stdout
    return {line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line}


def test_a_check_that_finds_nothing_loads_no_crawler_parser_or_database_toolkit(tmp_path, blog):
    config = auto_config(tmp_path, blog.blog_url)
    Cli(config)("check", check=True)
    for args in (("check",), ("check", "--digest"), ("check", "wp")):
        loaded = imported_packages([sys.executable, "-X", "importtime", "-m", "postwatch", "--config", str(config),
                                    *args], tmp_path)
        assert "postwatch" in loaded, args          # importtime did report the command's imports
        assert loaded & HEAVY == set(), (args, loaded & HEAVY)


def test_a_check_with_more_to_do_than_its_first_requests_is_the_full_check(tmp_path, blog):
    # A post published today is revisited at every check: that check is more than a 304, so the
    # full command runs it (and asks the feed only once: the quick pass handed its answer over).
    config = auto_config(tmp_path, blog.blog_url)
    cli = Cli(config)
    cli("check", check=True)
    fresh = blog.add_post("Published today", body_paragraphs=["Body text. " * 20])
    cli("check", check=True)
    blog.clear_log()
    out = cli("check", check=True).stdout
    assert "wp: no changes" in out, out
    requested = [path for path, _ in paths(blog)]
    assert requested.count("/feed/") == 1 and any(fresh.slug in path for path in requested), requested


def test_an_answer_other_than_304_goes_to_the_full_check_without_asking_again(tmp_path, blog):
    cli = Cli(auto_config(tmp_path, blog.blog_url))
    cli("check", check=True)
    blog.set_fault("/feed/", status=503, times=1)
    blog.clear_log()
    result = cli("check")
    assert result.returncode == 0 and "wp: no changes" in result.stdout, (result.stdout, result.stderr)
    requested = [path for path, _ in paths(blog)]
    assert requested.count("/feed/") == 1 and "/" in requested, requested     # the listing decides


def test_the_built_in_kinds_table_is_the_registry():
    from crawler.kinds import SourceKind
    from crawler.plan import BUILT_IN_KINDS

    for name, (current, feed_only, discovers) in BUILT_IN_KINDS.items():
        kind = SourceKind.named(name)
        assert (kind.__kind__, kind.feed_only, kind.discovers_feeds) == (current, feed_only, discovers), name
    assert set(SourceKind.names()) - {"selectors"} <= set(BUILT_IN_KINDS) | {
        k for k in SourceKind.names() if k.startswith("test-")}
