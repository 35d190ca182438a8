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
