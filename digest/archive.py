"""The web archive of changes, served by the daemon (postwatch/web.py): an index of sources
(/archive/), each source's changes by the day they were seen, paginated (/archive/<source>/),
and every digest edition at a stable address (/archive/d/<id>).

What a digest id is: the seqs of the events it told of, as runs (digest.render.digest_id), so
"/archive/d/120-185". Every reader of the same events gets the same address, and it carries
nothing of the reader — no unsubscribe or preferences token, no address (listmonk #1023: its
shared "view in browser" copy kept the reader's unsubscribe link). The id is guessable, on
purpose: the archive shows changes to public blogs, which each source's page lists anyway; a
private archive would need a random id stored per edition instead.

The pages are rendered with the digest's own post shaping (digest.render._post, through
archive_groups/archive_days) and the digest's post macro (_post.html.j2), in the pages' look
(page.html.j2), in English or Korean; each answer has a strong ETag (of its body) and a
Last-Modified (its newest change), as the Atom feeds do.

The feed of editions (/archive/editions.atom, `editions_feed`): what "an edition" is for a feed
reader. A mailed digest covers what is new *for one reader* (their cursor, their sources, their
schedule), so no two readers need share one. The feed's edition is the public one: every change
seen on one calendar day (in [digest] default_timezone), of every source, at its /archive/d/<id>
address, newest day first, EDITION_DAYS days at most. A day's entry keeps its id all day; its
link and its `updated` move on as the day's changes arrive (a held flood released later joins
the day it was seen). A day with more than MAX_DIGEST_EVENTS changes links to its newest ones.
"""
from __future__ import annotations

import hashlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from markupsafe import escape

from digest.i18n import tr
from digest.render import (MAX_DIGEST_EVENTS, _counts_line, _date, archive_days, archive_groups, clean_text, digest_id,
                           parse_digest_id, render_site_page)
from digest.settings import DigestSettings

PAGE_SIZE = 30                     # changes per page of a source's archive
EDITION_DAYS = 30                  # editions (days with changes) in the feed of editions


class NotInArchive(LookupError):
    """No such source or digest (404)."""


@dataclass(frozen=True)
class ArchivePage:
    body: bytes
    last_modified: datetime | None
    etag: str                      # strong, of the body (without quotes)

    @classmethod
    def of(cls, html: str, newest: datetime | None) -> "ArchivePage":
        body = html.encode("utf-8")
        return cls(body=body, last_modified=newest.replace(microsecond=0) if newest else None,
                   etag=hashlib.sha256(body).hexdigest()[:32])


def _root(settings: DigestSettings) -> str:
    return f"{settings.pages_root}/archive/"


def source_url(settings: DigestSettings, source: str) -> str:
    return f"{_root(settings)}{quote(source, safe='')}/"


def _feed_url(settings: DigestSettings, source: str) -> str:
    return f"{settings.pages_root}/feeds/{quote(source, safe='')}.atom"


def _with_lang(url: str, lang: str, explicit: bool) -> str:
    """A link within the archive keeps a language chosen by ?lang=."""
    if not explicit:
        return url
    return f"{url}{'&' if '?' in url else '?'}lang={lang}"


def index_page(store, settings: DigestSettings, lang: str, explicit_lang: bool = False) -> ArchivePage:
    summary = store.archive_summary()
    zone = ZoneInfo(settings.timezone)
    sources = []
    for record in store.list_sources():
        count, newest = summary.get(record.name, (0, None))
        sources.append({"title": clean_text(record.title or record.name), "count": count,
                        "latest": _date(newest, zone, lang), "url": _with_lang(source_url(settings, record.name), lang, explicit_lang),
                        "feed_url": _feed_url(settings, record.name)})
    newest = max((n for _, n in summary.values() if n is not None), default=None)
    html = render_site_page("archive_index.html.j2", settings, lang, title=tr(lang, "Archive of changes"), sources=sources,
                            editions_url=editions_url(settings))
    return ArchivePage.of(html, newest)


def _page_url(here: str, before: int, static: bool) -> str:
    """The address of a source's archive page that starts below `before`: a query for the daemon,
    a folder of its own in a static copy (a web server serving files ignores queries)."""
    return f"{here}before-{before}/" if static else f"{here}?before={before}"


def source_page(store, settings: DigestSettings, name: str, lang: str, before: int | None = None,
                explicit_lang: bool = False, static: bool = False) -> ArchivePage:
    record = next((s for s in store.list_sources() if s.name == name), None)
    if record is None:
        raise NotInArchive(name)
    found = store.source_changes(name, PAGE_SIZE + 1, before)
    shown, older = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    here = source_url(settings, name)
    newer_url = ""
    if before is not None:
        # The changes at and above `before`, oldest first: the page before this one is the first
        # page when they fit on one, else the page that ends with the PAGE_SIZE of them nearest this one.
        newer = store.source_changes_after(name, before - 1, PAGE_SIZE + 1)
        newer_url = _page_url(here, newer[PAGE_SIZE].seq, static) if len(newer) > PAGE_SIZE else here
    older_url = _page_url(here, shown[-1].seq, static) if older else ""
    title = clean_text(record.title or record.name)
    kept = store.kept_versions([e.seq for e in shown if e.kind == "removed"])
    html = render_site_page("archive_source.html.j2", settings, lang, title=tr(lang, "Changes to %(source)s", source=title),
                            days=archive_days(shown, settings, lang, kept), blog_url=record.url,
                            feed_url=_feed_url(settings, name), index_url=_with_lang(_root(settings), lang, explicit_lang),
                            newer_url=newer_url and _with_lang(newer_url, lang, explicit_lang),
                            older_url=older_url and _with_lang(older_url, lang, explicit_lang))
    return ArchivePage.of(html, max((e.created_at for e in shown), default=None))


def digest_page(store, settings: DigestSettings, digest_id: str, lang: str, explicit_lang: bool = False) -> ArchivePage:
    """A digest edition: the same items as the mailed digest, all of them in full, and nothing
    of any one reader."""
    seqs = parse_digest_id(digest_id)
    if not seqs:
        raise NotInArchive(digest_id)
    events = store.events_by_seqs(seqs)
    if not events:
        raise NotInArchive(digest_id)
    groups = archive_groups(events, settings, lang, store.kept_versions([e.seq for e in events if e.kind == "removed"]))
    for group in groups:
        group["archive_url"] = _with_lang(source_url(settings, group["source"]), lang, explicit_lang)
    zone = ZoneInfo(settings.timezone)
    newest = max(e.created_at for e in events)
    oldest = min(e.created_at for e in events)
    seen = _date(newest, zone, lang)
    if _date(oldest, zone, lang) != seen:
        seen = f"{_date(oldest, zone, lang)} – {seen}"
    headline = _counts_line(events, ("new", "updated", "removed", "restored"), lang)
    html = render_site_page("archive_digest.html.j2", settings, lang, title=headline[:1].upper() + headline[1:],
                            groups=groups, seen=seen, missing=len(seqs) - len(events),
                            index_url=_with_lang(_root(settings), lang, explicit_lang))
    return ArchivePage.of(html, newest)


def home_page(store, settings: DigestSettings, lang: str, signup: bool) -> ArchivePage:
    """GET /: the site's name, the way to subscribe, the archive and the feeds."""
    root = settings.pages_root
    sources = [{"title": clean_text(s.title or s.name), "url": source_url(settings, s.name), "feed_url": _feed_url(settings, s.name)}
               for s in store.list_sources()]
    html = render_site_page("home.html.j2", settings, lang, title=clean_text(settings.site_name),
                            subscribe_url=f"{root}/subscribe" if signup else "", archive_url=_root(settings),
                            editions_url=editions_url(settings),
                            all_feed_url=f"{root}/feeds/all.atom", sources=sources)
    return ArchivePage.of(html, None)


# --------------------------------------------------------------------------------------------
# The feed of editions: /archive/editions.atom
# --------------------------------------------------------------------------------------------
class EditionEvent(NamedTuple):
    seq: int
    source: str
    kind: str
    created_at: datetime


@dataclass(frozen=True)
class Edition:
    day: date
    events: list[EditionEvent]            # newest first

    @property
    def id(self) -> str:
        return digest_id(self.events)

    @property
    def updated(self) -> datetime:
        return max(e.created_at for e in self.events)


def editions_url(settings: DigestSettings) -> str:
    return f"{_root(settings)}editions.atom"


def editions(store, settings: DigestSettings, days: int = EDITION_DAYS) -> list[Edition]:
    """The newest `days` editions, newest first: the published changes grouped by the day they
    were seen in the digest's time zone. Read from the newest MAX_DIGEST_EVENTS changes; when
    that many came, the oldest day read may be partial and is left out (unless it is the only one)."""
    rows = [EditionEvent(*row) for row in store.edition_events(MAX_DIGEST_EVENTS)]
    zone = ZoneInfo(settings.timezone)
    by_day: dict[date, list[EditionEvent]] = {}
    for row in rows:
        by_day.setdefault(row.created_at.astimezone(zone).date(), []).append(row)
    found = [Edition(day, events) for day, events in sorted(by_day.items(), reverse=True)]
    if len(rows) >= MAX_DIGEST_EVENTS and len(found) > 1:
        found.pop()
    return found[:days]


def editions_feed(store, settings: DigestSettings, lang: str, explicit_lang: bool = False) -> ArchivePage:
    """The Atom feed (RFC 4287) of the digest's editions: one entry per day with changes, linking
    to that day's page on the archive (/archive/d/<id>), its content the day's counts per source,
    each linked to the source's archive page. In `lang`; the body is an ArchivePage for its
    validators (served as Atom by postwatch/web.py)."""
    from digest.feed import _atom, _author, _link, _text, _timestamp

    found = editions(store, settings)
    # Absolute addresses (settings.archive_url, on the listen address without a public one), as
    # feed readers resolve no relative link reliably; the pages themselves link relatively.
    root = settings.archive_url or _root(settings)
    zone = ZoneInfo(settings.timezone)
    site = clean_text(settings.site_name)
    self_url = f"{root}editions.atom"
    newest = max((e.updated for e in found), default=None)
    feed = ET.Element(_atom("feed"))
    feed.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
    _text(feed, "id", uuid.uuid5(uuid.NAMESPACE_URL, f"{self_url}#postwatch-editions").urn)
    _text(feed, "title", tr(lang, "%(site)s digest: editions", site=site))
    _text(feed, "subtitle", tr(lang, "Every day's new, edited and removed posts, as one digest on the web."))
    _link(feed, _with_lang(self_url, lang, explicit_lang), "self", "application/atom+xml")
    _link(feed, _with_lang(root, lang, explicit_lang), "alternate", "text/html")
    _author(feed, site, None)
    _text(feed, "updated", _timestamp(newest or datetime(1970, 1, 1, tzinfo=timezone.utc)))
    _text(feed, "generator", "postwatch")
    for edition in found:
        entry = ET.SubElement(feed, _atom("entry"))
        _text(entry, "id", uuid.uuid5(uuid.NAMESPACE_URL, f"{self_url}#{edition.day.isoformat()}").urn)
        counts = _counts_line(edition.events, ("new", "updated", "removed", "restored"), lang)
        _text(entry, "title", f"{_date(edition.updated, zone, lang)}: {counts}")
        _text(entry, "updated", _timestamp(edition.updated))
        _link(entry, _with_lang(f"{root}d/{edition.id}", lang, explicit_lang), "alternate", "text/html")
        by_source: dict[str, list[EditionEvent]] = {}
        for event in edition.events:
            by_source.setdefault(event.source, []).append(event)
        items = []
        for source, events in by_source.items():
            link = _with_lang(f"{root}{quote(source, safe='')}/", lang, explicit_lang)
            title = clean_text(settings.source_titles.get(source, source))
            counts = _counts_line(events, ("updated", "removed", "restored", "new"), lang)
            items.append(f'<li><a href="{escape(link)}">{escape(title)}</a>: {escape(counts)}</li>')
        content = _text(entry, "content", f"<ul>{''.join(items)}</ul>")
        content.set("type", "html")
    ET.indent(feed)
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"
    return ArchivePage(body=body, last_modified=newest.replace(microsecond=0) if newest else None,
                       etag=hashlib.sha256(body).hexdigest()[:32])


# --------------------------------------------------------------------------------------------
# A static copy: `postwatch archive -o FOLDER`
# --------------------------------------------------------------------------------------------
@dataclass
class StaticArchive:
    pages: int = 0
    editions: int = 0
    sources: int = 0


def write_static(store, settings: DigestSettings, folder, lang: str = "en", write=None) -> StaticArchive:
    """The archive as files, for operators who publish with a web server (like `postwatch feed
    -o`): FOLDER/index.html, FOLDER/<source>/index.html and its older pages
    FOLDER/<source>/before-<seq>/index.html, FOLDER/d/<id>/index.html for every edition of the
    feed of editions, and FOLDER/editions.atom. The pages link as the daemon's do (under
    [unsubscribe] public_url, else under /archive/ of the same site), so FOLDER is served as
    /archive/. `write(path, body)` writes one file (digest.feed.write_feed: replaced in one step)."""
    from pathlib import Path

    from digest.feed import write_feed

    write = write or write_feed
    root = Path(folder)
    done = StaticArchive()

    def put(relative: str, page: ArchivePage) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, page.body)
        done.pages += 1

    put("index.html", index_page(store, settings, lang))
    for record in store.list_sources():
        folder_name = quote(record.name, safe="")
        before = None
        while True:
            put(f"{folder_name}/index.html" if before is None else f"{folder_name}/before-{before}/index.html",
                source_page(store, settings, record.name, lang, before, static=True))
            page = store.source_changes(record.name, PAGE_SIZE + 1, before)
            if len(page) <= PAGE_SIZE:
                break
            before = page[PAGE_SIZE - 1].seq
        done.sources += 1
    for edition in editions(store, settings):
        put(f"d/{edition.id}/index.html", digest_page(store, settings, edition.id, lang))
        done.editions += 1
    put("editions.atom", editions_feed(store, settings, lang))
    return done
