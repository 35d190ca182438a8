"""The Store: every SQL statement postwatch runs (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from sqlalchemy import and_, bindparam, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from state.diff import paragraph_diff
from state.normalize import normalize, split_text
from state.schema import (alerts, counters, events, http_validators, outbox, post_versions, posts, robots_cache,
                          sources, subscribers)

# ------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------


class ObservedPost(Protocol):          # crawler.items.PostItem satisfies this
    url: str
    title: str
    published: datetime | None
    body_html: str | None
    summary: str | None
    origin: str


@dataclass
class SourceRecord:
    name: str
    url: str
    kind: str = "auto"
    feed_url: str | None = None
    sitemap_url: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    origin: str = "config"


@dataclass
class KnownPost:
    url: str
    title: str
    content_hash: str | None
    status: str


@dataclass
class CrawlState:
    baseline_done: bool
    known: dict[str, KnownPost]
    validators: dict[str, tuple[str | None, str | None]]
    robots: dict[str, tuple[bytes, datetime]]
    last_full_sweep_at: datetime | None


@dataclass
class CheckInput:
    posts: list[ObservedPost]
    not_modified: bool = False
    unchanged_urls: set[str] = field(default_factory=set)
    gone: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    robots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    full_sweep: bool = False
    baseline: bool = False


@dataclass
class EventRecord:
    id: int
    seq: int | None
    source: str
    kind: str
    url: str
    title: str
    published: datetime | None
    summary: str | None
    body_html: str | None
    diff: dict | None
    created_at: datetime
    status: str


@dataclass
class ApplyResult:
    events: list[EventRecord]
    held: bool
    hold_reason: str | None
    baseline: bool


@dataclass
class Subscriber:
    id: int
    email: str
    cadence: str
    send_time: str
    timezone: str
    weekday: int | None
    sources: list[str] | None
    status: str
    cursor: int
    created_at: datetime


@dataclass
class ComposedMessage:
    message_id: str
    subject: str
    to_addr: str
    raw: bytes


@dataclass
class OutboxItem:
    id: int
    subscriber_id: int | None
    to_addr: str
    message_id: str
    raw: bytes
    attempts: int
    created_at: datetime


@dataclass
class SourceStatus:
    name: str
    url: str
    posts: int
    last_check_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    degraded: bool
    degraded_reason: str | None
    held_events: int


class AlreadyRunning(RuntimeError):
    """Another daemon holds the instance lock of this database."""


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


_ORIGIN_RANK = {"listing": 0, "feed": 1, "page": 2}


def _richest_per_url(items) -> list:
    """One observation per URL: a page's body beats a feed's copy beats a listing line."""
    best: dict[str, Any] = {}
    for item in items:
        current = best.get(item.url)
        if current is None or _ORIGIN_RANK.get(item.origin, 0) > _ORIGIN_RANK.get(current.origin, 0):
            best[item.url] = item
    return list(best.values())


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------
class Store:
    """State of every source, post, event, subscriber and queued message.

    `url`: a bare file path or `sqlite:///path` (WAL, foreign keys, 5 s busy timeout), or
    `postgresql+psycopg://...`. Opening runs the Alembic migrations to the newest revision.
    """

    MIN_FLOOD_EVENTS = 4
    COMPOSE_BATCH = 200

    def __init__(self, url: str, *, removal_confirm_after: timedelta = timedelta(hours=1),
                 flood_share: float = 0.30, send_lease: timedelta = timedelta(minutes=5),
                 migrate: bool = True, connect_args: dict | None = None):
        if "://" not in url:
            url = "sqlite:///" + str(Path(url).resolve())
        if url.startswith("postgresql://"):
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.url = url
        self.removal_confirm_after = removal_confirm_after
        self.flood_share = flood_share
        self.send_lease = send_lease
        self.is_sqlite = url.startswith("sqlite")
        self.engine = self._make_engine(url, connect_args or {})
        if migrate:
            self.migrate()

    # -- lifecycle -------------------------------------------------------------------------
    def _make_engine(self, url: str, connect_args: dict) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5, **connect_args})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            # Let SQLAlchemy's begin() issue BEGIN IMMEDIATE: a writer takes the write lock up
            # front, so two processes never deadlock upgrading a read lock.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def migrate(self, revision: str = "head") -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(resources.files("state") / "migrations"))
        with self.engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if connection.in_transaction():
                connection.commit()

    def schema_revision(self) -> str | None:
        with self.engine.connect() as connection:
            try:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                return None

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def instance_lock(self):
        """Held by the daemon for its whole life: one daemon per database."""
        if self.is_sqlite:
            lock_path = self.url.removeprefix("sqlite:///") + ".lock"
            handle = open(lock_path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise AlreadyRunning(f"another postwatch daemon is using {self.url.removeprefix('sqlite:///')}") from None
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        key = int.from_bytes(hashlib.sha256(b"postwatch-daemon").digest()[:7], "big")
        connection = self.engine.connect()
        try:
            got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            connection.commit()
            if not got:
                raise AlreadyRunning(f"another postwatch daemon is using {self.engine.url.render_as_string(hide_password=True)}")
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
        finally:
            connection.close()

    # -- sources ---------------------------------------------------------------------------
    def _source_row(self, conn: Connection, name: str):
        row = conn.execute(select(sources).where(sources.c.name == name)).mappings().first()
        if row is None:
            raise KeyError(f"no such source: {name}")
        return row

    @staticmethod
    def _source_values(record: SourceRecord) -> dict:
        return {"url": record.url, "kind": record.kind, "feed_url": record.feed_url, "sitemap_url": record.sitemap_url,
                "selectors": json.dumps(record.selectors or {}, sort_keys=True), "title": record.title,
                "origin": record.origin}

    def sync_sources(self, records: Iterable[SourceRecord]) -> None:
        records = list(records)
        names = {r.name for r in records}
        with self.engine.begin() as conn:
            existing = {row.name: row for row in conn.execute(select(sources.c.name, sources.c.origin))}
            for record in records:
                values = {**self._source_values(record), "origin": "config", "enabled": True}
                if record.name in existing:
                    conn.execute(update(sources).where(sources.c.name == record.name).values(**values))
                else:
                    conn.execute(insert(sources).values(name=record.name, created_at=_now(), baseline_done=False,
                                                        consecutive_failures=0, degraded=False, **values))
            for name, row in existing.items():
                if row.origin == "config" and name not in names:
                    conn.execute(update(sources).where(sources.c.name == name).values(enabled=False))

    def add_source(self, record: SourceRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(sources).values(name=record.name, created_at=_now(), baseline_done=False, enabled=True,
                                                consecutive_failures=0, degraded=False, **self._source_values(record)))

    def remove_source(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(sources).where(sources.c.name == name)).rowcount > 0

    @staticmethod
    def _record(row) -> SourceRecord:
        return SourceRecord(name=row["name"], url=row["url"], kind=row["kind"], feed_url=row["feed_url"],
                            sitemap_url=row["sitemap_url"], selectors=json.loads(row["selectors"] or "{}"),
                            title=row["title"], origin=row["origin"])

    def list_sources(self) -> list[SourceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources).where(sources.c.enabled.is_(True)).order_by(sources.c.id)).mappings()
            return [self._record(r) for r in rows]

    def get_source(self, name: str) -> SourceRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name, sources.c.enabled.is_(True))).mappings().first()
            return self._record(row) if row else None

    # -- crawl state -----------------------------------------------------------------------
    def crawl_state(self, source: str) -> CrawlState:
        with self.engine.connect() as conn:
            src = self._source_row(conn, source)
            known = {r.url: KnownPost(r.url, r.title, r.content_hash, r.status) for r in conn.execute(
                select(posts.c.url, posts.c.title, posts.c.content_hash, posts.c.status).where(posts.c.source_id == src["id"]))}
            validators = {r.url: (r.etag, r.last_modified) for r in conn.execute(
                select(http_validators).where(http_validators.c.source_id == src["id"]))}
            robots = {r.origin: (bytes(r.body), _utc(r.fetched_at)) for r in conn.execute(select(robots_cache))}
            return CrawlState(bool(src["baseline_done"]), known, validators, robots, _utc(src["last_full_sweep_at"]))

    def mark_full_sweep(self, source: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(sources).where(sources.c.name == source).values(last_full_sweep_at=now))

    def record_check_failure(self, source: str, error: str, now: datetime) -> int:
        with self.engine.begin() as conn:
            src = self._source_row(conn, source)
            failures = (src["consecutive_failures"] or 0) + 1
            conn.execute(update(sources).where(sources.c.id == src["id"]).values(
                last_check_at=now, last_error=error[:1000], consecutive_failures=failures))
            return failures

    # -- applying a check ------------------------------------------------------------------
    def apply_check(self, source: str, check: CheckInput, now: datetime) -> ApplyResult:
        with self.engine.begin() as conn:
            src = self._source_row(conn, source)
            source_id = src["id"]
            self._save_validators(conn, source_id, check.validators, now)
            self._save_robots(conn, check.robots)
            stored = {r.url: r for r in conn.execute(
                select(posts.c.id, posts.c.url, posts.c.title, posts.c.status, posts.c.gone_since, posts.c.content_hash,
                       posts.c.published_at).where(posts.c.source_id == source_id))}
            baseline = check.baseline or not src["baseline_done"]
            drafts: list[dict] = []
            observed: set[str] = set()
            for item in _richest_per_url(check.posts):
                observed.add(item.url)
                drafts += self._apply_post(conn, source_id, stored.get(item.url), item, now, baseline)
            for url in check.unchanged_urls:
                row = stored.get(url)
                if row is not None and row.status != "active":
                    drafts += self._back_online(conn, row, now, via_304=True)
            for url, status in check.gone.items():
                row = stored.get(url)
                if row is not None:
                    drafts += self._gone(conn, row, now)
            if observed:
                conn.execute(update(posts).where(posts.c.source_id == source_id, posts.c.url.in_(observed))
                             .values(last_seen_at=now))

            source_values: dict[str, Any] = {"last_check_at": now, "last_success_at": now, "last_error": None,
                                             "consecutive_failures": 0}
            if baseline:
                source_values["baseline_done"] = True
                conn.execute(update(sources).where(sources.c.id == source_id).values(**source_values))
                return ApplyResult([], False, None, True)

            known_count = sum(1 for r in stored.values() if r.status != "removed")
            drafts = self._cancel_reversals(conn, source_id, drafts)
            hold_reason = None
            if not check.posts and not check.not_modified and not check.unchanged_urls and not check.gone and known_count:
                hold_reason = f"the check found no posts where {known_count} were known (redesign or broken page?)"
            elif len(drafts) >= self.MIN_FLOOD_EVENTS and known_count and len(drafts) / known_count > self.flood_share:
                hold_reason = (f"{len(drafts)} changes at once touch {len(drafts) / known_count:.0%} of {known_count} posts "
                               f"(more than {self.flood_share:.0%})")
            created = self._store_events(conn, source_id, source, drafts, now, held=hold_reason is not None)
            if hold_reason:
                source_values.update(degraded=True, degraded_reason=hold_reason)
            else:
                confirmed = self._confirm_held(conn, source_id)
                if confirmed or not self._held_count(conn, source_id):
                    source_values.update(degraded=False, degraded_reason=None)
            conn.execute(update(sources).where(sources.c.id == source_id).values(**source_values))
            return ApplyResult(created, hold_reason is not None, hold_reason, False)

    def _save_validators(self, conn, source_id: int, validators: dict, now: datetime) -> None:
        for url, (etag, last_modified) in validators.items():
            if len(url) > 2048:
                continue
            changed = conn.execute(update(http_validators).where(
                http_validators.c.source_id == source_id, http_validators.c.url == url).values(
                etag=etag, last_modified=last_modified, updated_at=now)).rowcount
            if not changed:
                conn.execute(insert(http_validators).values(source_id=source_id, url=url, etag=etag,
                                                            last_modified=last_modified, updated_at=now))

    def _save_robots(self, conn, robots: dict) -> None:
        for origin, (body, fetched_at) in robots.items():
            if not conn.execute(update(robots_cache).where(robots_cache.c.origin == origin).values(
                    body=body, fetched_at=fetched_at)).rowcount:
                conn.execute(insert(robots_cache).values(origin=origin, body=body, fetched_at=fetched_at))

    def _latest_version(self, conn, post_id: int, origin: str):
        return conn.execute(select(post_versions.c.id, post_versions.c.content_hash, post_versions.c.title)
                            .where(post_versions.c.post_id == post_id, post_versions.c.origin == origin)
                            .order_by(post_versions.c.id.desc()).limit(1)).first()

    def _apply_post(self, conn, source_id: int, row, item: ObservedPost, now: datetime, baseline: bool) -> list[dict]:
        content = normalize(item.body_html) if item.body_html else None
        if content is not None and not content.paragraphs:
            content = None      # an empty body is an extraction miss, not an edit that deleted everything
        title = (item.title or item.url)[:1000]
        summary = item.summary or (content.paragraphs[0][:300] if content else None)
        if row is None:
            post_id = conn.execute(insert(posts).values(
                source_id=source_id, url=item.url, title=title, published_at=item.published, first_seen_at=now,
                last_seen_at=now, status="active", content_hash=content.content_hash if content else None)).inserted_primary_key[0]
            if content:
                self._insert_version(conn, post_id, item.origin, content, title, item.body_html, now)
            if baseline:
                return []
            # An undated post is dated by when it was first seen.
            return [dict(post_id=post_id, kind="new", url=item.url, title=title, published_at=item.published or now,
                         summary=summary, body_html=item.body_html, version_hash=content.content_hash if content else None)]
        drafts: list[dict] = []
        if item.origin == "page" and row.status != "active":
            drafts += self._back_online(conn, row, now, title=title, summary=summary, body_html=item.body_html)
        values: dict[str, Any] = {}
        if item.published and not row.published_at:
            values["published_at"] = item.published
        if content is not None:
            previous = self._latest_version(conn, row.id, item.origin)
            if previous is None:
                # First body of this origin (baseline from a listing, or feed then page): no event.
                self._insert_version(conn, row.id, item.origin, content, title, item.body_html, now)
                values["content_hash"] = content.content_hash
                values["title"] = title
            elif previous.content_hash != content.content_hash or previous.title != title:
                old_text = conn.execute(select(post_versions.c.text).where(post_versions.c.id == previous.id)).scalar()
                self._insert_version(conn, row.id, item.origin, content, title, item.body_html, now)
                values.update(content_hash=content.content_hash, title=title)
                if not baseline:
                    drafts.append(dict(post_id=row.id, kind="updated", url=row.url, title=title,
                                       published_at=item.published or row.published_at, summary=summary,
                                       body_html=item.body_html, version_hash=content.content_hash,
                                       previous_hash=previous.content_hash,
                                       diff=paragraph_diff(split_text(old_text or ""), content.paragraphs,
                                                           previous.title, title)))
        if values:
            conn.execute(update(posts).where(posts.c.id == row.id).values(**values))
        return drafts

    def _insert_version(self, conn, post_id, origin, content, title, body_html, now) -> None:
        conn.execute(insert(post_versions).values(post_id=post_id, origin=origin, content_hash=content.content_hash,
                                                  title=title, text=content.text, body_html=body_html, fetched_at=now))

    def _back_online(self, conn, row, now, *, via_304=False, title=None, summary=None, body_html=None) -> list[dict]:
        conn.execute(update(posts).where(posts.c.id == row.id).values(status="active", gone_since=None))
        if row.status == "removed":
            return [dict(post_id=row.id, kind="restored", url=row.url, title=title or row.title,
                         published_at=row.published_at, summary=summary, body_html=body_html)]
        return []

    def _gone(self, conn, row, now) -> list[dict]:
        if row.status == "active":
            conn.execute(update(posts).where(posts.c.id == row.id).values(status="gone_pending", gone_since=now))
        elif row.status == "gone_pending" and now - _utc(row.gone_since) >= self.removal_confirm_after:
            conn.execute(update(posts).where(posts.c.id == row.id).values(status="removed"))
            return [dict(post_id=row.id, kind="removed", url=row.url, title=row.title, published_at=row.published_at)]
        return []

    def _next_seqs(self, conn, count: int) -> list[int]:
        if count == 0:
            return []
        last = conn.execute(update(counters).where(counters.c.name == "event_seq")
                            .values(value=counters.c.value + count).returning(counters.c.value)).scalar_one()
        return list(range(last - count + 1, last + 1))

    def _store_events(self, conn, source_id: int, source: str, drafts: list[dict], now: datetime, held: bool) -> list[EventRecord]:
        seqs = [None] * len(drafts) if held else self._next_seqs(conn, len(drafts))
        created = []
        for draft, seq in zip(drafts, seqs):
            diff = draft.pop("diff", None)
            values = dict(source_id=source_id, seq=seq, created_at=now, status="held" if held else "published",
                          diff=json.dumps(diff) if diff else None, **draft)
            event_id = conn.execute(insert(events).values(**values)).inserted_primary_key[0]
            created.append(EventRecord(id=event_id, seq=seq, source=source, kind=draft["kind"], url=draft["url"],
                                       title=draft["title"], published=_utc(draft.get("published_at")),
                                       summary=draft.get("summary"), body_html=draft.get("body_html"), diff=diff,
                                       created_at=now, status=values["status"]))
        return created

    def _cancel_reversals(self, conn, source_id: int, drafts: list[dict]) -> list[dict]:
        """A change that undoes a held one (a glitch, then the real page again) cancels both:
        subscribers never hear of either."""
        held = {r.post_id: r for r in conn.execute(select(events.c.id, events.c.post_id, events.c.kind, events.c.previous_hash)
                                                   .where(events.c.source_id == source_id, events.c.status == "held"))}
        if not held:
            return drafts
        kept = []
        for draft in drafts:
            previous = held.get(draft.get("post_id"))
            reverts = previous is not None and (
                (previous.kind == "updated" and draft["kind"] == "updated" and draft.get("version_hash") == previous.previous_hash)
                or (previous.kind == "removed" and draft["kind"] == "restored"))
            if reverts:
                conn.execute(update(events).where(events.c.id == previous.id).values(status="dismissed"))
            else:
                kept.append(draft)
        return kept

    def _held_count(self, conn, source_id: int) -> int:
        return conn.execute(select(func.count()).select_from(events).where(
            events.c.source_id == source_id, events.c.status == "held")).scalar()

    def _confirm_held(self, conn, source_id: int) -> int:
        """A calm check after a held one confirms held edits and removals. Held "new" posts wait
        for the operator: a flood of new URLs is what a site redesign looks like."""
        return self._publish_held(conn, source_id, kinds=("updated", "removed", "restored"))

    def _publish_held(self, conn, source_id: int, kinds: tuple[str, ...] | None = None) -> int:
        query = select(events.c.id).where(events.c.source_id == source_id, events.c.status == "held").order_by(events.c.id)
        if kinds:
            query = query.where(events.c.kind.in_(kinds))
        ids = list(conn.execute(query).scalars())
        for event_id, seq in zip(ids, self._next_seqs(conn, len(ids))):
            conn.execute(update(events).where(events.c.id == event_id).values(seq=seq, status="published"))
        return len(ids)

    def release_source(self, name: str) -> int:
        with self.engine.begin() as conn:
            src = self._source_row(conn, name)
            count = self._publish_held(conn, src["id"])
            conn.execute(update(sources).where(sources.c.id == src["id"]).values(degraded=False, degraded_reason=None))
            return count

    # -- events ----------------------------------------------------------------------------
    def _events(self, conn, query) -> list[EventRecord]:
        rows = conn.execute(query.add_columns(sources.c.name.label("source_name"))
                            .select_from(events.join(sources, events.c.source_id == sources.c.id))).mappings()
        return [EventRecord(id=r["id"], seq=r["seq"], source=r["source_name"], kind=r["kind"], url=r["url"],
                            title=r["title"], published=_utc(r["published_at"]), summary=r["summary"],
                            body_html=r["body_html"], diff=json.loads(r["diff"]) if r["diff"] else None,
                            created_at=_utc(r["created_at"]), status=r["status"]) for r in rows]

    def history(self, source: str | None = None, limit: int = 50) -> list[EventRecord]:
        query = select(*events.c).order_by(events.c.id.desc()).limit(limit)
        if source:
            query = query.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return self._events(conn, query)

    def source_status(self) -> list[SourceStatus]:
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(posts.c.source_id, func.count()).where(posts.c.status != "removed")
                                       .group_by(posts.c.source_id)).all())
            held = dict(conn.execute(select(events.c.source_id, func.count()).where(events.c.status == "held")
                                     .group_by(events.c.source_id)).all())
            rows = conn.execute(select(sources).where(sources.c.enabled.is_(True)).order_by(sources.c.id)).mappings()
            return [SourceStatus(name=r["name"], url=r["url"], posts=counts.get(r["id"], 0),
                                 last_check_at=_utc(r["last_check_at"]), last_success_at=_utc(r["last_success_at"]),
                                 last_error=r["last_error"], consecutive_failures=r["consecutive_failures"],
                                 degraded=bool(r["degraded"]), degraded_reason=r["degraded_reason"],
                                 held_events=held.get(r["id"], 0)) for r in rows]

    # -- subscribers -----------------------------------------------------------------------
    @staticmethod
    def _subscriber(row) -> Subscriber:
        return Subscriber(id=row["id"], email=row["email"], cadence=row["cadence"], send_time=row["send_time"],
                          timezone=row["timezone"], weekday=row["weekday"],
                          sources=json.loads(row["sources"]) if row["sources"] else None, status=row["status"],
                          cursor=row["cursor"], created_at=_utc(row["created_at"]))

    def add_subscriber(self, email: str, *, cadence: str = "daily", send_time: str = "08:00", timezone: str = "UTC",
                       weekday: int | None = None, sources: list[str] | None = None,
                       now: datetime | None = None) -> Subscriber:
        now = now or _now()
        values = dict(cadence=cadence, send_time=send_time, timezone=timezone, weekday=weekday,
                      sources=json.dumps(sources) if sources else None)
        with self.engine.begin() as conn:
            current = conn.execute(select(counters.c.value).where(counters.c.name == "event_seq")).scalar()
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            if row is None:
                conn.execute(insert(subscribers).values(email=email, status="active", cursor=current, created_at=now, **values))
            elif row["status"] != "active":
                # Back after unsubscribing: from now on, not the changes they missed.
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(
                    status="active", cursor=current, unsubscribed_at=None, **values))
            else:
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(**values))
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            return self._subscriber(row)

    def remove_subscriber(self, email: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(subscribers).where(func.lower(subscribers.c.email) == email.lower())).rowcount > 0

    def unsubscribe(self, subscriber_id: int) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status == "active")
                                   .values(status="unsubscribed", unsubscribed_at=_now())).rowcount
            # Nothing queued for them goes out any more.
            conn.execute(update(outbox).where(outbox.c.subscriber_id == subscriber_id, outbox.c.status == "pending")
                         .values(status="cancelled", last_error="unsubscribed"))
            return changed > 0

    def list_subscribers(self, active_only: bool = False) -> list[Subscriber]:
        query = select(subscribers).order_by(subscribers.c.id)
        if active_only:
            query = query.where(subscribers.c.status == "active")
        with self.engine.connect() as conn:
            return [self._subscriber(r) for r in conn.execute(query).mappings()]

    def get_subscriber(self, key: int | str) -> Subscriber | None:
        query = select(subscribers).where(subscribers.c.id == key if isinstance(key, int)
                                          else func.lower(subscribers.c.email) == key.lower())
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return self._subscriber(row) if row else None

    # -- digests and the outbox ------------------------------------------------------------
    def _pending_query(self, subscriber: Subscriber):
        query = (select(*events.c).where(events.c.status == "published", events.c.seq > subscriber.cursor)
                 .order_by(events.c.seq))
        if subscriber.sources:
            query = query.where(sources.c.name.in_(subscriber.sources))
        return query

    def pending_events(self, subscriber: Subscriber) -> list[EventRecord]:
        with self.engine.connect() as conn:
            return self._events(conn, self._pending_query(subscriber))

    def compose_digests(self, build: Callable[[Subscriber, list[EventRecord]], ComposedMessage], now: datetime,
                        subscriber_ids: Iterable[int] | None = None) -> list[int]:
        query = select(subscribers.c.id).where(subscribers.c.status == "active").order_by(subscribers.c.id)
        if subscriber_ids is not None:
            query = query.where(subscribers.c.id.in_(list(subscriber_ids)))
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        queued = []
        # A batch of subscribers per transaction: each subscriber's message is in the outbox and
        # their cursor has moved past its events, or (the batch rolled back) neither happened.
        for start in range(0, len(ids), self.COMPOSE_BATCH):
            with self.engine.begin() as conn:
                lock = select(subscribers).where(subscribers.c.id.in_(ids[start:start + self.COMPOSE_BATCH]),
                                                 subscribers.c.status == "active").order_by(subscribers.c.id)
                if not self.is_sqlite:
                    lock = lock.with_for_update()
                rows = conn.execute(lock).mappings().all()
                last_seq = conn.execute(select(counters.c.value).where(counters.c.name == "event_seq")).scalar()
                shared: dict[tuple, list[EventRecord]] = {}   # subscribers at the same point share one query
                messages, cursors = [], []
                for row in rows:
                    subscriber = self._subscriber(row)
                    key = (subscriber.cursor, tuple(subscriber.sources or ()))
                    if key not in shared:
                        shared[key] = self._events(conn, self._pending_query(subscriber))
                    pending = shared[key]
                    if pending:
                        message = build(subscriber, pending)
                        messages.append(dict(
                            subscriber_id=subscriber.id, to_addr=message.to_addr, message_id=message.message_id,
                            subject=message.subject, raw=message.raw, status="pending", attempts=0,
                            next_attempt_at=now, first_seq=pending[0].seq, last_seq=pending[-1].seq, created_at=now))
                    # Events of other sources the subscriber does not follow are passed too.
                    cursor = max(subscriber.cursor, pending[-1].seq if pending else last_seq)
                    if cursor != subscriber.cursor:
                        cursors.append({"subscriber": subscriber.id, "new_cursor": cursor})
                if messages:
                    queued.extend(conn.execute(insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                                               messages).scalars())
                if cursors:
                    conn.execute(update(subscribers).where(subscribers.c.id == bindparam("subscriber"))
                                 .values(cursor=bindparam("new_cursor")), cursors)
        return queued

    def enqueue_message(self, message: ComposedMessage, now: datetime, subscriber_id: int | None = None) -> int:
        with self.engine.begin() as conn:
            existing = conn.execute(select(outbox.c.id).where(outbox.c.message_id == message.message_id)).scalar()
            if existing:
                return existing
            return conn.execute(insert(outbox).values(
                subscriber_id=subscriber_id, to_addr=message.to_addr, message_id=message.message_id,
                subject=message.subject, raw=message.raw, status="pending", attempts=0, next_attempt_at=now,
                created_at=now)).inserted_primary_key[0]

    def due_outbox(self, now: datetime, limit: int = 1000, *, claim: bool = True) -> list[OutboxItem]:
        """Pending messages whose next attempt is due, leased to the caller for `send_lease`
        so that a daemon and a CLI run never hand the same message to the server at once."""
        with self.engine.begin() as conn:
            query = (select(outbox.c.id, outbox.c.subscriber_id, outbox.c.to_addr, outbox.c.message_id, outbox.c.raw,
                            outbox.c.attempts, outbox.c.created_at)
                     .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
                            or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now))
                     .order_by(outbox.c.id).limit(limit))
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if claim and rows:
                conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                             .values(claimed_until=now + self.send_lease))
            return [OutboxItem(id=r.id, subscriber_id=r.subscriber_id, to_addr=r.to_addr, message_id=r.message_id,
                               raw=bytes(r.raw), attempts=r.attempts, created_at=_utc(r.created_at)) for r in rows]

    # Built once: marking is the one statement run per message sent, 10,000 times a digest.
    _MARK = update(outbox).where(outbox.c.id == bindparam("outbox_id"))
    _MARK_SENT = _MARK.values(status="sent", sent_at=bindparam("at"), attempts=outbox.c.attempts + 1,
                              claimed_until=None, last_error=None)
    _MARK_RETRY = _MARK.values(attempts=outbox.c.attempts + 1, next_attempt_at=bindparam("at"), claimed_until=None,
                               last_error=bindparam("error"))
    _MARK_FAILED = _MARK.values(status="failed", attempts=outbox.c.attempts + 1, claimed_until=None,
                                last_error=bindparam("error"))

    def mark_sent(self, outbox_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._MARK_SENT, {"outbox_id": outbox_id, "at": now})

    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._MARK_RETRY, {"outbox_id": outbox_id, "at": next_attempt_at, "error": error[:1000]})

    def mark_failed(self, outbox_id: int, error: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._MARK_FAILED, {"outbox_id": outbox_id, "error": error[:1000]})

    def outbox_stats(self, now: datetime | None = None) -> dict[str, int]:
        now = now or _now()
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
            oldest = _utc(conn.execute(select(func.min(outbox.c.created_at)).where(outbox.c.status == "pending")).scalar())
        return {"pending": counts.get("pending", 0), "sent": counts.get("sent", 0), "failed": counts.get("failed", 0),
                "oldest_pending_age_s": int((now - oldest).total_seconds()) if oldest else 0}

    def outbox_errors(self, limit: int = 20) -> list[tuple[str, str | None]]:
        with self.engine.connect() as conn:
            return [(r.to_addr, r.last_error) for r in conn.execute(
                select(outbox.c.to_addr, outbox.c.last_error).where(outbox.c.status.in_(("pending", "failed")),
                                                                    outbox.c.last_error.is_not(None))
                .order_by(outbox.c.id.desc()).limit(limit))]

    # -- alerts and retention --------------------------------------------------------------
    def alert_due(self, key: str, now: datetime, every: timedelta = timedelta(days=1)) -> bool:
        with self.engine.begin() as conn:
            last = _utc(conn.execute(select(alerts.c.last_sent_at).where(alerts.c.key == key)).scalar())
            if last is not None and now - last < every:
                conn.execute(update(alerts).where(alerts.c.key == key).values(count=alerts.c.count + 1))
                return False
            if last is None:
                conn.execute(insert(alerts).values(key=key, last_sent_at=now, count=1))
            else:
                conn.execute(update(alerts).where(alerts.c.key == key).values(last_sent_at=now, count=1))
            return True

    def prune(self, now: datetime, older_than: timedelta) -> dict[str, int]:
        cutoff = now - older_than
        with self.engine.begin() as conn:
            slowest = conn.execute(select(func.min(subscribers.c.cursor)).where(subscribers.c.status == "active")).scalar()
            delivered = events.c.seq <= (slowest if slowest is not None else conn.execute(
                select(counters.c.value).where(counters.c.name == "event_seq")).scalar())
            removed_events = conn.execute(delete(events).where(events.c.created_at < cutoff, or_(
                and_(events.c.status == "published", delivered), events.c.status == "dismissed"))).rowcount
            latest = (select(func.max(post_versions.c.id)).group_by(post_versions.c.post_id, post_versions.c.origin))
            removed_versions = conn.execute(delete(post_versions).where(
                post_versions.c.fetched_at < cutoff, post_versions.c.id.not_in(latest.scalar_subquery()))).rowcount
            removed_messages = conn.execute(delete(outbox).where(
                outbox.c.created_at < cutoff, outbox.c.status.in_(("sent", "failed", "cancelled")))).rowcount
        return {"events": removed_events, "versions": removed_versions, "messages": removed_messages}

    def integrity_ok(self) -> bool:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                return conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            return conn.execute(text("SELECT 1")).scalar() == 1
