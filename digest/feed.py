"""The Atom feed of changes (RFC 4287): one entry per published event — a post that is new,
edited (with its diff), removed or restored — for one source or for all of them.

The daemon serves it at /feeds/<source>.atom and /feeds/all.atom (postwatch/web.py), and
`postwatch feed` writes it for static hosting. The XML is built with xml.etree, so the
serialiser escapes every title, name and URL; an entry's content is the digest's rendering of
the change (digest/templates/feed_entry.html.j2, autoescaped), sanitised with nh3.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

from digest.render import clean_text, render_change
from state import EventRecord, SourceRecord

ATOM = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml; charset=utf-8"
ENTRY_TITLES = {"new": "New", "updated": "Updated", "removed": "Removed", "restored": "Back online"}
# XML 1.0 cannot carry these at all (not even as character references): a scraped title with a
# stray control character would make the whole feed unreadable.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# RFC 3986's reserved and unreserved characters, and "%" of the escapes already made.
_URI_CHARACTERS = ":/?#[]@!$&'()*+,;=-._~%"
_STRAY_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")

ET.register_namespace("", ATOM)


class UnknownFeed(LookupError):
    """No feed by that name; str() is one line."""

    def __init__(self, name: str):
        super().__init__(f"no such source: {name} (a feed is a source's name, or 'all')")


@dataclass(frozen=True)
class FeedSettings:
    public_url: str = "http://127.0.0.1:8780/feeds/"     # where the feeds are served, ending in "/"
    site_name: str = "postwatch"
    templates_dir: Path | None = None                    # the operator's feed_entry.html.j2, if any
    version: str = ""                                    # postwatch's, for <generator>

    def url(self, name: str) -> str:
        return f"{self.public_url}{quote(name)}.atom"


@dataclass(frozen=True)
class AtomFeed:
    body: bytes
    entries: int
    updated: datetime | None        # the newest entry's; None for a feed with no entry yet
    etag: str                       # a strong validator of `body`, without the quotes

    @property
    def last_modified(self) -> datetime | None:
        """`updated` to the second, as HTTP dates carry it."""
        return self.updated.replace(microsecond=0) if self.updated else None


def entry_id(event: EventRecord) -> str:
    """Stable across runs and renderings (stored values only), and different for the same event
    number in another postwatch's database: the detection time, to the microsecond, is in it."""
    name = f"{event.url}#postwatch:{event.source}:{event.id}:{event.kind}:{_timestamp(event.created_at, precise=True)}"
    return uuid.uuid5(uuid.NAMESPACE_URL, name).urn


def source_feed_id(name: str, url: str) -> str:
    """A source's feed keeps its id wherever it is served from."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#postwatch-feed:{name}").urn


def render_feed(events: Sequence[EventRecord], settings: FeedSettings, *, self_url: str,
                source: SourceRecord | None = None, sources: Mapping[str, SourceRecord] | None = None) -> AtomFeed:
    """The feed of `events` (newest first): of `source`, or of every source when it is None, with
    `sources` (by name) naming each entry's source."""
    updated = max((e.created_at for e in events), default=None)
    feed = ET.Element(_atom("feed"))
    if source is not None:
        title = source.title or source.name
        _text(feed, "id", source_feed_id(source.name, source.url))
        _text(feed, "title", f"{title}: new, edited and removed posts")
        _text(feed, "subtitle", f"Changes to {source.url} seen by {settings.site_name}")
        _link(feed, self_url, "self", "application/atom+xml")
        _link(feed, source.url, "alternate", "text/html")
        _author(feed, title, source.url)
    else:
        _text(feed, "id", uuid.uuid5(uuid.NAMESPACE_URL, self_url).urn)    # no one source to name it by
        _text(feed, "title", f"{settings.site_name}: new, edited and removed posts")
        _text(feed, "subtitle", f"Changes to every blog {settings.site_name} watches")
        _link(feed, self_url, "self", "application/atom+xml")
        _author(feed, settings.site_name, None)
    # A feed with no entry yet has changed never: the epoch keeps its body, and so its ETag, the same.
    _text(feed, "updated", _timestamp(updated or datetime(1970, 1, 1, tzinfo=timezone.utc)))
    generator = _text(feed, "generator", "postwatch")
    if settings.version:
        generator.set("version", settings.version)
    for event in events:
        author = None
        if source is None:          # the all-sources feed says whose post each entry is about
            origin = (sources or {}).get(event.source)
            author = (origin.title or origin.name, origin.url) if origin is not None else (event.source, None)
        feed.append(_entry(event, settings, author))
    ET.indent(feed)
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"
    return AtomFeed(body=body, entries=len(events), updated=updated, etag=hashlib.sha256(body).hexdigest()[:32])


def _entry(event: EventRecord, settings: FeedSettings, author: tuple[str, str | None] | None) -> ET.Element:
    entry = ET.Element(_atom("entry"))
    _text(entry, "id", entry_id(event))
    _text(entry, "title", f"{ENTRY_TITLES.get(event.kind, event.kind.capitalize())}: {clean_text(_xml(event.title))}")
    _text(entry, "updated", _timestamp(event.created_at))
    _link(entry, event.url, "alternate", "text/html")
    if author is not None:
        _author(entry, *author)
    ET.SubElement(entry, _atom("category"), term=event.kind)
    content = _text(entry, "content", render_change(event, settings).strip())
    content.set("type", "html")
    return entry


def write_feed(path: Path, body: bytes) -> None:
    """Replace `path` with `body` at once (a web server never serves half a feed), through a
    temporary file beside it. A feed is public: a new file is readable by all (0644, whatever
    the umask), a replaced one keeps its mode. Raises OSError; no folder is created."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _atom(tag: str) -> str:
    return f"{{{ATOM}}}{tag}"


def _xml(text: str) -> str:
    return _NOT_XML.sub("", text)


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, _atom(tag))
    element.text = _xml(text)
    return element


def _iri(url: str) -> str:
    """`url` as RFC 4287 requires an href to be (an IRI): characters no URI may hold, such as a
    space or "<" in a scraped link, percent-encoded; existing escapes kept."""
    return _STRAY_PERCENT.sub("%25", quote(url, safe=_URI_CHARACTERS))


def _link(parent: ET.Element, href: str, rel: str, media_type: str) -> None:
    ET.SubElement(parent, _atom("link"), rel=rel, type=media_type, href=_iri(href))


def _author(parent: ET.Element, name: str, uri: str | None) -> None:
    author = ET.SubElement(parent, _atom("author"))
    _text(author, "name", name)
    if uri:
        _text(author, "uri", _iri(uri))


def _timestamp(value: datetime, *, precise: bool = False) -> str:
    """RFC 3339 in UTC, e.g. 2025-10-08T09:30:00Z."""
    spec = "microseconds" if precise else "seconds"
    return value.astimezone(timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")
