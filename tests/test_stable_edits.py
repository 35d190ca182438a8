"""Issue #13 item 4: false "updated" mails.

An edit is published only when two fetches in a row see the same new content; a post whose
article differs on every fetch (a rotating ad inside it) is volatile: nothing is mailed for it
and the operator is told once. Held edits are confirmed only by a fetch that sees them again.
The rules themselves are tested without a database in test_change_rules.py.
"""
from __future__ import annotations

import re
from datetime import timedelta

from crawler.runtime import run
from postwatch.config import Config, SourceConfig
from support.harness import Cli, Daemon, free_port, wait_for, write_config
from postwatch.testing.replica import WordPressReplica
from state import CheckInput
from test_state_changes import NOW, listing, pages, seeded


# ------------------------------------------------------------------------------------------
# The store: held edits are never published without looking again
# ------------------------------------------------------------------------------------------
def test_a_calm_check_that_did_not_fetch_the_held_posts_publishes_nothing(store):
    seeded(store)
    ada = store.add_subscriber("ada@example.org")
    edits = {n: f"<p>Body of post {n}, rewritten.</p>" for n in range(8)}
    store.apply_check("blog", CheckInput(posts=pages(20, edits)), NOW)
    assert store.apply_check("blog", CheckInput(posts=pages(20, edits)), NOW + timedelta(minutes=30)).held
    assert store.crawl_state("blog").awaiting_confirmation.keys() == {f"https://blog.example/p/{n}" for n in range(8)}

    calm = store.apply_check("blog", CheckInput(posts=listing(20)), NOW + timedelta(hours=1))   # no post page read
    assert not calm.held and store.pending_events(ada) == []
    assert store.source_status()[0].held_events == 8

    third = {n: f"<p>Body of post {n}, rotating ad #{n}.</p>" for n in range(8)}
    looked = store.apply_check("blog", CheckInput(posts=pages(20, third)), NOW + timedelta(hours=2))
    assert looked.events == [] and looked.pending_edits == 8
    assert store.pending_events(ada) == [] and store.source_status()[0].held_events == 0
    assert {e.status for e in store.history() if e.kind == "updated"} == {"dismissed"}


# ------------------------------------------------------------------------------------------
# Through the real CLI, against the LiNK replica and a real SMTP server
# ------------------------------------------------------------------------------------------
def _updated_lines(history: str) -> list[str]:
    return [line for line in history.splitlines() if re.search(r"\supdated\s", line)]


def _mails_to(smtp, address: str) -> list:
    return [m for m, (_, tos) in zip(smtp.messages, smtp.envelopes) if address in tos]


def _text(message) -> str:
    # The text part wraps title lines at 78 columns: compare with the line breaks undone.
    return " ".join(message.get_body(preferencelist=("plain",)).get_content().split())


def test_a_real_edit_is_mailed_after_one_check_that_fetched_it_twice_and_listed_once(cli, site, smtp):
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    post = site.posts[2]
    site.edit_post(post.slug, body_paragraphs=["A corrected account of the rescue, with the right dates.", "More."])

    site.clear_log()
    first = cli("check", "--full", check=True)
    assert "1 updated" in first.stdout and "seen once" not in first.stdout, first.stdout
    # Seen by the sweep, then confirmed by a second fetch of the same content within the check.
    assert [r.status for r in site.requests if r.path.rstrip("/") == f"/blog/{post.slug}"] == [200, 200]
    cli("digest", check=True)
    [mail] = smtp.messages
    assert post.title in _text(mail) and "corrected account" in _text(mail)

    third = cli("check", "--full", check=True)
    assert "no changes" in third.stdout and "seen once" not in third.stdout
    history = cli("history", check=True).stdout
    [line] = _updated_lines(history)
    assert post.title in line


def test_a_rotating_ad_inside_eight_articles_mails_nothing_and_alerts_the_operator_once(tmp_path, site, smtp):
    cli = Cli(write_config(tmp_path, site.blog_url, smtp.port, extra='[alerts]\noperator = "ops@example.org"\n'))
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    rotating = site.posts[4:12]
    site.rotate_ads_in(p.slug for p in rotating)

    outputs = []
    for _ in range(6):                                   # six sweeps: every fetch shows another ad
        outputs.append(cli("check", "--full", check=True).stdout)
        cli("digest", check=True)
    assert sum("8 post(s) change on every fetch" in out for out in outputs) == 1, outputs

    assert _mails_to(smtp, "ada@example.org") == []
    [alert] = _mails_to(smtp, "ops@example.org")
    assert "change on every fetch" in alert["Subject"]
    body = _text(alert)
    assert all(f"{site.blog_url}/{p.slug}" in body for p in rotating) and "exclude" in body
    history = cli("history", check=True).stdout
    assert _updated_lines(history) == []
    status = cli("status", check=True).stdout
    assert "8 volatile post(s)" in status
    assert all(f"{site.blog_url}/{p.slug}" in status for p in rotating)


def test_a_volatile_post_whose_ad_stops_and_article_is_edited_publishes_that_edit(tmp_path, site, smtp):
    cli = Cli(write_config(tmp_path, site.blog_url, smtp.port))
    cli("check", check=True)
    cli("check", "--full", check=True)
    post = site.posts[1]
    site.rotate_ads_in([post.slug])
    for _ in range(3):
        cli("check", "--full", check=True)
    assert "1 volatile post(s)" in cli("status", check=True).stdout
    site.rotating_ads.clear()
    site.edit_post(post.slug, body_paragraphs=["The ad is gone and this paragraph is new.", "Second."])
    cli("check", "--full", check=True)
    confirmed = cli("check", "--full", check=True)
    assert "1 updated" in confirmed.stdout
    assert "volatile" not in cli("status", check=True).stdout


def test_a_flood_of_real_edits_is_held_then_published_by_a_check_that_sees_them_again(cli, site, smtp):
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    edited = site.posts[:8]                                   # 8 of 20 posts: over the 30 % flood share
    for p in edited:
        site.edit_post(p.slug, body_paragraphs=[f"Corrected text of {p.title}.", "Second paragraph."])

    held = cli("check", "--full", check=True).stdout      # seen, confirmed within the check, held
    assert "HELD as suspect" in held and "8 updated" in held
    cli("digest", check=True)
    assert smtp.messages == []

    confirmed = cli("check", check=True)                      # re-reads the 8 held posts: same content
    assert "8 held change(s) confirmed and published" in confirmed.stdout
    cli("digest", check=True)
    [mail] = smtp.messages
    assert all(p.title in _text(mail) for p in edited)
    history = cli("history", check=True).stdout
    assert len(_updated_lines(history)) == 8 and "[held]" not in history
    assert "DEGRADED" not in cli("status", check=True).stdout


def test_held_edits_whose_content_reverted_are_never_mailed(cli, site, smtp):
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    edited = site.posts[:8]
    originals = {p.slug: list(p.body_paragraphs) for p in edited}
    for p in edited:
        site.edit_post(p.slug, body_paragraphs=["Error: the CMS lost this article."])
    assert "HELD as suspect" in cli("check", "--full", check=True).stdout
    for slug, body in originals.items():
        site.edit_post(slug, body_paragraphs=body)

    for _ in range(2):
        after = cli("check", check=True)
        assert "no changes" in after.stdout and "seen once" not in after.stdout and "published" not in after.stdout
        cli("digest", check=True)
    assert smtp.messages == []
    history = cli("history", check=True).stdout
    assert all("[dismissed]" in line for line in _updated_lines(history)) and len(_updated_lines(history)) == 8
    assert "DEGRADED" not in cli("status", check=True).stdout


# ------------------------------------------------------------------------------------------
# A feed carrying full content counts as a fetch
# ------------------------------------------------------------------------------------------
def test_an_edit_seen_in_a_full_content_feed_is_confirmed_by_a_second_feed_read_in_the_same_check(tmp_path):
    from postwatch.app import App

    with WordPressReplica() as site:
        config = Config(path=tmp_path / "postwatch.toml", database="state.db",
                        sources=[SourceConfig(name="wp", url=site.blog_url, kind="feed",
                                              feed_url=f"{site.base_url}/feed/")])
        config.crawl.download_delay, config.crawl.autothrottle = 0, False
        app = App.open(config)
        try:
            def check():
                return run(lambda: app.checker.check_source("wp"))

            assert check().baseline
            assert check().events == []
            post = site.posts[0]
            site.edit_post(post.slug, body_paragraphs=["Feed readers see this correction."] + post.body_paragraphs[1:])
            config.crawl.confirm_edits_after = timedelta(seconds=0.5)
            site.clear_log()
            confirmed = check()                 # seen, then the feed re-read without validators: the same
            assert [e.kind for e in confirmed.events] == ["updated"] and confirmed.pending_edits == 0
            assert confirmed.requests == 2 and site.count("/feed/") == 2 and site.count("/20") == 0   # no post page
            assert check().events == []
        finally:
            app.close()


# ------------------------------------------------------------------------------------------
# The daemon: an immediate subscriber gets the real edit, never the rotating ads
# ------------------------------------------------------------------------------------------
def test_the_daemon_mails_a_real_edit_once_and_no_rotating_ad_noise(tmp_path, site, smtp):
    import time

    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s",
                          extra='[alerts]\noperator = "ops@example.org"\n')
    config.write_text(config.read_text().replace("[crawl]\n", '[crawl]\nfull_sweep_every = "1s"\n'))
    cli = Cli(config)
    cli("check", check=True)
    cli("check", "--full", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    rotating = site.posts[4:12]
    site.rotate_ads_in(p.slug for p in rotating)
    edited = site.posts[1]
    site.edit_post(edited.slug, body_paragraphs=["A real correction the subscriber should hear about.", "Second."])

    with Daemon(cli, port) as daemon:
        wait_for(lambda: _mails_to(smtp, "ada@example.org") and _mails_to(smtp, "ops@example.org"), timeout=90,
                 what="the edit mail and the operator alert")
        checks_before = site.count(f"/blog/{rotating[0].slug}")
        wait_for(lambda: site.count(f"/blog/{rotating[0].slug}") >= checks_before + 3, timeout=60,
                 what="three more sweeps")
        time.sleep(1)
        assert daemon.stop() == 0

    [mail] = _mails_to(smtp, "ada@example.org")
    body = _text(mail)
    assert edited.title in body and "real correction" in body
    assert not any(p.title in body for p in rotating)
    [alert] = _mails_to(smtp, "ops@example.org")
    assert "change on every fetch" in alert["Subject"]
    history = cli("history", check=True).stdout
    assert [edited.title in line for line in _updated_lines(history)] == [True]
