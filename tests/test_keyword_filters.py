"""Keyword filters: per source (the config's [[sources]] include/exclude) and per subscriber
(`subscribers add --include/--exclude`, the CSV columns), deciding which events each one's digest
or webhook tells of. An event filtered out for one subscriber still reaches the others."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from digest.filters import FilterProblem, KeywordFilter, compile_term, event_text, select_events
from support.harness import Cli, write_config
from support.webhook_receiver import WebhookReceiver
from state import EventRecord
from state.changes import EventDraft

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def event(title: str, summary: str = "", body: str = "", source: str = "link", seq: int = 1) -> EventRecord:
    return EventRecord(id=seq, seq=seq, source=source, kind="new", url=f"https://example.org/{seq}", title=title,
                       published=None, summary=summary, body_html=body, diff=None, created_at=NOW, status="published")


# -- the rules -------------------------------------------------------------------------------
def test_a_word_matches_whole_words_in_any_case_and_a_slashed_term_is_a_regular_expression():
    assert compile_term("visa").search("New VISA rules")
    assert not compile_term("visa").search("visas are hard to get")
    assert compile_term("human rights").search("Human\n rights work")
    assert compile_term("C++").search("a C++ course")
    assert compile_term("/refugees?/").search("a refugee's story") and compile_term("/refugees?/").search("REFUGEES")
    with pytest.raises(FilterProblem, match=r"'/\[unclosed/' is not a regular expression: unterminated character set"):
        compile_term("/[unclosed/")
    with pytest.raises(FilterProblem, match="is not a word"):
        compile_term("  ")


def test_include_needs_one_match_and_exclude_none_in_title_summary_or_body():
    rescue = event("Rescue update", body="<p>Three <b>refugees</b> reached safety &amp; freedom.</p>", seq=1)
    podcast = event("Podcast: rescue stories", seq=2)
    visa = event("Visa changes", summary="What the new rules mean.", seq=3)
    events = [rescue, podcast, visa]
    assert "refugees reached safety & freedom" in " ".join(event_text(rescue).split())

    refugees_not_podcasts = KeywordFilter.of(include=["/refugees?/", "rescue"], exclude=["podcast"])
    assert select_events(events, {}, refugees_not_podcasts) == [rescue]
    assert select_events(events, {}, KeywordFilter()) == events
    assert select_events(events, {"link": KeywordFilter.of(exclude=["visa"])}, KeywordFilter()) == [rescue, podcast]
    # The source's filter and the subscriber's both apply; another source's filter does not.
    assert select_events(events, {"link": KeywordFilter.of(include=["rescue"]), "other": KeywordFilter.of(include=["x"])},
                         KeywordFilter.of(exclude=["podcast"])) == [rescue]


# -- stored per subscriber, on SQLite and PostgreSQL --------------------------------------------
def test_a_subscribers_filters_are_stored_and_choose_their_events(store):
    store.sync_sources([__import__("state").SourceRecord(name="link", url="https://example.org/blog")])
    ada = store.add_subscriber("ada@example.org", include=["visa", "/refugees?/"], exclude=["podcast"], now=NOW)
    bo = store.add_subscriber("bo@example.org", now=NOW)
    assert (ada.include, ada.exclude) == (("visa", "/refugees?/"), ("podcast",))
    assert (bo.include, bo.exclude) == ((), ())
    with store.engine.begin() as conn:
        from state.events import store_events
        from state.schema import sources
        from sqlalchemy import select

        source_id = conn.execute(select(sources.c.id)).scalar()
        drafts = [EventDraft(kind="new", url=f"https://example.org/{n}", title=title, published_at=None,
                             summary=None, body_html=None, post_id=None, version_hash=None, previous_hash=None, diff=None)
                  for n, title in enumerate(["Visa changes", "Podcast about refugees", "Office move"])]
        store_events(conn, source_id, "link", drafts, NOW, held=False)

    told: dict[str, list[str]] = {}

    def build(subscriber, events):
        told[subscriber.email] = [e.title for e in events]
        from state import ComposedMessage
        return ComposedMessage(message_id=f"<{subscriber.id}@t>", subject="s", to_addr=subscriber.email, raw=b"x")

    def choose(subscriber, events):
        return select_events(events, {}, KeywordFilter(subscriber.include, subscriber.exclude))

    queued = store.compose_digests(build, NOW, choose=choose)
    assert told == {"ada@example.org": ["Visa changes"], "bo@example.org": ["Visa changes", "Podcast about refugees",
                                                                              "Office move"]}
    assert len(queued) == 2
    # Both cursors moved past all three events: what was filtered out is not held back for later.
    assert {s.email: s.cursor for s in store.list_subscribers()} == {"ada@example.org": 3, "bo@example.org": 3}
    assert store.compose_digests(build, NOW + timedelta(minutes=1), choose=choose) == []
    # Changed again with no filter: they are cleared.
    assert store.add_subscriber("ada@example.org", now=NOW).include == ()


# -- the command line, a real SMTP server and a real webhook receiver ----------------------------
def filtered_config(tmp_path, site, smtp_port, sources_extra: str = "") -> Cli:
    config = write_config(tmp_path, site.blog_url, smtp_port)
    text = config.read_text()
    if sources_extra:
        text = text.replace('title = "Liberty in North Korea"\n', f'title = "Liberty in North Korea"\n{sources_extra}')
    config.write_text(text)
    return Cli(config)


def plain(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_an_event_filtered_out_for_one_subscriber_still_reaches_the_others(tmp_path, site, smtp):
    secret: dict[str, str] = {}
    with WebhookReceiver(lambda url: secret["value"]) as receiver:
        cli = filtered_config(tmp_path, site, smtp.port)
        cli("check", check=True)
        cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", "--include", "visa",
            "--include", "/refugees?/", check=True)
        cli("subscribers", "add", "bo@example.org", "--cadence", "immediate", "--exclude", "visa", check=True)
        added = cli("subscribers", "add", receiver.url("/hook"), "--cadence", "immediate", "--exclude", "podcast",
                    check=True).stdout
        secret["value"] = added.rsplit(": ", 1)[1].strip()
        listed = cli("subscribers", "list", check=True).stdout
        assert "include visa, /refugees?/" in listed and "exclude visa" in listed and "exclude podcast" in listed

        site.add_post("Visa rules for defectors", body_paragraphs=["What changes at the border."])
        site.add_post("Podcast: a new season", body_paragraphs=["Stories of refugees, told by themselves."])
        site.add_post("Office move", body_paragraphs=["We moved to a bigger space."])
        cli("check", check=True)
        cli("digest", "preview", "--subscriber", "ada@example.org", "ada.html", check=True)
        preview = (tmp_path / "ada.html").read_text(encoding="utf-8")
        assert "Visa rules for defectors" in preview and "Office move" not in preview
        done = cli("digest", check=True)
        assert "3 composed, 3 delivered" in done.stdout

    by_recipient = {m["To"]: plain(m) for m in smtp.messages}
    assert set(by_recipient) == {"ada@example.org", "bo@example.org"}
    ada, bo = by_recipient["ada@example.org"], by_recipient["bo@example.org"]
    assert "Visa rules for defectors" in ada and "Podcast: a new season" in ada    # the body says "refugees"
    assert "Office move" not in ada
    assert "Visa rules for defectors" not in bo
    assert "Podcast: a new season" in bo and "Office move" in bo
    [delivery] = receiver.accepted
    assert sorted(e["title"] for e in delivery.json["events"]) == ["Office move", "Visa rules for defectors"]


def test_a_sources_filters_in_the_config_apply_to_every_subscriber(tmp_path, site, smtp):
    cli = filtered_config(tmp_path, site, smtp.port, 'exclude = ["podcast", "/^office/"]\n')
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    cli("subscribers", "add", "bo@example.org", "--cadence", "immediate", "--include", "podcast", check=True)
    site.add_post("Podcast: a new season", body_paragraphs=["Listen."])
    site.add_post("Office move", body_paragraphs=["Boxes."])
    site.add_post("Rescue update", body_paragraphs=["Three families reached safety."])
    cli("check", check=True)
    done = cli("digest", check=True)
    # Bo wants only podcasts, which the source leaves out: nothing for him, and his cursor moves on.
    assert "1 composed, 1 delivered" in done.stdout
    [message] = smtp.messages
    assert message["To"] == "ada@example.org"
    text = plain(message)
    assert "Rescue update" in text and "Podcast" not in text and "Office move" not in text
    assert "0 composed" in cli("digest", check=True).stdout


def test_a_bad_regular_expression_in_a_source_is_one_line_from_config_check(tmp_path, site):
    cli = filtered_config(tmp_path, site, None, 'include = ["visa", "/(unclosed/"]\n')
    result = cli("config", "check")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"postwatch: {cli.config}: source 'link': include '/(unclosed/' is not a regular expression: "
        "missing ), unterminated subpattern at position 0"]
    not_a_list = filtered_config(tmp_path, site, None, 'exclude = "podcast"\n')
    [line] = not_a_list("config", "check").stderr.splitlines()
    assert line.endswith("source 'link': exclude must be a list of words or /regular expressions/")


def test_subscriber_filters_from_the_command_line_and_a_csv_import_are_checked(tmp_path, site):
    cli = filtered_config(tmp_path, site, None)
    refused = cli("subscribers", "add", "ada@example.org", "--include", "/[a-/")
    assert refused.returncode == 2
    assert re.fullmatch(r"postwatch: include '/\[a-/' is not a regular expression: .+\n", refused.stderr)
    (tmp_path / "people.csv").write_text("email,include,exclude\n"
                                         "ada@example.org,visa;/refugees?/,podcast\n"
                                         "bo@example.org,/(/,\n"
                                         f"https://hooks.example.org/postwatch,,office\n", encoding="utf-8")
    result = cli("subscribers", "import", "people.csv", "--skip-invalid")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("postwatch: people.csv:3: include '/(/' is not a regular expression")
    assert "2 new, 0 updated, 0 duplicates, 1 refused" in result.stdout
    listed = cli("subscribers", "list").stdout
    assert re.search(r"ada@example.org .* include visa, /refugees\?/; exclude podcast", listed)
    assert re.search(r"https://hooks.example.org/postwatch .* exclude office", listed)


# -- linear time: a pattern cannot freeze the daemon ------------------------------------------
def test_patterns_re2_cannot_match_in_linear_time_are_refused_with_the_reason():
    for term, reason in [("/(?=a)b/", "lookahead"), ("/(?<!a)b/", "negative lookbehind"),
                         (r"/(\w)\1/", r"backreference \1"), ("/(?P<x>a)(?P=x)/", "backreference"),
                         ("/(?>a+)b/", "atomic group"), ("/a++/", "possessive quantifier")]:
        with pytest.raises(FilterProblem) as refused:
            compile_term(term)
        assert str(refused.value).startswith(f"{term!r} is not supported: {reason}")
        assert "linear time" in str(refused.value)
    with pytest.raises(FilterProblem, match=r"is not supported: too large"):
        compile_term(r"/\pL{1000}/")      # RE2's max_mem bounds what one pattern may take
    # RE2 takes the pattern that makes `re` backtrack for hours, and answers at once.
    assert compile_term("/(a+)+$/").search("a" * 34 + "!") is None
    assert compile_term("/(a+)+$/").search("banana")


def test_plain_words_keep_their_unicode_boundaries_and_spaces():
    assert compile_term("북한").search("오늘 북한 뉴스") and not compile_term("북한").search("북한의")
    assert compile_term("café").search("Café au lait") and not compile_term("café").search("cafés")
    assert compile_term("north korea").search("North\xa0Korea")       # &nbsp; from a post's HTML
    assert compile_term("C++").search("I like c++!") and not compile_term("visa").search("visa2 _visa")


def test_a_stored_term_re2_refuses_hides_nothing_and_is_logged_once(caplog):
    # Saved by a version that matched with `re`: the daemon must neither crash nor drop news.
    old = KeywordFilter(include=("/(?<=x)visa/",), exclude=(), owner="subscriber #7")
    assert old.passes("Visa rules") and old.passes("Office move")
    stale_exclude = KeywordFilter(include=("visa",), exclude=(r"/(a)\1/",), owner="subscriber #8")
    assert stale_exclude.passes("Visa rules") and not stale_exclude.passes("Office move")
    for _ in range(3):
        old.passes("again")
    lines = [r.getMessage() for r in caplog.records if "subscriber #7" in r.getMessage()]
    assert lines == ["keyword filter of subscriber #7: '/(?<=x)visa/' is not supported: lookbehind (RE2 matches "
                     "in linear time and has no lookaround or backreference); it hides no event until it is replaced"]


def test_subscribers_add_refuses_a_lookahead_in_one_line(tmp_path, site):
    cli = filtered_config(tmp_path, site, None)
    refused = cli("subscribers", "add", "x@example.org", "--include", "/(?=a)b/")
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr == ("postwatch: include '/(?=a)b/' is not supported: lookahead (RE2 matches in linear "
                              "time and has no lookaround or backreference)\n")
    (tmp_path / "people.csv").write_text("email,include,exclude\nbo@example.org,,/(a)\\1/\n", encoding="utf-8")
    imported = cli("subscribers", "import", "people.csv")
    assert imported.returncode != 0
    assert "people.csv:2: exclude '/(a)\\\\1/' is not supported: backreference" in imported.stderr


def test_a_catastrophic_pattern_neither_freezes_the_daemon_nor_holds_back_the_others(tmp_path, site, smtp):
    """`(a+)+$` against 34 a's and a '!' backtracks for some 16 minutes in `re`, holding the GIL:
    on the old code the daemon froze (no digest, /healthz silent, SIGTERM ignored; this test
    failed on /healthz timing out). With RE2 it is about a microsecond. A subscriber whose stored term RE2 refuses (saved by an older version) gets
    every event rather than none, and the daemon says so once."""
    import sqlite3
    import time

    from support.harness import Daemon, free_port, get, wait_for

    port = free_port()
    cli = Cli(write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s"))
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", "--include", "/(a+)+$/",
        "--include", "rescue", check=True)
    cli("subscribers", "add", "bo@example.org", "--cadence", "immediate", check=True)
    cli("subscribers", "add", "cy@example.org", "--cadence", "immediate", "--include", "visa", check=True)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE subscribers SET filters = ? WHERE email = 'cy@example.org'",
                   ('{"include": ["/(?<=x)visa/"], "exclude": []}',))
        [cy_id] = db.execute("SELECT id FROM subscribers WHERE email = 'cy@example.org'").fetchone()

    def health_within_2s():
        started = time.monotonic()
        status, _ = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and time.monotonic() - started < 2, "/healthz was slow or failing"

    def mail_for(address, count):
        health_within_2s()
        return len([m for m in smtp.messages if m["To"] == address]) >= count

    with Daemon(cli, port) as daemon:
        site.add_post("a" * 34 + "!", body_paragraphs=["A title made of a's."])
        site.add_post("Rescue update", body_paragraphs=["Three families reached safety."])
        for address in ("ada@example.org", "bo@example.org", "cy@example.org"):
            wait_for(lambda: mail_for(address, 1), timeout=40, every=0.5, what=f"the digest to {address}")
        site.add_post("Office move", body_paragraphs=["Boxes."])       # a second compose run
        wait_for(lambda: mail_for("bo@example.org", 2) and mail_for("cy@example.org", 2), timeout=40, every=0.5,
                 what="the second digests")
        health_within_2s()
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 5, "SIGTERM took too long"
        stderr = daemon.process.communicate()[1]

    texts = {address: "\n".join(plain(m) for m in smtp.messages if m["To"] == address)
             for address in ("ada@example.org", "bo@example.org", "cy@example.org")}
    # Ada: what her terms match. The a's-title ends in "!", so /(a+)+$/ does not match it; "rescue" does.
    assert "Rescue update" in texts["ada@example.org"] and "a" * 34 not in texts["ada@example.org"]
    assert "Office move" not in texts["ada@example.org"]
    for address in ("bo@example.org", "cy@example.org"):       # no filter; a filter that cannot be used
        assert all(title in texts[address] for title in ("a" * 34 + "!", "Rescue update", "Office move"))
    assert stderr.count(f"keyword filter of subscriber #{cy_id}: '/(?<=x)visa/' is not supported: lookbehind") == 1
