"""Extraction versions: a new extractor mails no false edits (revision 0013).

The generic kinds' post bodies moved from the hand-made heuristics to trafilatura. Posts stored
before were hashed from the old reading; revisited, their new body differs, is seen again by the
confirming fetch and used to be mailed to everyone as an edit. Every body now carries the reader
that produced it ("trafilatura-1", "heuristic-1", "webflow-1", ...); a body read by another reader
than the stored one (or, on a generic kind's page, by an unknown one: rows from before 0013) is
the new reference, silently. A real edit after that is mailed as usual; a changed title still
counts. Through the real CLI on real pages (bench/corpus), the Store on SQLite and PostgreSQL, and
the migration on both.
"""
from __future__ import annotations

import email
import email.policy
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from crawler.extract import HEURISTIC_READER, selector_for
from crawler.items import PostItem
from crawler.kinds import SourceKind
from crawler.maintext import READER as TRAFILATURA
from support.harness import Cli
from postwatch.testing.replica import BlogReplica
from state import CheckInput, SourceRecord, Store
from state.changes import (BodyOutcome, FetchState, Outcome, Seen, judge_body, judge_fetch, reader_changed,
                           unknown_reader_is_other)
from state.normalize import normalize
from test_migration_channels import alembic, old_store  # noqa: F401 - the fixture
from test_real_blogs import MANIFEST, RealBlog, config, corpus_page
from test_state_changes import NOW

# Real blog pages whose old (heuristic) body differs from trafilatura's, and one where both agree.
DJANGO = ("django-post-mortem", "Testing Client-Side Applications with Django Post Mortem",
          "pages/trafilatura-caktusgroup.com.django.html.gz")
LEMIRE = ("simdjson", "JSON parsing: simdjson vs. JSON for Modern C++", "pages/trafilatura-lemire.me.json.html.gz")
GITHUB = ("spiceland", "Leader spotlight: Erin Spiceland", "pages/trafilatura-github.blog.spiceland.html.gz")
HABECK = ("habeck", "Aus! Aus! Alles vorbei!", "pages/trafilatura-spreeblick.com.habeck.html.gz")
ENTRIES = (DJANGO, LEMIRE, GITHUB, HABECK)


def _serve(site: BlogReplica, slug: str, html: bytes) -> None:
    """The post's page at the address the listing links to and at its canonical one (no
    trailing slash), which sweeps ask for."""
    for path in (f"/real/posts/{slug}/", f"/real/posts/{slug}"):
        site.route(path, lambda _request: (200, {"Content-Type": "text/html; charset=utf-8"}, html))


def _updated_lines(history: str) -> list[str]:
    return [line for line in history.splitlines() if re.search(r"\supdated\s", line)]


def _old_reading(html: bytes, url: str) -> str | None:
    """The body the heuristics gave before trafilatura (what an old version stored)."""
    kind = SourceKind.named("html")()
    kind.reads_main_text = False
    return kind.post(selector_for(html, url), url, url).body_html


def _as_an_old_version_stored_them(folder: Path, blog: RealBlog, reader: str | None) -> int:
    """Rewrite the stored page bodies as the old heuristics read them, with `reader` (None: a
    row from before revision 0013). How many of them differ from trafilatura's body."""
    files = {blog.post_url(slug).rstrip("/"): file for slug, _, file in ENTRIES}
    differing = 0
    with sqlite3.connect(folder / "state.db") as db:
        rows = db.execute("SELECT v.id, p.id, p.url, v.content_hash FROM post_versions v "
                          "JOIN posts p ON p.id = v.post_id WHERE v.origin = 'page'").fetchall()
        assert len(rows) == len(ENTRIES), rows
        for version_id, post_id, url, new_hash in rows:
            body = _old_reading(corpus_page(files[url]), url)
            content = normalize(body)
            differing += content.content_hash != new_hash
            db.execute("UPDATE post_versions SET text = ?, content_hash = ?, body_html = ?, reader = ? WHERE id = ?",
                       (content.text, content.content_hash, body, reader, version_id))
            db.execute("UPDATE posts SET content_hash = ? WHERE id = ?", (content.content_hash, post_id))
    return differing


def _readers(folder: Path) -> dict[str, str | None]:
    with sqlite3.connect(folder / "state.db") as db:
        return dict(db.execute("SELECT p.url, v.reader FROM posts p JOIN post_versions v ON v.post_id = p.id "
                               "WHERE v.origin = 'page' AND v.id = (SELECT max(id) FROM post_versions w "
                               "WHERE w.post_id = p.id AND w.origin = 'page')"))


@pytest.mark.parametrize("old_reader", [None, HEURISTIC_READER], ids=["before-0013", "heuristic-1"])
def test_an_upgraded_extractor_mails_no_edits_and_a_real_edit_after_it_is_mailed_once(tmp_path, old_reader):
    with BlogReplica() as site:
        blog = RealBlog(site)
        for entry in ENTRIES:
            blog.add(entry)
            _serve(site, entry[0], corpus_page(entry[2]))
        cli = Cli(config(tmp_path, blog.url, "html"))
        assert f"baseline recorded, {len(ENTRIES)} posts" in cli("check", check=True).stdout
        cli("check", "--full", check=True)
        # An old version's database: the heuristics' bodies, tagged by the old reader or by none.
        assert _as_an_old_version_stored_them(tmp_path, blog, old_reader) == 3     # Django, Lemire, GitHub differ
        cli("subscribers", "add", "ada@example.org", check=True)

        for _ in range(2):
            swept = cli("check", "--full", check=True)
            assert "updated" not in swept.stdout and "seen once" not in swept.stdout, swept.stdout
        assert _updated_lines(cli("history", check=True).stdout) == []
        cli("digest", check=True)
        assert list((tmp_path / "outbox").glob("*.eml")) == []
        assert set(_readers(tmp_path).values()) == {TRAFILATURA}    # the same body (Habeck) is tagged too

        # A real edit of the article, after the silent re-reference: mailed as usual, once.
        html = corpus_page(LEMIRE[2]).decode("utf-8")
        sentence = next(s for s in MANIFEST[LEMIRE[2]]["with"] if s in html)
        edited = html.replace(sentence, "A corrected sentence: simdjson parses twice as fast as we wrote.", 1)
        _serve(site, LEMIRE[0], edited.encode())
        first = cli("check", "--full", check=True)
        assert "1 updated" in first.stdout, first.stdout
        again = cli("check", "--full", check=True)
        assert "updated" not in again.stdout, again.stdout
        [line] = _updated_lines(cli("history", check=True).stdout)
        assert "simdjson" in line
        cli("digest", check=True)
        [mail] = list((tmp_path / "outbox").glob("*.eml"))
        message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
        assert "twice as fast" in " ".join(message.get_body(preferencelist=("plain",)).get_content().split())


# ------------------------------------------------------------------------------------------
# The rules, without a database
# ------------------------------------------------------------------------------------------
def test_which_stored_readers_can_be_compared():
    assert not reader_changed(TRAFILATURA, TRAFILATURA, unknown_is_other=True)
    assert reader_changed(HEURISTIC_READER, TRAFILATURA, unknown_is_other=False)
    assert reader_changed(None, TRAFILATURA, unknown_is_other=True)
    assert not reader_changed(None, "webflow-1", unknown_is_other=False)     # exact kinds: today's rules
    assert not reader_changed(TRAFILATURA, None, unknown_is_other=True)      # a body of no told reader
    assert unknown_reader_is_other("html", "page") and unknown_reader_is_other("feed", "page")
    assert not unknown_reader_is_other("auto", "feed") and not unknown_reader_is_other("webflow", "page")


def test_a_reread_body_is_the_reference_and_a_reread_title_waits_for_its_second_fetch():
    stored = Seen("old", "Title")
    quiet = judge_fetch(FetchState(stored), Seen("new", "Title"), NOW, reread=True)
    assert (quiet.outcome, quiet.candidate, quiet.publish) == (Outcome.REREAD, None, False)
    assert judge_body(stored, Seen("new", "Title"), quiet, retag=True) is BodyOutcome.REREAD
    renamed = judge_fetch(FetchState(stored), Seen("new", "Retitled"), NOW, reread=True)
    assert renamed.outcome is Outcome.REREAD and renamed.candidate.seen == Seen("new", "Retitled")
    same = judge_fetch(FetchState(stored), stored, NOW, reread=True)
    assert same.outcome is Outcome.UNCHANGED and judge_body(stored, stored, same, retag=True) is BodyOutcome.RETAG
    assert judge_fetch(FetchState(stored), Seen("new", "Title"), NOW).outcome is Outcome.PENDING   # same reader


# ------------------------------------------------------------------------------------------
# The Store, on SQLite and PostgreSQL
# ------------------------------------------------------------------------------------------
URL = "https://blog.example/p/1"


def page(body: str, reader: str | None, title: str = "Post 1", origin: str = "page") -> PostItem:
    return PostItem(url=URL, title=title, published=NOW, body_html=body, summary=None, origin=origin, reader=reader)


def _start(store: Store, kind: str, first: PostItem) -> None:
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/", kind=kind)])
    store.apply_check("blog", CheckInput(posts=[first], baseline=True), NOW)


def _check(store: Store, item: PostItem, minutes: int):
    return store.apply_check("blog", CheckInput(posts=[item]), NOW + timedelta(minutes=minutes))


def _latest(store: Store) -> tuple[str, str, str | None]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(text("SELECT title, text, reader FROM post_versions ORDER BY id DESC LIMIT 1")).one())


OLD = "<p>Old reading of the article.</p><p>Share this post!</p>"
NEW = "<p>Old reading of the article.</p>"
EDITED = "<p>The article, really edited.</p>"


def test_store_another_readers_body_is_the_reference_and_the_next_real_edit_is_published(store):
    _start(store, "html", page(OLD, HEURISTIC_READER))
    for minutes in (10, 20):
        result = _check(store, page(NEW, TRAFILATURA), minutes)
        assert result.events == [] and result.pending_edits == 0
    assert _latest(store) == ("Post 1", "Old reading of the article.", TRAFILATURA)
    assert store.crawl_state("blog").awaiting_confirmation == {}
    assert _check(store, page(EDITED, TRAFILATURA), 30).pending_edits == 1
    [edit] = _check(store, page(EDITED, TRAFILATURA), 40).events
    assert edit.kind == "updated" and "really edited" in str(edit.diff) and "Share" not in str(edit.diff)


def test_store_a_title_changed_at_the_reread_is_still_an_edit_of_the_title_only(store):
    _start(store, "html", page(OLD, None))
    first = _check(store, page(NEW, TRAFILATURA, title="Post 1, retitled"), 10)
    assert first.events == [] and first.pending_edits == 1
    assert _latest(store)[0] == "Post 1"          # the new reference keeps the kept title
    [edit] = _check(store, page(NEW, TRAFILATURA, title="Post 1, retitled"), 20).events
    assert edit.kind == "updated" and edit.title == "Post 1, retitled"
    assert edit.diff["paragraphs"] == [] or all(p["op"] == "equal" for p in edit.diff["paragraphs"]), edit.diff


@pytest.mark.parametrize("kind,origin", [("webflow", "page"), ("auto", "feed")])
def test_store_an_unknown_stored_reader_keeps_todays_rules_where_the_reading_did_not_change(store, kind, origin):
    reader = "webflow-1" if kind == "webflow" else "feed-1"
    _start(store, kind, page(OLD, None, origin=origin))
    assert _check(store, page(EDITED, reader, origin=origin), 10).pending_edits == 1
    [edit] = _check(store, page(EDITED, reader, origin=origin), 20).events
    assert edit.kind == "updated"


def test_store_the_same_body_from_a_new_reader_takes_its_tag_and_edits_are_judged_by_it(store):
    _start(store, "webflow", page(OLD, None))
    assert _check(store, page(OLD, "webflow-1"), 10).events == []
    assert _latest(store)[2] == "webflow-1"
    # webflow-2 reads it otherwise: the reference, not an edit.
    assert _check(store, page(NEW, "webflow-2"), 20).events == []
    assert _check(store, page(NEW, "webflow-2"), 30).events == [] and _latest(store)[2] == "webflow-2"


def test_store_a_pending_edit_measured_by_the_old_reader_is_dropped_at_the_reread(store):
    _start(store, "html", page(OLD, HEURISTIC_READER))
    assert _check(store, page(EDITED, HEURISTIC_READER), 10).pending_edits == 1
    assert _check(store, page(NEW, TRAFILATURA), 20).events == []
    assert store.crawl_state("blog").awaiting_confirmation == {}
    assert _check(store, page(NEW, TRAFILATURA), 30).events == []


# ------------------------------------------------------------------------------------------
# Revision 0013
# ------------------------------------------------------------------------------------------
def test_0013_keeps_every_version_with_an_unknown_reader_and_goes_down_and_up(old_store):  # noqa: F811
    old, reopen = old_store
    old.migrate("0012")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO sources (name, url, kind, selectors, origin, enabled, baseline_done, "
                          "consecutive_failures, degraded, created_at) VALUES ('blog', 'https://blog.example/', "
                          "'html', '{}', 'config', true, true, 0, false, :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO posts (source_id, url, title, first_seen_at, last_seen_at, status, content_hash) "
                          "VALUES (1, :url, 'Post 1', :now, :now, 'active', :hash)"),
                     {"url": URL, "now": NOW, "hash": normalize(OLD).content_hash})
        conn.execute(text("INSERT INTO post_versions (post_id, origin, content_hash, title, text, body_html, fetched_at) "
                          "VALUES (1, 'page', :hash, 'Post 1', :text, :body, :now)"),
                     {"hash": normalize(OLD).content_hash, "text": normalize(OLD).text, "body": OLD, "now": NOW})
        conn.execute(text("INSERT INTO events (source_id, post_id, kind, url, title, created_at, status) "
                          "VALUES (1, 1, 'new', :url, 'Post 1', :now, 'published')"), {"url": URL, "now": NOW})
    old.close()

    store = reopen()
    assert store.schema_revision() == Store.head_revision()
    assert _latest(store) == ("Post 1", normalize(OLD).text, None)
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/", kind="html")])
    assert _check(store, page(NEW, TRAFILATURA), 10).events == []       # the old row's reader is unknown
    assert _latest(store)[2] == TRAFILATURA

    alembic(store, "downgrade", "0012")
    assert store.schema_revision() == "0012"
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM post_versions")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar() == 1
        with pytest.raises(Exception):
            conn.execute(text("SELECT reader FROM post_versions")).all()
    alembic(store, "upgrade", "head")
    assert store.schema_revision() == Store.head_revision() and _latest(store)[2] is None
    store.close()


def test_store_a_held_edit_is_not_dismissed_by_another_readers_fetch(store):
    def posts(body: str, reader: str) -> list[PostItem]:
        return [PostItem(url=f"https://blog.example/p/{n}", title=f"Post {n}", published=NOW, body_html=body.format(n=n),
                         summary=None, origin="page", reader=reader) for n in range(5)]
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/", kind="html")])
    store.apply_check("blog", CheckInput(posts=posts("<p>Post {n}.</p>", HEURISTIC_READER), baseline=True), NOW)
    edited = posts("<p>Post {n}, edited everywhere.</p>", HEURISTIC_READER)
    store.apply_check("blog", CheckInput(posts=edited), NOW + timedelta(minutes=10))
    assert store.apply_check("blog", CheckInput(posts=edited), NOW + timedelta(minutes=20)).held
    reread = store.apply_check("blog", CheckInput(posts=posts("<p>Post {n}, edited.</p>", TRAFILATURA)),
                               NOW + timedelta(minutes=30))
    assert reread.events == [] and store.source_status()[0].held_events == 5      # left to `sources release`
    assert {e.status for e in store.history() if e.kind == "updated"} == {"held"}
