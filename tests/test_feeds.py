"""The Atom feed of changes: served by `postwatch run` at /feeds/<source>.atom and /feeds/all.atom,
written by `postwatch feed`, read back with feedparser and checked against RFC 4287's rules."""
from __future__ import annotations

import stat
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import feedparser
import pytest
from rfc3339_validator import validate_rfc3339
from rfc3987_syntax import is_valid_syntax_iri

from support.harness import Cli, Daemon, free_port, write_config
from test_state_changes import NOW, pages, post, seeded

ATOM = "{http://www.w3.org/2005/Atom}"
ATOM_TYPE = "application/atom+xml; charset=utf-8"


# --------------------------------------------------------------------------------------------
# RFC 4287, the rules that can be checked offline
# --------------------------------------------------------------------------------------------
def rfc4287_problems(body: bytes) -> list[str]:
    """What in this document breaks RFC 4287 (the MUSTs of sections 3 and 4, and no entry id
    twice); [] for a valid Atom feed."""
    try:
        feed = ET.fromstring(body)
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    if feed.tag != f"{ATOM}feed":
        return [f"the root element is {feed.tag}, not atom:feed"]
    problems: list[str] = []

    def count(parent, name, where, low, high):
        found = parent.findall(f"{ATOM}{name}")
        if not low <= len(found) <= high:
            wanted = "exactly one" if low == high == 1 else f"at most {high}" if low == 0 else f"at least {low}"
            problems.append(f"{where}: {len(found)} atom:{name}, {wanted} allowed")
        return found

    def iri(value, where):
        if not value or not is_valid_syntax_iri(value):
            problems.append(f"{where}: {value!r} is not an IRI")

    def dates(parent, where):
        for name in ("updated", "published"):
            for element in parent.findall(f"{ATOM}{name}"):
                if not validate_rfc3339(element.text or ""):
                    problems.append(f"{where}: atom:{name} {element.text!r} is not an RFC 3339 date-time")

    def texts(parent, where):
        for name in ("title", "subtitle", "summary", "rights"):
            for element in parent.findall(f"{ATOM}{name}"):
                if element.get("type", "text") not in ("text", "html", "xhtml"):
                    problems.append(f"{where}: atom:{name} has type {element.get('type')!r}")

    def persons(parent, where):
        for name in ("author", "contributor"):
            for person in parent.findall(f"{ATOM}{name}"):
                count(person, "name", f"{where} atom:{name}", 1, 1)
                for uri in count(person, "uri", f"{where} atom:{name}", 0, 1):
                    iri(uri.text, f"{where} atom:{name} atom:uri")

    def links(parent, where):
        alternates = Counter()
        for link in parent.findall(f"{ATOM}link"):
            iri(link.get("href"), f"{where} atom:link")
            if link.get("rel", "alternate") == "alternate":
                alternates[(link.get("type"), link.get("hreflang"))] += 1
        for (media_type, lang), n in alternates.items():
            if n > 1:
                problems.append(f"{where}: {n} alternate links of type {media_type} and hreflang {lang}")
        return sum(alternates.values())

    def common(parent, where):
        for element in count(parent, "id", where, 1, 1):
            iri(element.text, f"{where} atom:id")
        count(parent, "title", where, 1, 1)
        count(parent, "updated", where, 1, 1)
        for name in ("rights", "subtitle", "summary", "published", "icon", "logo", "generator"):
            count(parent, name, where, 0, 1)
        for category in parent.findall(f"{ATOM}category"):
            if not category.get("term"):
                problems.append(f"{where}: atom:category without a term")
        dates(parent, where)
        texts(parent, where)
        persons(parent, where)
        return links(parent, where)

    common(feed, "feed")
    if not any(link.get("rel") == "self" for link in feed.findall(f"{ATOM}link")):
        problems.append("feed: no self link (RFC 4287 4.2.7.2: SHOULD)")
    entries = feed.findall(f"{ATOM}entry")
    feed_has_author = bool(feed.findall(f"{ATOM}author"))
    for n, entry in enumerate(entries, 1):
        where = f"entry {n}"
        alternates = common(entry, where)
        contents = count(entry, "content", where, 0, 1)
        if not contents and not alternates:
            problems.append(f"{where}: neither atom:content nor an alternate link")
        for content in contents:
            if content.get("src") is None and content.get("type", "text") not in ("text", "html", "xhtml") \
                    and "/" not in content.get("type", ""):
                problems.append(f"{where}: atom:content type {content.get('type')!r}")
        if not feed_has_author and not entry.findall(f"{ATOM}author"):
            problems.append(f"{where}: no atom:author, and the feed has none")
    ids = Counter(entry.findtext(f"{ATOM}id") for entry in entries)
    problems += [f"entry id {value} appears {n} times" for value, n in ids.items() if n > 1]
    return problems


def assert_valid_atom(body: bytes) -> feedparser.FeedParserDict:
    assert rfc4287_problems(body) == []
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.id and parsed.feed.title and parsed.feed.updated_parsed
    for entry in parsed.entries:
        assert entry.id and entry.title and entry.link and entry.updated_parsed, entry
    return parsed


def test_the_offline_rules_catch_a_broken_feed():
    broken = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><updated>yesterday</updated>'
              b'<entry><id>urn:uuid:1</id><id>second id</id><title>a</title><updated>2025-10-08T09:30:00Z</updated>'
              b'<link href="https://example.org/a" type="text/html"/><link href="https://example.org/b" type="text/html"/>'
              b'</entry><entry><id>urn:uuid:1</id><title>b</title><updated>2025-10-08T09:30:00Z</updated></entry></feed>')
    problems = rfc4287_problems(broken)
    assert "feed: 0 atom:id, exactly one allowed" in problems
    assert "feed: atom:updated 'yesterday' is not an RFC 3339 date-time" in problems
    assert "entry 1: 2 atom:id, exactly one allowed" in problems
    assert "entry 1 atom:id: 'second id' is not an IRI" in problems
    assert "entry 1: 2 alternate links of type text/html and hreflang None" in problems
    assert "entry 2: neither atom:content nor an alternate link" in problems
    assert "entry 2: no atom:author, and the feed has none" in problems
    assert "entry id urn:uuid:1 appears 2 times" in problems
    assert "feed: no self link (RFC 4287 4.2.7.2: SHOULD)" in problems


# --------------------------------------------------------------------------------------------
# Through the daemon's HTTP server
# --------------------------------------------------------------------------------------------
def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def make_changes(cli: Cli, site) -> dict[str, object]:
    """Through the real CLI against the replica: a baseline, then two new posts, an edit (seen
    twice within the check, so published) and a removal (404 twice). Returns the replica's posts by what happened."""
    cli("check", check=True)
    cli("check", "--full", check=True)          # reads every post once, so the edit can be diffed
    first = site.add_post("Twelve refugees reach freedom", body_paragraphs=["After a journey of <3,000> miles & more.",
                                                                           "Second paragraph."])
    second = site.add_post("Radio broadcasts reach the border")
    edited = site.posts[4]
    site.edit_post(edited.slug, body_paragraphs=["A completely new opening paragraph about the rescue.",
                                                 *edited.body_paragraphs[1:]])
    removed = site.posts[6]
    site.delete_post(removed.slug)
    # The edit and the second 404 are confirmed by a second fetch within the same check (the
    # harness's removal delay is 0 s).
    confirmed = cli("check", "--full", check=True).stdout
    assert "2 new, 1 removed, 1 updated" in confirmed, confirmed
    return {"new": [first, second], "updated": edited, "removed": removed}


@pytest.fixture
def daemon_cli(tmp_path, site):
    port = free_port()
    return Cli(write_config(tmp_path, site.blog_url, None, listen_port=port)), port


def test_the_daemon_serves_each_change_as_an_entry_of_valid_atom_with_conditional_get(daemon_cli, site):
    cli, port = daemon_cli
    changed = make_changes(cli, site)
    base = f"http://127.0.0.1:{port}/feeds"
    with Daemon(cli, port) as daemon:
        status, headers, body = fetch(f"{base}/link.atom")
        assert status == 200
        assert headers["Content-Type"] == ATOM_TYPE
        parsed = assert_valid_atom(body)
        assert parsed.feed.title == "Liberty in North Korea: new, edited and removed posts"
        assert parsed.feed.author == "Liberty in North Korea"
        assert {(link.rel, link.href) for link in parsed.feed.links} == {("self", f"{base}/link.atom"),
                                                                         ("alternate", site.blog_url)}
        by_title = {entry.title: entry for entry in parsed.entries}
        assert sorted(by_title) == sorted([f"New: {p.title}" for p in changed["new"]]
                                          + [f"Updated: {changed['updated'].title}", f"Removed: {changed['removed'].title}"])
        new = by_title[f"New: {changed['new'][0].title}"]
        assert new.link == f"{site.blog_url}/{changed['new'][0].slug}"
        assert new.tags[0].term == "new"
        assert "After a journey of &lt;3,000&gt; miles &amp; more." in new.content[0].value
        update = by_title[f"Updated: {changed['updated'].title}"]
        assert "<ins>A completely new opening paragraph about the rescue.</ins>" in update.content[0].value
        assert "<del>" in update.content[0].value
        assert "not found" in by_title[f"Removed: {changed['removed'].title}"].content[0].value
        # The feed's updated time is its newest entry's, and Last-Modified says the same.
        newest = max(datetime(*e.updated_parsed[:6], tzinfo=timezone.utc) for e in parsed.entries)
        assert datetime(*parsed.feed.updated_parsed[:6], tzinfo=timezone.utc) == newest
        assert parsedate_to_datetime(headers["Last-Modified"]) == newest

        # Conditional GET: the reader's copy is current, so 304 and no body.
        etag, modified = headers["ETag"], headers["Last-Modified"]
        for condition in ({"If-None-Match": etag}, {"If-None-Match": f'"other", W/{etag}'},
                          {"If-Modified-Since": modified}):
            status, answer_headers, answer = fetch(f"{base}/link.atom", condition)
            assert (status, answer, answer_headers["ETag"]) == (304, b"", etag), condition
        older = format_datetime(newest - timedelta(seconds=1), usegmt=True)
        assert fetch(f"{base}/link.atom", {"If-Modified-Since": older})[0] == 200
        # If-None-Match decides when both are sent (RFC 9110 13.2.2).
        assert fetch(f"{base}/link.atom", {"If-None-Match": '"stale"', "If-Modified-Since": modified})[0] == 200

        # Every source's feed names each entry's source; an unknown feed is 404.
        status, headers, everything = fetch(f"{base}/all.atom")
        assert status == 200 and headers["Content-Type"] == ATOM_TYPE
        parsed_all = assert_valid_atom(everything)
        assert {e.id for e in parsed_all.entries} == {e.id for e in parsed.entries}
        assert {e.author for e in parsed_all.entries} == {"Liberty in North Korea"}
        assert fetch(f"{base}/nope.atom")[0] == 404
        assert fetch(f"{base}/link.rss")[0] == 404

        # The same feed, byte for byte, from the CLI for static hosting (read-only, beside the daemon).
        assert cli("feed", "link", check=True).stdout.encode() == body

        # A post published while the daemon runs: a new ETag, the old one gets the whole feed.
        cli("check", check=True)          # nothing new yet
        assert fetch(f"{base}/link.atom", {"If-None-Match": etag})[0] == 304
        fresh = site.add_post("Posted while the reader waits")
        cli("check", check=True)
        status, headers, later = fetch(f"{base}/link.atom", {"If-None-Match": etag})
        assert status == 200 and headers["ETag"] != etag
        later_parsed = assert_valid_atom(later)
        assert later_parsed.entries[0].title == f"New: {fresh.title}"
        # Entry ids are stable: the older entries keep theirs.
        assert {e.id for e in parsed.entries} < {e.id for e in later_parsed.entries}
        assert daemon.stop() == 0

    # ...also across a restart of the daemon.
    with Daemon(cli, port) as daemon:
        assert fetch(f"{base}/link.atom")[2] == later
        assert daemon.stop() == 0


def test_the_served_feed_is_bounded_by_the_entries_setting_newest_first(tmp_path, site):
    port = free_port()
    cli = Cli(write_config(tmp_path, site.blog_url, None, listen_port=port, extra="[feeds]\nentries = 3\n"))
    cli("check", check=True)
    for n in range(5):
        site.add_post(f"Rescue number {n}")
        cli("check", check=True)
    with Daemon(cli, port) as daemon:
        status, _, body = fetch(f"http://127.0.0.1:{port}/feeds/link.atom")
        assert status == 200
        titles = [e.title for e in assert_valid_atom(body).entries]
        assert titles == ["New: Rescue number 4", "New: Rescue number 3", "New: Rescue number 2"]
        assert daemon.stop() == 0


# --------------------------------------------------------------------------------------------
# Through the CLI
# --------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


def test_postwatch_feed_writes_only_the_output_file_and_refuses_unknown_sources(tmp_path, site):
    cli = Cli(write_config(tmp_path, site.blog_url, None))
    changed = make_changes(cli, site)
    before = snapshot(tmp_path)

    result = cli("feed", "link", "-o", "link.atom", check=True)
    output = tmp_path / "link.atom"
    assert result.stdout.startswith("link.atom: link feed written, 4 entries, the newest from ")
    assert snapshot(tmp_path) == {**before, "link.atom": snapshot(tmp_path)["link.atom"]}   # nothing else made or touched
    assert stat.S_IMODE(output.stat().st_mode) == 0o644          # a feed is public, whatever the umask
    parsed = assert_valid_atom(output.read_bytes())
    assert len(parsed.entries) == 4
    assert parsed.feed.links[0].href.endswith("/feeds/link.atom")

    # Written again with nothing changed: the same bytes (ids and times come from the database);
    # a mode the operator chose is kept.
    output.chmod(0o640)
    first = output.read_bytes()
    cli("feed", "link", "--output", str(output), check=True)
    assert output.read_bytes() == first and stat.S_IMODE(output.stat().st_mode) == 0o640

    everything = assert_valid_atom(cli("feed", "all", check=True).stdout.encode())
    assert {e.title for e in everything.entries} == {e.title for e in parsed.entries}
    assert f"New: {changed['new'][1].title}" in {e.title for e in everything.entries}

    for args, message in ((("feed", "nope"), "postwatch: no such source: nope (a feed is a source's name, or 'all')"),
                          (("feed", "link", "-o", "missing/link.atom"),
                           "postwatch: missing/link.atom: cannot write the feed: No such file or directory")):
        refused = cli(*args)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.strip().splitlines() == [message]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "link.atom"])


def test_postwatch_feed_without_a_database_is_one_line_and_creates_nothing(tmp_path):
    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    result = Cli(tmp_path / "postwatch.toml")("feed", "link", "-o", "out.atom")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"postwatch: no database at {tmp_path / 'state.db'} yet; "
                                                  "run `postwatch check` first"]
    assert [p.name for p in tmp_path.iterdir()] == ["postwatch.toml"]


def test_the_feeds_settings_are_validated():
    from postwatch.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config({"feeds": {"entries": 0, "public_url": "ftp://feeds.example.org/"}})
    assert refused.value.problems == ["config: [feeds] entries must be between 1 and 10000, not 0",
                                      "config: [feeds] public_url must be an http(s) URL"]
    assert parse_config({"feeds": {"entries": 200}}).feeds.entries == 200


def test_a_source_cannot_be_named_all(tmp_path):
    from postwatch.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config({"sources": [{"name": "all", "url": "https://blog.example.org/"}]})
    assert "source 'all': the name 'all' is reserved for the feed of all sources" in str(refused.value)
    cli = Cli(write_config(tmp_path, "https://blog.example.org/", None))
    added = cli("sources", "add", "https://all.example.org/", "--no-test")
    assert added.returncode == 2
    assert added.stderr.strip().splitlines() == ["postwatch: the name 'all' is reserved for the feed of all sources (use --name)"]
    assert cli("sources", "add", "https://all.example.org/", "--name", "allx", "--no-test").returncode == 0


# --------------------------------------------------------------------------------------------
# The store's part and the rendering, on both databases / in process
# --------------------------------------------------------------------------------------------
def test_feed_events_are_the_newest_published_ones_of_a_source(store):
    from state import CheckInput, SourceRecord

    seeded(store, 20)
    store.sync_sources([SourceRecord(name="blog", url="https://blog.example/", kind="html"),
                        SourceRecord(name="other", url="https://other.example/", kind="html")])
    others = [post(n) for n in range(100, 110)]
    store.apply_check("other", CheckInput(posts=others, baseline=True), NOW)
    store.apply_check("blog", CheckInput(posts=pages(20) + [post(21, "<p>New.</p>")]), NOW + timedelta(minutes=1))
    store.apply_check("other", CheckInput(posts=[*others, post(110, "<p>Other.</p>")]), NOW + timedelta(minutes=2))
    # A flood is held: subscribers were told nothing of it, and neither is the feed.
    held = store.apply_check("blog", CheckInput(posts=pages(20) + [post(21, "<p>New.</p>")]
                                                + [post(n, "<p>Flood.</p>") for n in range(30, 40)]),
                             NOW + timedelta(minutes=3))
    assert held.held and len(held.events) == 10
    assert [e.url for e in store.feed_events(None, 10)] == ["https://blog.example/p/110", "https://blog.example/p/21"]
    assert [e.url for e in store.feed_events("blog", 10)] == ["https://blog.example/p/21"]
    assert [e.url for e in store.feed_events(None, 1)] == ["https://blog.example/p/110"]
    store.release_source("blog")
    released = store.feed_events("blog", 50)
    assert len(released) == 11 and released[-1].url == "https://blog.example/p/21"
    assert store.feed_events("blog", 5) == released[:5]


def test_hostile_titles_and_bodies_cannot_break_the_feed_or_reach_the_reader():
    from digest.feed import FeedSettings, render_feed
    from state import EventRecord, SourceRecord

    hostile = EventRecord(
        id=7, seq=7, source="blog", kind="new", url="https://blog.example/p/1?a=1&b=<2>",
        title="Rescue\x0b <script>alert(1)</script> & \x00\ud800 \U0001F600 Refund\u202efdp.exe",
        published=NOW, summary=None, created_at=NOW, status="published",
        body_html='<p onclick="steal()">Hello <script>alert(1)</script><a href="javascript:alert(1)">x</a>'
                  '<iframe src="https://evil.example/"></iframe><img src=x onerror=alert(1)>]]></p>', diff=None)
    edited = EventRecord(id=8, seq=8, source="blog", kind="updated", url="https://blog.example/p/2", title="Edited",
                         published=None, summary=None, body_html=None, created_at=NOW + timedelta(hours=1),
                         status="published", diff={"title": {"old": "<b>Old</b>", "new": "Edited"}, "truncated": True,
                                                   "paragraphs": [{"op": "changed", "words": [["delete", "<i>a</i>"],
                                                                                              ["insert", "b & c"]]}]})
    source = SourceRecord(name="blog", url="https://blog.example/", title="A <blog> & co")
    atom = render_feed([edited, hostile], FeedSettings(), self_url="https://feeds.example/blog.atom", source=source)
    parsed = assert_valid_atom(atom.body)
    assert parsed.entries[1].title == "New: Rescue <script>alert(1)</script> & \U0001F600 Refundfdp.exe"
    html = parsed.entries[1].content[0].value
    for forbidden in ("<script", "onclick", "javascript:", "<iframe", "onerror", "<img"):
        assert forbidden not in html
    assert "Hello" in html
    assert parsed.entries[1].link == "https://blog.example/p/1?a=1&b=%3C2%3E"
    assert parsed.entries[0].content[0].value == ('<p dir="auto">Title was: <del>&lt;b&gt;Old&lt;/b&gt;</del></p>\n'
                                                  '<p dir="auto"><del>&lt;i&gt;a&lt;/i&gt;</del><ins>b &amp; c</ins></p>\n'
                                                  '<p dir="auto">… more changes on the page.</p>')
    assert parsed.feed.title == "A <blog> & co: new, edited and removed posts"
    assert atom.updated == NOW + timedelta(hours=1)
    # The same events give the same document: readers see no phantom change.
    assert render_feed([edited, hostile], FeedSettings(), self_url="https://feeds.example/blog.atom",
                       source=source).body == atom.body


def test_a_feed_with_no_change_yet_is_valid_and_stable():
    from digest.feed import FeedSettings, render_feed

    first = render_feed([], FeedSettings(), self_url="https://feeds.example/all.atom")
    assert assert_valid_atom(first.body).entries == []
    assert first.updated is None and first.last_modified is None
    assert render_feed([], FeedSettings(), self_url="https://feeds.example/all.atom").etag == first.etag

