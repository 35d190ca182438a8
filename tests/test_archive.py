"""The web version of the digest and the archive of changes (issue 33), served by a real
`postwatch run`: /archive/, /archive/<source>/, /archive/d/<id> (the digest's "View in
browser"), and the front page /. None of them may carry a reader's token or address."""
from __future__ import annotations

import html as htmlmod
import re
from email import message_from_bytes, policy
from email.utils import format_datetime, parsedate_to_datetime
from datetime import timedelta

import pytest
from markupsafe import escape

from digest.render import digest_id, parse_digest_id
from support.browser import CHROMIUM, measure_in_frame
from support.harness import Cli, Daemon, free_port, write_config
from postwatch.testing.replica import BlogReplica
from test_digest_rendering import ARTIFACTS, FRAME
from test_feeds import fetch, make_changes

READER = "ada@example.org"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A daemon over a database with changes (2 new, 1 edit, 1 removal) and the digest mailed of
    them to one reader (an .eml in the outbox folder): (base URL, the digest message, the changes)."""
    folder = tmp_path_factory.mktemp("archive")
    with BlogReplica() as site:
        port = free_port()
        cli = Cli(write_config(folder, site.blog_url, None, listen_port=port))
        cli("check", check=True)
        cli("subscribers", "add", READER, "--cadence", "immediate", check=True)
        changed = make_changes(cli, site)
        cli("digest", check=True)
        [eml] = sorted((folder / "outbox").glob("*.eml"))
        message = message_from_bytes(eml.read_bytes(), policy=policy.default)
        with Daemon(cli, port) as daemon:
            yield f"http://127.0.0.1:{port}", message, changed, site
            assert daemon.stop() == 0


def _text(page: bytes) -> str:
    return htmlmod.unescape(re.sub(r"<[^>]+>", " ", page.decode()))


def _titles(page: str) -> list[str]:
    return sorted(htmlmod.unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<h3[^>]*>(.*?)</h3>", page, re.S))


def _no_reader_in(page: bytes) -> None:
    text = page.decode()
    assert "token=" not in text and READER not in text and "/unsubscribe" not in text and "/preferences" not in text


def test_the_archive_lists_each_change_with_its_diff_and_nothing_of_the_reader(served):
    base, _, changed, site = served
    status, headers, index = fetch(f"{base}/archive/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'href="/archive/link/"' in index.decode() and "Liberty in North Korea" in index.decode()
    assert "4 changes" in _text(index)
    _no_reader_in(index)

    status, headers, page = fetch(f"{base}/archive/link/")
    assert status == 200
    text = _text(page)
    for post in changed["new"]:
        assert post.title in text
    assert changed["updated"].title in text and changed["removed"].title in text
    # The edit with its diff, as the digest shows it; the removal says the page is gone.
    assert "<b>Added:</b> A completely new opening paragraph about the rescue.</p>" in page.decode()
    assert re.search(r"<b>Removed:</b> <del>[^<]+</del>", page.decode()) and "not found" in text
    for label in ("new", "updated", "removed"):
        assert f'class="badge b-{label}"' in page.decode()
    assert 'href="/"' in page.decode()                            # the way back to the front page
    _no_reader_in(page)
    assert fetch(f"{base}/archive/nope/")[0] == 404
    assert fetch(f"{base}/archive/link/?before=x")[0] == 404
    assert fetch(f"{base}/archive/d/9-1")[0] == 404 and fetch(f"{base}/archive/d/999999")[0] == 404
    assert fetch(f"{base}/archive")[0] == 200                     # redirected to /archive/

    # Korean by ?lang= or Accept-Language; the day headings in Korean dates.
    for url, extra in ((f"{base}/archive/link/?lang=ko", {}), (f"{base}/archive/link/", {"Accept-Language": "ko-KR,ko;q=0.9"})):
        status, headers, korean = fetch(url, extra)
        assert status == 200 and '<html lang="ko">' in korean.decode() and headers["Content-Language"] == "ko"
        assert re.search(r"\d{4}년 \d{1,2}월 \d{1,2}일", korean.decode())
    assert "Accept-Language" in headers["Vary"]


def test_archive_pages_answer_304_when_the_readers_copy_is_current(served):
    base, _, _, site = served
    for path in ("/archive/", "/archive/link/"):
        status, headers, body = fetch(f"{base}{path}")
        etag, modified = headers["ETag"], headers["Last-Modified"]
        for condition in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            answer = fetch(f"{base}{path}", condition)
            assert (answer[0], answer[2], answer[1]["ETag"]) == (304, b"", etag), (path, condition)
        older = format_datetime(parsedate_to_datetime(modified) - timedelta(seconds=1), usegmt=True)
        assert fetch(f"{base}{path}", {"If-Modified-Since": older})[0] == 200
        assert fetch(f"{base}{path}", {"If-None-Match": '"stale"'})[0] == 200


def test_view_in_browser_opens_the_same_items_without_any_token(served):
    base, message, changed, _ = served
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    link = re.search(r'<a href="([^"]+)"[^>]*>View in browser</a>', html).group(1)
    assert f"View in browser: {link}" in text
    assert link.startswith(f"{base}/archive/d/") and "token" not in link and READER not in link
    status, headers, page = fetch(link)
    assert status == 200 and headers["ETag"]
    assert _titles(page.decode()) == _titles(html) and len(_titles(html)) == 4
    _no_reader_in(page)
    # The mailed copy itself does carry the reader's link; the shared copy never does.
    assert "token=" in html and READER in html
    assert fetch(link, {"If-None-Match": headers["ETag"]})[0] == 304
    # Another reader of the same events gets the same address: it names the events, not the reader.
    assert parse_digest_id(link.rsplit("/", 1)[1]) == sorted(parse_digest_id(link.rsplit("/", 1)[1]))


def test_the_front_page_links_to_signup_the_archive_and_the_feeds(served):
    base, message, _, _ = served
    status, _, page = fetch(f"{base}/")
    assert status == 200
    body = page.decode()
    for href in ("/subscribe", "/archive/", "/feeds/all.atom", "/feeds/link.atom", "/archive/link/"):
        assert f'href="{href}"' in body, href
    for path in ("/subscribe", "/archive/", "/feeds/all.atom"):
        assert fetch(f"{base}{path}")[0] == 200, path
    # The unsubscribe page has the site's look and a way back to it.
    link = re.search(r"^Unsubscribe: (\S+)$", message.get_body(("plain",)).get_content(), re.M).group(1)
    status, _, unsubscribe = fetch(link)
    assert status == 200 and 'class="site"' in unsubscribe.decode() and 'href="/"' in unsubscribe.decode()
    status, _, refused = fetch(f"{base}/unsubscribe?token=forged")
    assert status == 403 and 'href="/"' in refused.decode()


@pytest.mark.parametrize("width", [375, 1280])
def test_the_archive_fits_a_phone_and_a_desktop(served, tmp_path, width):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is needed for this test (.ci/run installs it: apt-get install chromium)")
    base, message, _, _ = served
    link = re.search(r"^View in browser: (\S+)$", message.get_body(("plain",)).get_content(), re.M).group(1)
    for name, url in (("source", f"{base}/archive/link/"), ("digest", link)):
        page = fetch(url)[2].decode()
        measured = measure_in_frame(FRAME, page, width, tmp_path, ARTIFACTS / f"archive-{name}-{width}px.png")
        assert measured["view"] == width
        assert measured["scroll"] <= measured["view"], (name, measured)
        assert measured["screenshot"].stat().st_size > 5000


def test_a_digest_id_names_its_events_as_runs():
    class E:
        def __init__(self, seq):
            self.seq = seq

    assert digest_id([E(s) for s in (120, 121, 122, 130, 140, 141)]) == "120-122_130_140-141"
    assert parse_digest_id("120-122_130_140-141") == [120, 121, 122, 130, 140, 141]
    for bad in ("", "3-1", "5_4", "1-3_2", "a", "1-99999999", "1--2", "-1"):
        assert parse_digest_id(bad) is None, bad


def test_a_source_page_goes_back_page_by_page_and_forward_again(tmp_path, monkeypatch):
    from datetime import timedelta

    from digest import archive
    from digest.settings import DigestSettings
    from state import CheckInput, Store
    from test_state_changes import NOW, pages, post, seeded

    monkeypatch.setattr(archive, "PAGE_SIZE", 10)
    store = Store(str(tmp_path / "state.db"))
    try:
        seeded(store, 20)
        store.apply_check("blog", CheckInput(posts=pages(20) + [post(n, f"<p>Post {n}.</p>") for n in range(30, 55)]),
                          NOW + timedelta(minutes=1))
        store.release_source("blog")                  # 25 new posts at once were held as a flood
        settings = DigestSettings()
        seen, url, newer_links = [], "/archive/blog/", []
        while url:
            before = int(url.split("before=")[1]) if "before=" in url else None
            body = archive.source_page(store, settings, "blog", "en", before).body.decode()
            seen += re.findall(r'<h3 dir="auto"><a href="([^"]+)"', body)
            newer_links += re.findall(r'href="([^"]+)" rel="prev"', body)
            url = (re.findall(r'href="([^"]+)" rel="next"', body) or [""])[0]
        assert len(seen) == len(set(seen)) == 25           # every change once, newest first, in 3 pages
        assert seen[0] == "https://blog.example/p/54" and seen[-1] == "https://blog.example/p/30"
        assert newer_links[0] == "/archive/blog/" and len(newer_links) == 2
        # Back from the last page, one page at a time: the middle page again.
        middle = archive.source_page(store, settings, "blog", "en", int(newer_links[1].split("before=")[1])).body.decode()
        assert re.findall(r'<h3 dir="auto"><a href="([^"]+)"', middle) == seen[10:20]
        with pytest.raises(archive.NotInArchive):
            archive.source_page(store, settings, "nope", "en")
    finally:
        store.close()


# -- The feed of editions (/archive/editions.atom) and removed posts' last kept version ------------

ATOM_NS = {"a": "http://www.w3.org/2005/Atom"}


def test_the_feed_of_editions_links_each_days_changes_as_one_digest_page(served):
    import xml.etree.ElementTree as ET

    base, _, changed, _ = served
    status, headers, body = fetch(f"{base}/archive/editions.atom")
    assert status == 200 and headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert headers["ETag"] and headers["Last-Modified"] and headers["Cache-Control"] == "public, max-age=60"
    assert "Accept-Language" in headers["Vary"]
    feed = ET.fromstring(body)
    assert feed.find("a:title", ATOM_NS).text == "postwatch digest: editions"
    assert feed.find("a:link[@rel='self']", ATOM_NS).get("href") == f"{base}/archive/editions.atom"
    # Every change of the fixture was seen today: one edition, all four changes, at its digest page.
    [entry] = feed.findall("a:entry", ATOM_NS)
    assert entry.find("a:title", ATOM_NS).text.endswith(": 2 new, 1 updated, 1 removed")
    link = entry.find("a:link[@rel='alternate']", ATOM_NS).get("href")
    assert link.startswith(f"{base}/archive/d/") and len(parse_digest_id(link.rsplit("/", 1)[1])) == 4
    content = entry.find("a:content", ATOM_NS)
    assert content.get("type") == "html" and f'href="{base}/archive/link/"' in content.text
    assert "Liberty in North Korea</a>: 1 updated, 1 removed, 2 new" in content.text
    status, _, page = fetch(link)
    assert status == 200 and len(_titles(page.decode())) == 4
    for post in (*changed["new"], changed["updated"], changed["removed"]):
        assert post.title in _text(page)
    # Conditional GETs as for the other feeds and pages.
    assert fetch(f"{base}/archive/editions.atom", {"If-None-Match": headers["ETag"]})[0] == 304
    assert fetch(f"{base}/archive/editions.atom", {"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    # In Korean when asked; a language chosen by ?lang= stays on the links.
    status, headers, korean = fetch(f"{base}/archive/editions.atom?lang=ko")
    feed = ET.fromstring(korean)
    assert headers["Content-Language"] == "ko" and "새 소식" in feed.find("a:title", ATOM_NS).text
    entry = feed.find("a:entry", ATOM_NS)
    assert "새 글 2개" in entry.find("a:title", ATOM_NS).text
    assert entry.find("a:link[@rel='alternate']", ATOM_NS).get("href").endswith("?lang=ko")
    # The front page and the archive's index point to it.
    for path in ("/", "/archive/"):
        assert 'href="/archive/editions.atom"' in fetch(f"{base}{path}")[2].decode(), path


def test_editions_are_the_days_changes_in_the_digests_time_zone_newest_first():
    from datetime import datetime, timezone

    from digest import archive
    from digest.settings import DigestSettings

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def edition_events(self, limit):
            return self.rows[:limit]

        def list_sources(self):
            return []

    at = lambda d, h: datetime(2026, 11, d, h, tzinfo=timezone.utc)  # noqa: E731
    rows = [(9, "link", "new", at(3, 16)), (8, "other", "updated", at(3, 15)), (7, "link", "removed", at(3, 14)),
            (6, "link", "new", at(2, 23)), (5, "link", "new", at(2, 1)), (3, "link", "new", at(1, 12))]
    found = archive.editions(Rows(rows), DigestSettings(timezone="UTC"))
    assert [(e.day.isoformat(), e.id) for e in found] == [("2026-11-03", "7-9"), ("2026-11-02", "5-6"), ("2026-11-01", "3")]
    # Seoul is 9 hours ahead: 2 November 23:00 UTC is 3 November there.
    found = archive.editions(Rows(rows), DigestSettings(timezone="Asia/Seoul"))
    assert [(e.day.isoformat(), e.id) for e in found] == [("2026-11-04", "8-9"), ("2026-11-03", "6-7"),
                                                          ("2026-11-02", "5"), ("2026-11-01", "3")]
    assert len(archive.editions(Rows(rows), DigestSettings(), days=2)) == 2
    # When the read reaches its limit, the oldest day read may be partial: left out.
    monkeypatched = archive.MAX_DIGEST_EVENTS
    try:
        archive.MAX_DIGEST_EVENTS = 5
        assert [e.id for e in archive.editions(Rows(rows), DigestSettings(timezone="UTC"))] == ["7-9"]
    finally:
        archive.MAX_DIGEST_EVENTS = monkeypatched
    # An empty archive: a valid feed without entries, its date the epoch (so its ETag holds still).
    empty = archive.editions_feed(Rows([]), DigestSettings(), "en")
    assert b"<entry>" not in empty.body and b"1970-01-01T00:00:00Z" in empty.body and empty.last_modified is None


def test_a_removed_post_shows_its_last_kept_version_on_the_archive(served):
    base, _, changed, _ = served
    removed = changed["removed"]
    status, _, page = fetch(f"{base}/archive/link/")
    html = page.decode()
    seq = re.search(rf'<div class="post" id="e(\d+)">\s*<h3 dir="auto">{re.escape(str(escape(removed.title)))}</h3>',
                    html).group(1)
    entry = html.split(f'id="e{seq}"', 1)[1].split('<div class="post"', 1)[0]
    assert "The page now answers “not found”." in entry
    assert re.search(r'<div class="kept">\s*<p class="meta">The last version kept, read \d{1,2} \w+ \d{4}:</p>', entry)
    for paragraph in removed.body_paragraphs:
        assert f'<p dir="auto">{escape(paragraph)}</p>' in entry
    # The removal's own page (where a digest's removed title links to) shows it too, in Korean as well.
    for lang, says in (("en", "The last version kept, read"), ("ko", "마지막으로 보관한 버전")):
        status, _, single = fetch(f"{base}/archive/d/{seq}?lang={lang}")
        assert status == 200 and says in single.decode() and removed.body_paragraphs[0] in _text(single)
    # Nothing but the removed post carries a kept version.
    assert html.count('class="kept"') == 1


def test_postwatch_archive_writes_a_static_copy_a_web_server_can_serve(tmp_path):
    """`postwatch archive -o FOLDER` (issue 33: the archive "writable as static files"): the same
    pages as the daemon's, older pages in folders of their own instead of ?before= (a server of
    files ignores queries), every edition, the feed of editions; nothing of any reader."""
    with BlogReplica() as site:
        cli = Cli(write_config(tmp_path, site.blog_url, None))
        cli("check", check=True)
        cli("subscribers", "add", READER, "--cadence", "immediate", check=True)
        added = [site.add_post(f"Static archive post {n}", body_paragraphs=[f"Paragraph {n}."]) for n in range(35)]
        cli("check")
        cli("sources", "release", "link")          # 35 at once are held as a flood; the operator lets them go
        out = tmp_path / "www" / "archive"
        result = cli("archive", "-o", str(out), check=True)
    assert "archive written" in result.stdout, result.stdout
    index = (out / "index.html").read_text()
    assert 'href="/archive/link/"' in index
    first = (out / "link" / "index.html").read_text()
    older = re.search(r'href="/archive/link/(before-\d+)/"', first)
    assert older and "?before=" not in first, first[:2000]
    second = (out / "link" / older.group(1) / "index.html").read_text()
    shown = {t for t in (p.title for p in added) if t in first} | {t for t in (p.title for p in added) if t in second}
    assert shown == {p.title for p in added}                          # 35 changes over two pages
    [edition] = list((out / "d").iterdir())
    day = (edition / "index.html").read_text()
    assert all(p.title in day for p in added)
    feed = (out / "editions.atom").read_text()
    assert f"/archive/d/{edition.name}" in feed
    for page in out.rglob("*"):
        if page.is_file():
            _no_reader_in(page.read_bytes())
            assert page.stat().st_mode & 0o044 == 0o044                # readable by the web server
