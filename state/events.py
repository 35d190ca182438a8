"""Events: what subscribers hear of (new, updated, removed, restored posts), held or published.

A published event gets the next number of one sequence (`seq`); a subscriber's cursor is the
last number their digests covered. The functions taking `conn` run inside another storage
module's transaction (a check, a release, a digest)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from state.changes import EventDraft, HeldEvent
from state.database import Database, as_utc
from state.records import EventRecord, Subscriber
from state.schema import counters, events, sources


def read_events(conn: Connection, query) -> list[EventRecord]:
    """The events a query over the events table selects, with their source's name."""
    rows = conn.execute(query.add_columns(sources.c.name.label("source_name"))
                        .select_from(events.join(sources, events.c.source_id == sources.c.id))).mappings()
    return [EventRecord(id=r["id"], seq=r["seq"], source=r["source_name"], kind=r["kind"], url=r["url"],
                        title=r["title"], published=as_utc(r["published_at"]), summary=r["summary"],
                        body_html=r["body_html"], diff=json.loads(r["diff"]) if r["diff"] else None,
                        created_at=as_utc(r["created_at"]), status=r["status"]) for r in rows]


def pending_query(subscriber: Subscriber):
    """The published events past the subscriber's cursor, of the sources they follow."""
    query = (select(*events.c).where(events.c.status == "published", events.c.seq > subscriber.cursor)
             .order_by(events.c.seq))
    if subscriber.sources:
        query = query.where(sources.c.name.in_(subscriber.sources))
    return query


def last_seq(conn: Connection) -> int:
    return conn.execute(select(counters.c.value).where(counters.c.name == "event_seq")).scalar()


def next_seqs(conn: Connection, count: int) -> list[int]:
    if count == 0:
        return []
    last = conn.execute(update(counters).where(counters.c.name == "event_seq")
                        .values(value=counters.c.value + count).returning(counters.c.value)).scalar_one()
    return list(range(last - count + 1, last + 1))


def store_events(conn: Connection, source_id: int, source: str, drafts: list[EventDraft], now: datetime,
                 held: bool) -> list[EventRecord]:
    seqs: list[int | None] = [None] * len(drafts) if held else list(next_seqs(conn, len(drafts)))
    status = "held" if held else "published"
    created = []
    for draft, seq in zip(drafts, seqs):
        event_id = conn.execute(insert(events).values(
            source_id=source_id, seq=seq, created_at=now, status=status, post_id=draft.post_id, kind=draft.kind,
            url=draft.url, title=draft.title, published_at=draft.published_at, summary=draft.summary,
            body_html=draft.body_html, version_hash=draft.version_hash, previous_hash=draft.previous_hash,
            diff=json.dumps(draft.diff) if draft.diff else None)).inserted_primary_key[0]
        created.append(EventRecord(id=event_id, seq=seq, source=source, kind=draft.kind, url=draft.url,
                                   title=draft.title, published=as_utc(draft.published_at), summary=draft.summary,
                                   body_html=draft.body_html, diff=draft.diff, created_at=now, status=status))
    return created


def held_events(conn: Connection, source_id: int, kind: str | None = None) -> list[HeldEvent]:
    query = select(events.c.id, events.c.kind).where(events.c.source_id == source_id, events.c.status == "held")
    if kind:
        query = query.where(events.c.kind == kind)
    return [HeldEvent(r.id, r.kind) for r in conn.execute(query.order_by(events.c.id))]


def held_removals(conn: Connection, source_id: int) -> dict[int, int]:
    """Post id -> its held "removed" event."""
    return {r.post_id: r.id for r in conn.execute(select(events.c.id, events.c.post_id).where(
        events.c.source_id == source_id, events.c.status == "held", events.c.kind == "removed"))}


def held_edits(conn: Connection, source_id: int) -> dict[int, list]:
    """Post id -> its held "updated" events (id, title, version_hash), oldest first."""
    held: dict[int, list] = {}
    for r in conn.execute(select(events.c.id, events.c.post_id, events.c.title, events.c.version_hash)
                          .where(events.c.source_id == source_id, events.c.status == "held",
                                 events.c.kind == "updated").order_by(events.c.id)):
        held.setdefault(r.post_id, []).append(r)
    return held


def dismiss_events(conn: Connection, ids: Iterable[int]) -> None:
    ids = list(ids)
    if ids:
        conn.execute(update(events).where(events.c.id.in_(ids)).values(status="dismissed"))


def publish_held(conn: Connection, ids: list[int]) -> int:
    """Publish these held events, numbered in this order."""
    for event_id, seq in zip(ids, next_seqs(conn, len(ids))):
        conn.execute(update(events).where(events.c.id == event_id).values(seq=seq, status="published"))
    return len(ids)


class EventStorage(Database):
    def history(self, source: str | None = None, limit: int = 50) -> list[EventRecord]:
        query = select(*events.c).order_by(events.c.id.desc()).limit(limit)
        if source:
            query = query.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return read_events(conn, query)

    def source_events(self, source: str, status: str | None = None, limit: int = 50) -> list[EventRecord]:
        """A source's newest events (held, published, dismissed; or only those of `status`)."""
        query = select(*events.c).where(sources.c.name == source).order_by(events.c.id.desc()).limit(limit)
        if status:
            query = query.where(events.c.status == status)
        with self.engine.connect() as conn:
            return read_events(conn, query)

    def newest_event_seq(self) -> int:
        """The seq of the newest event (0: none yet): a subscriber whose cursor is here is up to date."""
        with self.engine.connect() as conn:
            return last_seq(conn) or 0

    def pending_events(self, subscriber: Subscriber) -> list[EventRecord]:
        with self.engine.connect() as conn:
            return read_events(conn, pending_query(subscriber))

    def feed_events(self, source: str | None, limit: int) -> list[EventRecord]:
        """The newest `limit` published events (of one source, or of all), last published first:
        what subscribers were told, never a held or dismissed change."""
        # Ids first: sorting whole rows (bodies, diffs) of a 10,000-event source took SQLite 4x longer.
        newest = (select(events.c.id).select_from(events.join(sources, events.c.source_id == sources.c.id))
                  .where(events.c.status == "published").order_by(events.c.seq.desc()).limit(limit))
        if source:
            newest = newest.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return read_events(conn, select(*events.c).where(events.c.id.in_(newest)).order_by(events.c.seq.desc()))

    # -- the web archive (postwatch/web.py): published events only, what subscribers were told --
    def events_by_seqs(self, seqs: Iterable[int]) -> list[EventRecord]:
        """The published events of these seqs (a digest's), in seq order; a seq whose event is
        gone (retention) or was never published is left out."""
        wanted = sorted(set(seqs))
        found: list[EventRecord] = []
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):        # SQLite's and psycopg's parameter limits
                chunk = wanted[start:start + 500]
                found += read_events(conn, select(*events.c).where(events.c.status == "published",
                                                                   events.c.seq.in_(chunk)).order_by(events.c.seq))
        return found

    def source_changes(self, source: str, limit: int, before: int | None = None) -> list[EventRecord]:
        """A source's newest `limit` published events with a seq below `before` (all when None),
        newest first: a page of its archive, keyed by seq so pages hold still as events arrive."""
        newest = (select(events.c.id).select_from(events.join(sources, events.c.source_id == sources.c.id))
                  .where(events.c.status == "published", sources.c.name == source)
                  .order_by(events.c.seq.desc()).limit(limit))
        if before is not None:
            newest = newest.where(events.c.seq < before)
        with self.engine.connect() as conn:
            return read_events(conn, select(*events.c).where(events.c.id.in_(newest)).order_by(events.c.seq.desc()))

    def archive_summary(self) -> dict[str, tuple[int, datetime | None]]:
        """Per source name: how many published events it has, and when the newest was seen."""
        from sqlalchemy import func

        query = (select(sources.c.name, func.count(events.c.id), func.max(events.c.created_at))
                 .select_from(events.join(sources, events.c.source_id == sources.c.id))
                 .where(events.c.status == "published").group_by(sources.c.name))
        with self.engine.connect() as conn:
            return {name: (count, as_utc(newest)) for name, count, newest in conn.execute(query)}

    def source_changes_after(self, source: str, after: int, limit: int) -> list[EventRecord]:
        """A source's first `limit` published events with a seq above `after`, oldest first."""
        first = (select(events.c.id).select_from(events.join(sources, events.c.source_id == sources.c.id))
                 .where(events.c.status == "published", sources.c.name == source, events.c.seq > after)
                 .order_by(events.c.seq).limit(limit))
        with self.engine.connect() as conn:
            return read_events(conn, select(*events.c).where(events.c.id.in_(first)).order_by(events.c.seq))

    def edition_events(self, limit: int) -> list[tuple[int, str, str, datetime]]:
        """(seq, source name, kind, created_at) of the newest `limit` published events, newest
        first: what the archive's feed of editions (digest/archive.py) groups into days. No
        bodies or diffs: a page of the feed reads only these four columns."""
        query = (select(events.c.seq, sources.c.name, events.c.kind, events.c.created_at)
                 .select_from(events.join(sources, events.c.source_id == sources.c.id))
                 .where(events.c.status == "published").order_by(events.c.seq.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [(seq, name, kind, as_utc(created)) for seq, name, kind, created in conn.execute(query)]

    def kept_versions(self, seqs: Iterable[int]) -> dict[int, tuple[str, str, datetime]]:
        """For each removed event among these seqs: the last version of its post kept before the
        removal was seen, as (title, text, fetched_at); the text is paragraphs separated by blank
        lines. A post's own page ("page" origin) wins over a feed's summary of it. A removal whose
        post or versions are gone (retention, `sources remove`) has no entry."""
        from state.schema import post_versions

        wanted = sorted(set(seqs))
        best: dict[int, tuple] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(
                    select(events.c.seq, post_versions.c.id, post_versions.c.origin, post_versions.c.title,
                           post_versions.c.text, post_versions.c.fetched_at)
                    .select_from(events.join(post_versions, post_versions.c.post_id == events.c.post_id))
                    .where(events.c.kind == "removed", events.c.status == "published",
                           events.c.seq.in_(wanted[start:start + 500]),
                           post_versions.c.fetched_at <= events.c.created_at))
                for seq, version_id, origin, title, text_, fetched in rows:
                    rank = (origin == "page", version_id)
                    if seq not in best or rank > best[seq][0]:
                        best[seq] = (rank, title, text_, as_utc(fetched))
        return {seq: (title, text_, fetched) for seq, (_, title, text_, fetched) in best.items()}
