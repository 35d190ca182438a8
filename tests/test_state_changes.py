"""The stored state on SQLite and on PostgreSQL: the same suite, both backends."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from crawler.items import PostItem
from postwatch.config import Config
from support.harness import PG_SERVER
from state import AlreadyRunning, CheckInput, ComposedMessage, SourceRecord, Store

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def post(n: int, body: str | None = None, origin: str = "page", title: str | None = None) -> PostItem:
    return PostItem(url=f"https://blog.example/p/{n}", title=title or f"Post {n}", published=NOW, body_html=body,
                    summary=None, origin=origin)


def listing(count: int) -> list[PostItem]:
    return [post(n, origin="listing") for n in range(count)]


def pages(count: int, edits: dict[int, str] | None = None) -> list[PostItem]:
    edits = edits or {}
    return [post(n, edits.get(n, f"<p>Body of post {n}.</p><p>Second paragraph {n}.</p>")) for n in range(count)]


def seeded(store: Store, count: int = 20) -> Store:
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/", kind="html")])
    assert store.apply_check("blog", CheckInput(posts=listing(count), baseline=True), NOW).baseline
    store.apply_check("blog", CheckInput(posts=pages(count)), NOW)
    return store


def kinds(result) -> list[str]:
    return sorted(e.kind for e in result.events)


def test_the_first_check_is_a_silent_baseline(store):
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/")])
    result = store.apply_check("blog", CheckInput(posts=pages(20), baseline=True), NOW)
    assert result.baseline and result.events == []
    assert store.history() == []
    assert store.source_status()[0].posts == 20


def test_new_updated_removed_and_restored(store):
    seeded(store)
    subscriber = store.add_subscriber("ada@example.org")
    edit = {3: "<p>Body of post 3, edited.</p><p>Second paragraph 3.</p>"}
    new = store.apply_check("blog", CheckInput(posts=[post(99, "<p>Brand new.</p>")] + pages(20, edit)), NOW)
    assert kinds(new) == ["new"]               # the edit is seen once: it waits for the next fetch
    confirmed_edit = store.apply_check("blog", CheckInput(posts=pages(20, edit)), NOW)
    assert kinds(confirmed_edit) == ["updated"]
    updated = confirmed_edit.events[0]
    assert updated.diff["paragraphs"] == [{"op": "changed", "words": [["equal", "Body of post "], ["delete", "3."], ["insert", "3, edited."]]}]

    first_404 = store.apply_check("blog", CheckInput(posts=listing(20), gone={post(5).url: 404}), NOW)
    assert first_404.events == []
    too_soon = store.apply_check("blog", CheckInput(posts=listing(20), gone={post(5).url: 404}), NOW + timedelta(minutes=30))
    assert too_soon.events == []
    confirmed = store.apply_check("blog", CheckInput(posts=listing(20), gone={post(5).url: 410}), NOW + timedelta(hours=2))
    assert kinds(confirmed) == ["removed"]
    back = store.apply_check("blog", CheckInput(posts=[post(5, "<p>Body of post 5.</p><p>Second paragraph 5.</p>")]), NOW + timedelta(hours=3))
    assert kinds(back) == ["restored"]
    assert [e.kind for e in store.pending_events(subscriber)] == ["new", "updated", "removed", "restored"]


def test_markup_and_whitespace_changes_are_not_updates(store):
    seeded(store)
    restyled = [post(n, f'<div class="x"><p class="lead">  Body of <b>post</b>\u00a0{n}.</p>\n\n<p>Second   paragraph {n}.</p></div>')
                for n in range(20)]
    assert store.apply_check("blog", CheckInput(posts=restyled), NOW).events == []


def test_one_404_a_5xx_or_absence_from_the_listing_never_remove_anything(store):
    seeded(store)
    store.apply_check("blog", CheckInput(posts=listing(20), gone={post(1).url: 404}), NOW)
    # Post 2 answered 503, then post 1 timed out: a failed fetch is in none of the check's sets.
    store.apply_check("blog", CheckInput(posts=listing(20)), NOW + timedelta(hours=5))
    result = store.apply_check("blog", CheckInput(posts=listing(10)), NOW + timedelta(hours=9))
    assert result.events == []
    assert all(e.kind != "removed" for e in store.history())
    assert store.source_status()[0].posts == 20


def test_a_page_answering_again_between_two_404s_cancels_the_removal(store):
    seeded(store)
    store.apply_check("blog", CheckInput(posts=listing(20), gone={post(1).url: 404}), NOW)
    store.apply_check("blog", CheckInput(posts=listing(20), unchanged_urls={post(1).url}), NOW + timedelta(hours=1))
    result = store.apply_check("blog", CheckInput(posts=listing(20), gone={post(1).url: 404}), NOW + timedelta(hours=3))
    assert result.events == []


def test_a_redesign_that_matches_nothing_is_held_and_subscribers_see_nothing(store):
    seeded(store)
    subscriber = store.add_subscriber("ada@example.org")
    result = store.apply_check("blog", CheckInput(posts=[]), NOW)
    assert result.held and "no posts" in result.hold_reason
    [status] = store.source_status()
    assert status.degraded
    assert store.pending_events(subscriber) == []
    recovered = store.apply_check("blog", CheckInput(posts=listing(20)), NOW + timedelta(hours=1))
    assert not recovered.held and not store.source_status()[0].degraded


def test_a_mass_change_is_held_until_released_then_delivered_once(store):
    seeded(store)
    subscriber = store.add_subscriber("ada@example.org")
    flood = [post(100 + n, f"<p>New {n}</p>") for n in range(15)] + pages(20)
    result = store.apply_check("blog", CheckInput(posts=flood), NOW)
    assert result.held and len(result.events) == 15
    assert store.pending_events(subscriber) == []
    # A calm check does not publish held new posts (a flood of new URLs is what a redesign looks like).
    store.apply_check("blog", CheckInput(posts=pages(20)), NOW + timedelta(hours=1))
    assert store.pending_events(subscriber) == []
    assert store.release_source("blog") == 15
    assert len(store.pending_events(subscriber)) == 15
    messages = []
    build = lambda sub, events: messages.append(len(events)) or ComposedMessage(f"<m{len(messages)}@x>", "s", sub.email, b"raw")
    assert len(store.compose_digests(build, NOW)) == 1
    assert store.compose_digests(build, NOW) == []
    assert messages == [15]


def test_held_edits_are_confirmed_by_a_following_check_and_a_glitch_that_reverts_is_forgotten(store):
    seeded(store)
    subscriber = store.add_subscriber("ada@example.org")
    garbled = {n: f"<p>Error 503: please retry {n}</p>" for n in range(20)}
    seen_once = store.apply_check("blog", CheckInput(posts=pages(20, garbled)), NOW)
    assert seen_once.events == [] and seen_once.pending_edits == 20
    glitch = store.apply_check("blog", CheckInput(posts=pages(20, garbled)), NOW + timedelta(minutes=30))
    assert glitch.held and len(glitch.events) == 20
    reverted = store.apply_check("blog", CheckInput(posts=pages(20)), NOW + timedelta(hours=1))
    assert reverted.events == [] and not store.source_status()[0].degraded
    assert store.pending_events(subscriber) == []

    real = {n: f"<p>Body of post {n}.</p><p>Second paragraph {n}, corrected.</p>" for n in range(10)}
    store.apply_check("blog", CheckInput(posts=pages(20, real)), NOW + timedelta(hours=2))
    held = store.apply_check("blog", CheckInput(posts=pages(20, real)), NOW + timedelta(hours=2, minutes=30))
    assert held.held
    store.apply_check("blog", CheckInput(posts=pages(20, real)), NOW + timedelta(hours=3))
    assert len(store.pending_events(subscriber)) == 10


def test_a_new_subscriber_gets_no_back_catalogue_and_every_event_once(store):
    seeded(store)
    store.apply_check("blog", CheckInput(posts=[post(50, "<p>Before Bo subscribed</p>")] + listing(20)), NOW)
    ada = store.add_subscriber("ada@example.org")
    store.apply_check("blog", CheckInput(posts=[post(51, "<p>After</p>")] + listing(20)), NOW)
    bo = store.add_subscriber("bo@example.org", sources=["blog"])
    store.apply_check("blog", CheckInput(posts=[post(52, "<p>Latest</p>")] + listing(20)), NOW)
    assert [e.url for e in store.pending_events(ada)] == [post(51).url, post(52).url]
    assert [e.url for e in store.pending_events(bo)] == [post(52).url]


def test_outbox_retry_failure_and_leases(store):
    seeded(store)
    store.add_subscriber("ada@example.org")
    store.apply_check("blog", CheckInput(posts=[post(60, "<p>x</p>")] + listing(20)), NOW)
    [outbox_id] = store.compose_digests(lambda s, e: ComposedMessage("<one@x>", "s", s.email, b"raw"), NOW)
    [item] = store.due_outbox(NOW)
    assert store.due_outbox(NOW) == []                        # leased to the first caller
    store.mark_retry(item.id, "451 try later", NOW + timedelta(minutes=1))
    assert store.due_outbox(NOW) == []
    [again] = store.due_outbox(NOW + timedelta(minutes=2))
    assert again.attempts == 1
    store.mark_failed(again.id, "550 no such user", NOW)
    assert store.outbox_stats(NOW) == {"pending": 0, "sent": 0, "failed": 1, "oldest_pending_age_s": 0}


def test_a_crashed_senders_lease_expires(store):
    seeded(store)
    store.add_subscriber("ada@example.org")
    store.apply_check("blog", CheckInput(posts=[post(61, "<p>x</p>")] + listing(20)), NOW)
    store.compose_digests(lambda s, e: ComposedMessage("<lease@x>", "s", s.email, b"raw"), NOW)
    assert len(store.due_outbox(NOW)) == 1
    assert store.due_outbox(NOW + timedelta(minutes=1)) == []
    assert len(store.due_outbox(NOW + store.send_lease + timedelta(seconds=1))) == 1


def test_unsubscribed_addresses_get_nothing_queued(store):
    seeded(store)
    ada = store.add_subscriber("ada@example.org")
    store.apply_check("blog", CheckInput(posts=[post(62, "<p>x</p>")] + listing(20)), NOW)
    store.compose_digests(lambda s, e: ComposedMessage("<u@x>", "s", s.email, b"raw"), NOW)
    assert store.unsubscribe(ada.id)
    assert store.due_outbox(NOW) == []
    store.apply_check("blog", CheckInput(posts=[post(63, "<p>y</p>")] + listing(20)), NOW)
    assert store.compose_digests(lambda s, e: ComposedMessage("<u2@x>", "s", s.email, b"raw"), NOW) == []


def test_alerts_at_most_once_per_problem_per_day(store):
    assert store.alert_due("source-failing:blog", NOW)
    assert not store.alert_due("source-failing:blog", NOW + timedelta(hours=23))
    assert store.alert_due("source-suspect:blog", NOW)
    assert store.alert_due("source-failing:blog", NOW + timedelta(hours=25))


def test_prune_keeps_latest_versions_and_undelivered_events(store):
    seeded(store)
    ada = store.add_subscriber("ada@example.org")
    for _ in range(2):                         # an edit is published when two fetches in a row see it
        store.apply_check("blog", CheckInput(posts=pages(20, {1: "<p>v2</p>"})), NOW)
    store.compose_digests(lambda s, e: ComposedMessage("<p1@x>", "s", s.email, b"raw"), NOW)
    for _ in range(2):
        store.apply_check("blog", CheckInput(posts=pages(20, {1: "<p>v3</p>"})), NOW)
    pruned = store.prune(NOW + timedelta(days=200), timedelta(days=180))
    assert pruned["events"] == 1 and pruned["versions"] == 2
    assert [e.kind for e in store.pending_events(ada)] == ["updated"]


def test_instance_lock_refuses_a_second_daemon(store, tmp_path):
    with store.instance_lock():
        second = Store(store.url, migrate=False, connect_args=store.connect_args)
        with pytest.raises(AlreadyRunning):
            with second.instance_lock():
                pass
        second.close()
    with store.instance_lock():
        pass


def test_migrations_from_an_empty_database_and_from_the_first_revision(tmp_path):
    path = tmp_path / "old.db"
    old = Store(str(path), migrate=False)
    old.migrate("0001")
    assert old.schema_revision() == "0001"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO sources (name, url, kind, selectors, origin, enabled, baseline_done, consecutive_failures, degraded, created_at)"
                   " VALUES ('blog', 'https://blog.example/', 'html', '{}', 'config', 1, 1, 0, 0, '2025-01-01 00:00:00')")
        db.execute("INSERT INTO posts (source_id, url, title, first_seen_at, last_seen_at, status) VALUES"
                   " (1, 'https://blog.example/p/1', 'Old post', '2025-01-01', '2025-01-01', 'active')")
    old.close()
    upgraded = Store(str(path))
    assert upgraded.schema_revision() == Store.head_revision()
    assert upgraded.crawl_state("blog").known["https://blog.example/p/1"].title == "Old post"
    assert upgraded.alert_due("k", NOW)
    upgraded.close()
    fresh = Store(str(tmp_path / "new.db"))
    assert fresh.schema_revision() == Store.head_revision()
    fresh.close()


def test_an_undated_post_is_dated_by_when_it_was_first_seen(store):
    seeded(store)
    undated = PostItem(url="https://blog.example/p/undated", title="No date", published=None,
                       body_html="<p>x</p>", summary=None, origin="page")
    [event] = store.apply_check("blog", CheckInput(posts=[undated] + listing(20)), NOW + timedelta(hours=5)).events
    assert event.published == NOW + timedelta(hours=5)


def test_a_configured_postgresql_url_is_opened_with_psycopg_3_and_its_secret_kept_beside_the_config(tmp_path, pg_database):
    """The driver postwatch installs is psycopg 3; SQLAlchemy would read postgresql:// as psycopg2."""
    config = Config(path=tmp_path / "postwatch.toml", database=f"{PG_SERVER}/{pg_database}")
    assert config.database.startswith("postgresql://")
    store = Store(config.database_url)
    try:
        assert store.schema_revision() == Store.head_revision() and not store.is_sqlite
    finally:
        store.close()
    assert config.secret_path == tmp_path / "postwatch.secret"


def test_a_configured_file_path_is_a_sqlite_database_beside_the_config_with_its_secret(tmp_path):
    config = Config(path=tmp_path / "conf" / "postwatch.toml", database="data/watch.db")
    store = Store(config.database_url)
    assert store.is_sqlite and (tmp_path / "conf" / "data" / "watch.db").is_file()
    store.close()
    assert config.secret_path == tmp_path / "conf" / "data" / "watch.db.secret"


# ------------------------------------------------------------------------------------------
# Diffs at the level people read (issue 33): an appended sentence is one added sentence with the
# paragraph's start as context; a moved block is "moved", not added and removed.
# ------------------------------------------------------------------------------------------

WELCOME = ("Liberty in North Korea welcomes Sarah Yun as our new Chief Regional Officer (CRO), South Korea, as our "
           "previous South Korea Country Director, Sokeel Park, transitions into a new role as our Chief Strategy "
           "Officer (CSO). Sarah brings a wealth of experience from her work to advance human rights in North Korea "
           "and across Asia during the past 15 years.")
OUTSIDE = ("North Korean refugees consistently tell us that getting more outside information into North Korea is "
           "crucial for empowering North Koreans to change their country.")
THANKS = "We look forward to increasing our impact with Sarah’s leadership and sharing updates with our supporters."


def _edited_event(tmp_path, before: list[str], after: list[str]):
    """The stored edit event of a post whose paragraphs went from `before` to `after`."""
    store = Store(str(tmp_path / "diff.db"))
    store.sync_sources([SourceRecord(name="link", url="https://blog.example/", kind="html")])
    html = lambda paragraphs: "".join(f"<p>{p}</p>" for p in paragraphs)  # noqa: E731
    store.apply_check("link", CheckInput(posts=[post(1, html(before))], baseline=True), NOW)
    reader = store.add_subscriber("ada@example.org")
    for _ in range(2):                              # an edit is published when it is seen again
        store.apply_check("link", CheckInput(posts=[post(1, html(after))]), NOW + timedelta(hours=1))
    store.release_source("link")
    events = [e for e in store.pending_events(reader) if e.kind == "updated"]
    store.close()
    assert len(events) == 1, events
    return events[0]


def _digest(event):
    from email import message_from_bytes, policy

    from digest.compose import build_message
    from digest.settings import DigestSettings
    from state import Subscriber

    reader = Subscriber(id=1, email="ada@example.org", cadence="daily", send_time="08:00", timezone="UTC", weekday=None,
                        sources=None, status="active", cursor=0, created_at=NOW)
    message = message_from_bytes(build_message(reader, [event], DigestSettings(secret=b"k"), NOW).raw, policy=policy.default)
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("added", [
    "She starts in January.",
    # Longer than the paragraph's own sentences: the words' ratio alone (0.47) paired them no more.
    "She starts in January and will lead our team in Seoul, our work with resettled North Koreans in South "
    "Korea, and our partnerships with the organisations who help them build their new lives there; her "
    "first visit will be to our new office in Seoul, where she will meet the team and the North Koreans we "
    "work with, and to our partners in Busan and Incheon, whose support makes all of this possible.",
])
def test_a_sentence_appended_to_a_long_paragraph_is_one_added_sentence(tmp_path, added):
    event = _edited_event(tmp_path, [WELCOME, OUTSIDE, THANKS], [f"{WELCOME} {added}", OUTSIDE, THANKS])
    [entry] = event.diff["paragraphs"]
    assert entry["op"] == "changed"
    assert entry["words"] == [["equal", WELCOME + " "], ["insert", added]]
    html, text = _digest(event)
    changed = html.split("<b>Changed:</b>", 1)[1].split("</p>", 1)[0]
    assert "<del>" not in changed and f"<ins>{added}</ins>" in changed.replace("&#39;", "'")
    # The paragraph's start and the words before the new sentence as context, not the whole paragraph again.
    assert changed.startswith(" Liberty in North Korea welcomes Sarah Yun as our new … during the past 15 years. <ins>")
    assert "Chief Strategy" not in changed and "Added:" not in html and "Removed:" not in html
    text = " ".join(text.split())                   # wrapped at 78 columns
    assert "~ Changed: Liberty in North Korea welcomes Sarah Yun as our new … during the past 15 years. [+She starts" in text


def test_a_reworded_sentence_is_marked_word_by_word_and_its_neighbours_are_context(tmp_path):
    reworded = WELCOME.replace("a wealth of experience", "deep experience")
    event = _edited_event(tmp_path, [WELCOME, OUTSIDE], [reworded, OUTSIDE])
    [entry] = event.diff["paragraphs"]
    assert [op for op, _ in entry["words"]] == ["equal", "delete", "insert", "equal"]
    assert entry["words"][1:3] == [["delete", "a wealth of"], ["insert", "deep"]]
    html, _ = _digest(event)
    assert "<del>a wealth of</del> <ins>deep</ins>" in html


@pytest.mark.parametrize("before, after", [
    (["Our new Chief Regional Officer", WELCOME, OUTSIDE, THANKS], [WELCOME, OUTSIDE, "Our new Chief Regional Officer", THANKS]),
    ([WELCOME, OUTSIDE, THANKS], [OUTSIDE, WELCOME, THANKS]),
])
def test_a_moved_heading_or_paragraph_is_moved_not_added_and_removed(tmp_path, before, after):
    event = _edited_event(tmp_path, before, after)
    assert [entry["op"] for entry in event.diff["paragraphs"]] == ["moved"]
    html, text = _digest(event)
    assert "<b>Moved:</b>" in html and "Added:" not in html and "Removed:" not in html
    assert "> Moved: " in text and "+ Added:" not in text and "- Removed:" not in text


def test_a_rewritten_paragraph_is_still_one_out_one_in(tmp_path):
    event = _edited_event(tmp_path, [WELCOME, THANKS], [OUTSIDE, THANKS])
    assert [entry["op"] for entry in event.diff["paragraphs"]] == ["removed", "added"]
