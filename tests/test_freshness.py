"""Freshness (issue #16), through the real CLI and `postwatch run` against the replicas and a real
SMTP server: an edit reaches subscribers after one default check, whether a feed carries it or
only the post's page does; a deleted post is mailed as removed once the removal delay has passed,
without a full sweep; an outage of any length removes nothing; a broken feed behind an unchanged
listing is an error and an alert, not silence.
"""
from __future__ import annotations

import sqlite3
import time
from datetime import date, timedelta

from support.harness import Cli, Daemon, free_port, wait_for, write_config
from postwatch.testing.replica import WordPressReplica


def _mails_to(smtp, address: str) -> list:
    return [m for m, (_, tos) in zip(smtp.messages, smtp.envelopes) if address in tos]


def _text(message) -> str:
    """The text part with its 78-column wrapping undone (titles may wrap)."""
    return " ".join(message.get_body(preferencelist=("plain",)).get_content().split())


def _config(folder, site, smtp, *, kind: str = "webflow", extra: str = "", crawl: str = "", listen_port=None):
    text = write_config(folder, site.blog_url, smtp.port, listen_port=listen_port, extra=extra).read_text()
    if "removal_confirm_after" in crawl:
        text = text.replace('removal_confirm_after = "0s"\n', "")
    text = text.replace('kind = "link"', f'kind = "{kind}"').replace("[crawl]\n", f'[crawl]\nconfirm_edits_after = "0.5s"\n{crawl}')
    (folder / "postwatch.toml").write_text(text, encoding="utf-8")
    return Cli(folder / "postwatch.toml")


def test_an_edit_in_a_full_content_feed_is_mailed_after_one_default_check_without_its_page(tmp_path, smtp):
    with WordPressReplica() as site:
        cli = _config(tmp_path, site, smtp, kind="auto")
        cli("check", check=True)                       # baseline: the listing advertises the feed, which is kept
        site.clear_log()
        quiet = cli("check", check=True).stdout
        # The discovered feed alone answers 304; the listing, read by the baseline, waits a day (issue 32).
        assert "no changes (1 requests, 0 bytes)" in quiet, quiet
        assert [r.path for r in site.requests] == ["/feed/"]
        cli("subscribers", "add", "ada@example.org", check=True)
        post = site.posts[1]
        site.edit_post(post.slug, body_paragraphs=["Correction: 14 refugees, not 12, reached South Korea.",
                                                   *post.body_paragraphs[1:]])
        site.clear_log()
        result = cli("check", "--digest", check=True).stdout
        assert "1 updated" in result, result
        assert site.count("/feed/") == 2 and not [r for r in site.requests if post.slug in r.path]   # no page fetched
        [mail] = _mails_to(smtp, "ada@example.org")
        assert "14 refugees, not 12" in _text(mail)


def test_an_edit_of_a_recent_post_on_the_html_only_link_blog_is_mailed_after_one_default_check(tmp_path, site, smtp):
    cli = _config(tmp_path, site, smtp)
    cli("check", check=True)
    fresh = site.add_post("Rescue update: a family of five", body_paragraphs=["Five people crossed.", "More."])
    assert "1 new" in cli("check", check=True).stdout
    cli("subscribers", "add", "ada@example.org", check=True)
    site.edit_post(fresh.slug, body_paragraphs=["Corrected: six people crossed, including a baby.", "More."])
    site.clear_log()
    result = cli("check", "--digest", check=True).stdout
    # The post, under 2 days old, was revisited at this check, then read again to confirm.
    assert "1 updated" in result, result
    assert site.count(f"/blog/{fresh.slug}", status=200) == 2
    [mail] = _mails_to(smtp, "ada@example.org")
    assert "six people crossed" in _text(mail)


def test_an_old_post_is_revisited_within_its_period_and_not_before(tmp_path, site, smtp):
    cli = _config(tmp_path, site, smtp)
    cli("check", check=True)
    cli("check", "--full", check=True)                 # every page read once: checked now
    old = min((p for p in site.posts if p.published), key=lambda p: p.published)
    assert old.published < date.today() - timedelta(days=400)
    site.edit_post(old.slug, body_paragraphs=["A name corrected two years on.", "More."])
    unchanged = cli("check", check=True).stdout
    assert "no changes (1 requests, 0 bytes)" in unchanged, unchanged     # its weekly revisit is not due

    database = sqlite3.connect(tmp_path / "state.db")
    with database:                                     # eight days pass for that post
        database.execute("UPDATE posts SET page_checked_at = datetime('now', '-8 days') WHERE url LIKE ?",
                         (f"%/{old.slug}",))
    database.close()
    revisited = cli("check", check=True).stdout
    assert "1 updated" in revisited, revisited
    assert "no changes (1 requests, 0 bytes)" in cli("check", check=True).stdout


def test_a_one_shot_check_after_the_delay_confirms_a_removal(tmp_path, site, smtp):
    cli = _config(tmp_path, site, smtp, crawl='removal_confirm_after = "2s"\n')
    cli("check", check=True)
    cli("check", "--full", check=True)
    deleted = site.posts[1]                            # on the listing's first page, newer than its edge
    site.delete_post(deleted.slug)
    first = cli("check", check=True).stdout
    assert "no changes" in first, first                # one 404: missing, not yet removed
    assert site.count(f"/blog/{deleted.slug}", status=404) == 1
    time.sleep(2.2)
    second = cli("check", check=True).stdout
    assert "1 removed" in second, second


def test_the_daemon_publishes_a_removal_after_exactly_the_delay_without_a_sweep(tmp_path, site, smtp):
    port = free_port()
    cli = _config(tmp_path, site, smtp, crawl='removal_confirm_after = "4s"\n', listen_port=port)
    text = (tmp_path / "postwatch.toml").read_text().replace('title = "Liberty in North Korea"',
                                                             'title = "Liberty in North Korea"\ninterval = "1h"')
    (tmp_path / "postwatch.toml").write_text(text, encoding="utf-8")
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    site.clear_log()
    deleted = site.posts[1]
    site.delete_post(deleted.slug)
    first = cli("check", check=True).stdout            # the listing changed: the deleted post's page 404s once
    assert "no changes" in first, first
    first_404 = max(r.time for r in site.requests if r.path.rstrip("/") == f"/blog/{deleted.slug}")
    with Daemon(cli, port):                            # a 1 h interval: only the removal's own re-check runs
        wait_for(lambda: _mails_to(smtp, "ada@example.org"), timeout=30, what="the removal mail")
        removed_at = time.time()
        fetches = [r for r in site.requests if r.path.rstrip("/") == f"/blog/{deleted.slug}"]
        assert [r.status for r in fetches] == [404, 404]
        # the delay (4 s), then at most one sweep tick (1 s: a quarter of the delay) and the check itself;
        # 2 s more for a loaded 2-core machine, still far below the 1 h interval a sweep would need
        assert 4.0 <= fetches[-1].time - first_404 <= 7.0, fetches[-1].time - first_404
        time.sleep(1)
    [mail] = _mails_to(smtp, "ada@example.org")
    assert deleted.title in _text(mail) and "removed" in _text(mail).lower()
    assert removed_at - first_404 < 10
    history = cli("history", check=True).stdout
    assert history.count(" removed ") == 1


def test_a_source_whose_page_times_out_or_fails_for_long_loses_no_post(tmp_path, site, smtp):
    cli = _config(tmp_path, site, smtp, crawl='removal_confirm_after = "0s"\n')
    cli("check", check=True)
    cli("check", "--full", check=True)
    victim = site.posts[1]
    site.set_fault(f"/blog/{victim.slug}", status=502)
    for _ in range(3):                                 # three full sweeps through a 502 outage
        assert "no changes" in cli("check", "--full", check=True).stdout
    site.clear_faults()
    site.set_fault(f"/blog/{victim.slug}", delay=6.0)  # longer than the 5 s timeout
    assert "no changes" in cli("check", "--full", check=True).stdout
    history = cli("history", check=True).stdout
    assert "removed" not in history, history


def test_a_malformed_feed_behind_an_unchanged_listing_is_a_warning_and_an_alert(tmp_path, smtp):
    """The listing still shows the posts: the check goes on without the feed (issue 30), says so
    in one line, alerts the operator once, and no post is taken for removed."""
    with WordPressReplica() as site:
        cli = _config(tmp_path, site, smtp, kind="auto",
                      extra='[alerts]\noperator = "ops@example.org"\nfailures_before_alert = 1\n')
        cli("check", check=True)
        assert "no changes" in cli("check", check=True).stdout
        site.route("/feed/", lambda request: (200, {"Content-Type": "application/rss+xml"},
                                              b"<rss><channel><item><title>broken & <unclosed"))
        result = cli("check", "--digest")
        assert result.returncode == 0, result.stderr
        [line] = [l for l in result.stderr.splitlines() if "WARNING" in l and "alert queued" not in l]
        assert "link" in line and "feed" in line.lower() and "without it" in line, line
        alerts = _mails_to(smtp, "ops@example.org")
        assert len(alerts) == 1, result.stderr
        alert = alerts[0]
        assert alert["Subject"] == "postwatch: the feed of source 'link' cannot be read"
        cli("check", "--digest", check=True)
        assert len(_mails_to(smtp, "ops@example.org")) == 1             # once a day, not every check
        assert cli("history", check=True).stdout.count(" removed ") == 0