"""The Store: every SQL statement postwatch runs (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import inspect
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import quote

from sqlalchemy import and_, bindparam, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from state.accepted import AcceptedJournal
from state.changes import (FetchState, HeldOutcome, Outcome, Seen, Candidate, VOLATILE_AFTER, hold_reason,
                           judge_fetch, judge_held_edit)
from state.diff import paragraph_diff
from state.normalize import normalize, split_text
from state.schema import (alerts, counters, daemon_lease, edit_candidates, events, http_validators, outbox, post_versions, posts,
                          robots_cache, sources, subscribers)

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
    # URL -> origins ("page", "feed") whose next fetch must look again: an unconfirmed edit or a
    # held "updated" event waits for it.
    awaiting_confirmation: dict[str, set[str]] = field(default_factory=dict)
    # Pages of volatile posts: a sweep re-reads them without validators (a 304 would hide
    # whether the article has settled).
    volatile_pages: set[str] = field(default_factory=set)


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
    became_volatile: list[str] = field(default_factory=list)     # URLs that change on every fetch
    pending_edits: int = 0                                         # new content seen once, not yet an edit
    published_held: int = 0                                        # held events this calm check confirmed


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
    # When the current subscription began; unsubscribe tokens are signed for it. None for a
    # subscription older than the column (migration 0004).
    subscribed_at: datetime | None = None


@dataclass
class SubscriberImport:
    """What `Store.import_subscribers` did (or would have done, when `committed` is False)."""
    added: int = 0
    updated: int = 0
    unchanged: int = 0                                       # already subscribed with these settings
    refused: dict[int, str] = field(default_factory=dict)   # index of the entry -> why
    committed: bool = False


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
    claimed_until: datetime | None = None   # the lease this caller holds, to hand back unsent


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
    volatile_posts: int = 0


class AlreadyRunning(RuntimeError):
    """Another daemon holds the instance lock of this database."""


class StorageError(RuntimeError):
    """The database could not be opened, read or written. str() is one line: which database, why."""

    def __init__(self, database: str, cause: BaseException | str):
        self.database = database
        self.cause = cause
        super().__init__(self._line(database, cause))

    @staticmethod
    def _line(database: str, cause: BaseException | str) -> str:
        return f"database {database}: {cause if isinstance(cause, str) else describe_error(cause)}"


class NoDatabase(StorageError):
    """A command that only reads found no database to read. `cause` is the whole line."""

    @staticmethod
    def _line(database: str, cause: BaseException | str) -> str:
        return str(cause)


class SchemaMismatch(NoDatabase):
    """A command that only reads found a database at another schema revision than this code's."""


# A PostgreSQL server that does not answer must not hang a command or a daemon job forever; and
# the server must notice a client cut off by the network within a minute or so (its keepalives),
# so that the session's locks do not block the daemon that takes over.
PG_CONNECT_ARGS = {"connect_timeout": 10}
PG_SESSION_OPTIONS = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


def _pg_connect_args(extra: dict, *options: str) -> dict:
    merged = " ".join(filter(None, [PG_SESSION_OPTIONS, extra.get("options"), *options]))
    return {**PG_CONNECT_ARGS, **extra, "options": merged}


def database_display_name(url: str) -> str:
    """The database as the operator knows it: a file path, or the URL without its password."""
    if url.startswith("sqlite"):
        return url.removeprefix("sqlite:///") or url
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def describe_error(exc: BaseException) -> str:
    """One line for a driver or OS error: the first line of the DBAPI's own message, without
    SQLAlchemy's SQL echo and background link or the server's LINE/HINT lines."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError) and cause.strerror:
        where = f" ({cause.filename})" if cause.filename else ""
        return f"{cause.strerror}{where}"
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", str(cause))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def _storage_errors(method):
    """Turn SQLAlchemy and OS errors raised by a Store method into a StorageError naming the database."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(self.display_name, exc) from exc

    return wrapper


def _wrap_storage_errors(cls):
    """Every public Store method, also ones added later, raises StorageError for storage failures."""
    for name, value in list(vars(cls).items()):
        if inspect.isfunction(value) and not name.startswith("_"):
            setattr(cls, name, _storage_errors(value))
    return cls


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


@dataclass
class _CheckPass:
    """What one apply_check learns while it walks the observed posts."""
    held_edits: dict[int, list]                                   # post id -> held "updated" events not yet judged
    confirmed_held: set[int] = field(default_factory=set)         # held edits whose content was seen again
    became_volatile: list[str] = field(default_factory=list)
    pending: int = 0


# ------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------
@_wrap_storage_errors
class Store:
    """State of every source, post, event, subscriber and queued message.

    `url`: a bare file path or `sqlite:///path` (WAL, foreign keys, 5 s busy timeout), or
    `postgresql+psycopg://...`. Opening runs the Alembic migrations to the newest revision.
    `read_only=True` migrates nothing, writes nothing and creates no file: a missing database
    raises NoDatabase, one at another schema revision SchemaMismatch.
    """

    COMPOSE_BATCH = 200

    def __init__(self, url: str, *, removal_confirm_after: timedelta = timedelta(hours=1),
                 flood_share: float = 0.30, send_lease: timedelta = timedelta(minutes=5),
                 migrate: bool = True, connect_args: dict | None = None, read_only: bool = False,
                 volatile_after: int = VOLATILE_AFTER):
        if "://" not in url:
            url = "sqlite:///" + str(Path(url).resolve())
        if url.startswith("postgresql://"):
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.url = url
        self.removal_confirm_after = removal_confirm_after
        self.flood_share = flood_share
        self.send_lease = send_lease
        self.volatile_after = volatile_after
        self.is_sqlite = url.startswith("sqlite")
        self.read_only = read_only
        self.connect_args = connect_args or {}
        self.display_name = database_display_name(url)
        sqlite_path = url.removeprefix("sqlite:///") if self.is_sqlite else ""
        # PostgreSQL marks a row without waiting behind other writers: no journal there.
        self.accepted = AcceptedJournal(sqlite_path + ".accepted") if sqlite_path and sqlite_path != ":memory:" else None
        try:
            if read_only:
                self.engine = self._make_read_only_engine(url, connect_args or {})
                self._check_revision()
            else:
                self.engine = self._make_engine(url, connect_args or {})
                if migrate:
                    self.migrate()
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(self.display_name, exc) from exc

    # -- lifecycle -------------------------------------------------------------------------
    def _make_engine(self, url: str, connect_args: dict) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(connect_args))
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            # Subscribers' addresses live here: a new database (and the -wal/-shm files SQLite
            # gives the same mode) is readable by the account postwatch runs as only.
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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

    def _make_read_only_engine(self, url: str, connect_args: dict) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(
                connect_args, "-c default_transaction_read_only=on"))
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file() or path.stat().st_size == 0:
            raise NoDatabase(str(path), f"no database at {path} yet; run `postwatch check` first")
        # mode=ro alone still creates -wal and -shm beside a WAL database (and cannot create them
        # in a read-only folder). With no -wal present no writer has uncheckpointed changes, so
        # the file is read as immutable: no lock, no new file. A writer that checkpoints during
        # these few milliseconds can at worst make this read fail; it cannot harm the database.
        immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
        return create_engine(f"sqlite:///file:{quote(str(path))}?mode=ro{immutable}&uri=true",
                             connect_args={"timeout": 5, **connect_args})

    @staticmethod
    def head_revision() -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory(str(resources.files("state") / "migrations")).get_current_head()

    def _check_revision(self) -> None:
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            try:
                current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                current = None
        if current is None:
            raise NoDatabase(self.display_name, f"no postwatch database at {self.display_name} yet; run `postwatch check` first")
        head = self.head_revision()
        if current == head:
            return
        known = {script.revision for script in ScriptDirectory(str(resources.files("state") / "migrations")).walk_revisions()}
        if current in known:
            raise SchemaMismatch(self.display_name, f"database {self.display_name} is at schema revision {current}, this "
                                                    f"postwatch needs {head}; run `postwatch check` (or any command that "
                                                    "writes) once to upgrade it")
        raise SchemaMismatch(self.display_name, f"database {self.display_name} is at schema revision {current}, written by "
                                                "a newer postwatch; upgrade postwatch")

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
        if self._lease_engine is not None:
            self._lease_engine.dispose()

    def instance_lock(self, on_lost: Callable[[str], None] | None = None):
        """Held by the daemon for its whole life: one daemon per database.

        SQLite: an flock beside the database file (the kernel drops it when the process dies).
        PostgreSQL: a lease row renewed every few seconds (state.lease.DaemonLease); `on_lost`
        is called, from another thread, with one line when it can no longer be renewed."""
        if self.is_sqlite:
            return self._file_lock()
        from state.lease import DaemonLease

        return DaemonLease(self, on_lost=on_lost)

    @contextlib.contextmanager
    def _file_lock(self):
        lock_path = self.url.removeprefix("sqlite:///") + ".lock"
        try:
            handle = open(lock_path, "a+", opener=lambda name, flags: os.open(name, flags, 0o600))
        except OSError as exc:
            raise StorageError(self.display_name, exc) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning(f"another postwatch daemon is using {self.display_name}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # -- the daemon lease (PostgreSQL) -------------------------------------------------------
    # Times come from the database's clock (now()), so hosts with skewed clocks agree on expiry.
    # The lease has its own one-connection engine with short timeouts: a renewal must neither
    # wait behind the jobs' connections nor hang on a dead network.
    LEASE_NAME = "daemon"
    LEASE_CALL_TIMEOUT = 3.0
    _lease_engine: Engine | None = None

    def _lease_connection(self) -> Connection:
        if self._lease_engine is None:
            millis = int(self.LEASE_CALL_TIMEOUT * 1000)
            self._lease_engine = create_engine(
                self.url, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_timeout=self.LEASE_CALL_TIMEOUT,
                connect_args={**_pg_connect_args(self.connect_args, f"-c statement_timeout={millis} -c lock_timeout={millis}"),
                              "connect_timeout": max(2, int(self.LEASE_CALL_TIMEOUT)), "tcp_user_timeout": millis})
        return self._lease_engine.connect()

    def take_lease(self, holder: str, host: str, node: str, pid: int, ttl: timedelta,
                   replacing: str | None = None) -> bool:
        """One atomic statement: the lease becomes `holder`'s when there is none, when it has
        expired, or when it is still `replacing`'s (a holder known to be dead)."""
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        now = func.now()
        statement = pg_insert(daemon_lease).values(
            name=self.LEASE_NAME, holder=holder, host=host, node=node, pid=pid,
            acquired_at=now, renewed_at=now, expires_at=now + ttl,
        )
        condition = daemon_lease.c.expires_at <= now
        if replacing:
            condition = or_(condition, daemon_lease.c.holder == replacing)
        statement = statement.on_conflict_do_update(
            index_elements=[daemon_lease.c.name],
            set_={c: statement.excluded[c] for c in ("holder", "host", "node", "pid", "acquired_at", "renewed_at",
                                                     "expires_at")},
            where=condition,
        ).returning(daemon_lease.c.holder)
        with self._lease_connection() as conn, conn.begin():
            return conn.execute(statement).scalar() == holder

    def lease_holder(self) -> dict | None:
        """The current lease row with `remaining` (seconds until it expires, by the database's clock)."""
        query = select(daemon_lease, func.extract("epoch", daemon_lease.c.expires_at - func.now()).label("remaining")) \
            .where(daemon_lease.c.name == self.LEASE_NAME)
        with self._lease_connection() as conn, conn.begin():
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def renew_lease(self, holder: str, ttl: timedelta) -> bool:
        """False when the lease is no longer `holder`'s."""
        statement = update(daemon_lease).where(daemon_lease.c.name == self.LEASE_NAME, daemon_lease.c.holder == holder) \
            .values(renewed_at=func.now(), expires_at=func.now() + ttl).returning(daemon_lease.c.holder)
        with self._lease_connection() as conn, conn.begin():
            return conn.execute(statement).scalar() == holder

    def release_lease(self, holder: str) -> None:
        with self._lease_connection() as conn, conn.begin():
            conn.execute(delete(daemon_lease).where(daemon_lease.c.name == self.LEASE_NAME,
                                                    daemon_lease.c.holder == holder))

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
            volatile_pages = set(conn.execute(
                select(posts.c.url).select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
                .where(posts.c.source_id == src["id"], posts.c.status != "removed", edit_candidates.c.origin == "page",
                       edit_candidates.c.volatile_since.is_not(None))).scalars())
            return CrawlState(bool(src["baseline_done"]), known, validators, robots, _utc(src["last_full_sweep_at"]),
                              self._awaiting_confirmation(conn, src["id"]), volatile_pages)

    def _awaiting_confirmation(self, conn, source_id: int) -> dict[str, set[str]]:
        """Posts whose next fetch decides something: a pending edit (not of a volatile post,
        which waits for the ordinary sweep) or a held "updated" event."""
        awaiting: dict[str, set[str]] = {}
        pending = (select(posts.c.url, edit_candidates.c.origin)
                   .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
                   .where(posts.c.source_id == source_id, posts.c.status != "removed",
                          edit_candidates.c.content_hash.is_not(None), edit_candidates.c.volatile_since.is_(None)))
        held = (select(posts.c.url, post_versions.c.origin)
                .select_from(events.join(posts, posts.c.id == events.c.post_id)
                             .join(post_versions, and_(post_versions.c.post_id == events.c.post_id,
                                                       post_versions.c.content_hash == events.c.version_hash)))
                .where(events.c.source_id == source_id, events.c.status == "held", events.c.kind == "updated",
                       posts.c.status != "removed"))
        for url, origin in [*conn.execute(pending), *conn.execute(held)]:
            awaiting.setdefault(url, set()).add(origin)
        return awaiting

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
            pass_ = _CheckPass(held_edits=self._held_edits(conn, source_id))
            drafts: list[dict] = []
            observed: set[str] = set()
            for item in _richest_per_url(check.posts):
                observed.add(item.url)
                drafts += self._apply_post(conn, source_id, stored.get(item.url), item, now, baseline, pass_)
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
            reason = hold_reason(changes=len(drafts), known=known_count, flood_share=self.flood_share,
                                 saw_anything=bool(check.posts or check.not_modified or check.unchanged_urls or check.gone))
            created = self._store_events(conn, source_id, source, drafts, now, held=reason is not None)
            if reason:
                source_values.update(degraded=True, degraded_reason=reason)
            confirmed = 0
            if not reason:
                confirmed = self._confirm_held(conn, source_id, pass_.confirmed_held)
                if confirmed or not self._held_count(conn, source_id):
                    source_values.update(degraded=False, degraded_reason=None)
            conn.execute(update(sources).where(sources.c.id == source_id).values(**source_values))
            return ApplyResult(created, reason is not None, reason, False, became_volatile=pass_.became_volatile,
                               pending_edits=pass_.pending, published_held=confirmed)

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

    def _apply_post(self, conn, source_id: int, row, item: ObservedPost, now: datetime, baseline: bool,
                    pass_: "_CheckPass") -> list[dict]:
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
            seen = Seen(content.content_hash, title)
            self._judge_held_edits(conn, row.id, item.origin, seen, pass_)
            previous = self._latest_version(conn, row.id, item.origin)
            if baseline:
                verdict = None      # the baseline records what is there: no candidates, no events
            else:
                verdict = judge_fetch(self._fetch_state(conn, row.id, item.origin, previous), seen, now,
                                      self.volatile_after)
                self._save_fetch_state(conn, row.id, item.origin, verdict, now)
                if verdict.became_volatile:
                    pass_.became_volatile.append(row.url)
                if verdict.outcome is Outcome.PENDING and not verdict.volatile:
                    pass_.pending += 1
            if previous is None or (verdict is None and Seen(previous.content_hash, previous.title) != seen):
                # First body of this origin (baseline from a listing, or feed then page): no event.
                self._insert_version(conn, row.id, item.origin, content, title, item.body_html, now)
                values.update(content_hash=content.content_hash, title=title)
            elif verdict is not None and verdict.publish:
                old_text = conn.execute(select(post_versions.c.text).where(post_versions.c.id == previous.id)).scalar()
                self._insert_version(conn, row.id, item.origin, content, title, item.body_html, now)
                values.update(content_hash=content.content_hash, title=title)
                drafts.append(dict(post_id=row.id, kind="updated", url=row.url, title=title,
                                   published_at=item.published or row.published_at, summary=summary,
                                   body_html=item.body_html, version_hash=content.content_hash,
                                   previous_hash=previous.content_hash,
                                   diff=paragraph_diff(split_text(old_text or ""), content.paragraphs,
                                                       previous.title, title)))
        if values:
            conn.execute(update(posts).where(posts.c.id == row.id).values(**values))
        return drafts

    # -- edit candidates and held edits ------------------------------------------------------
    def _fetch_state(self, conn, post_id: int, origin: str, previous) -> FetchState:
        stored = Seen(previous.content_hash, previous.title) if previous is not None else None
        row = conn.execute(select(edit_candidates).where(edit_candidates.c.post_id == post_id,
                                                         edit_candidates.c.origin == origin)).mappings().first()
        if row is None:
            return FetchState(stored)
        candidate = (Candidate(Seen(row["content_hash"], row["title"]), row["streak"], _utc(row["first_seen_at"]))
                     if row["content_hash"] is not None else None)
        return FetchState(stored, candidate, row["volatile_since"] is not None)

    def _save_fetch_state(self, conn, post_id: int, origin: str, verdict, now: datetime) -> None:
        where = and_(edit_candidates.c.post_id == post_id, edit_candidates.c.origin == origin)
        if verdict.candidate is None and not verdict.volatile:
            conn.execute(delete(edit_candidates).where(where))
            return
        candidate = verdict.candidate
        values = dict(content_hash=candidate.seen.content_hash if candidate else None,
                      title=candidate.seen.title if candidate else None, streak=candidate.streak if candidate else 0,
                      first_seen_at=candidate.first_seen_at if candidate else None, last_seen_at=now)
        if verdict.became_volatile:
            values["volatile_since"] = now
        if not conn.execute(update(edit_candidates).where(where).values(**values)).rowcount:
            conn.execute(insert(edit_candidates).values(post_id=post_id, origin=origin, **values))

    def _held_edits(self, conn, source_id: int) -> dict[int, list]:
        held: dict[int, list] = {}
        for r in conn.execute(select(events.c.id, events.c.post_id, events.c.title, events.c.version_hash,
                                     events.c.previous_hash)
                              .where(events.c.source_id == source_id, events.c.status == "held",
                                     events.c.kind == "updated").order_by(events.c.id)):
            held.setdefault(r.post_id, []).append(r)
        return held

    def _judge_held_edits(self, conn, post_id: int, origin: str, seen: Seen, pass_: "_CheckPass") -> None:
        """Before a fetch is judged against the stored version: a held edit of this post is
        confirmed by seeing its content again; anything else dismisses it and puts the stored
        version back to what subscribers last heard of."""
        for held in pass_.held_edits.pop(post_id, []):
            version = conn.execute(select(post_versions.c.id, post_versions.c.origin)
                                   .where(post_versions.c.post_id == post_id,
                                          post_versions.c.content_hash == held.version_hash)
                                   .order_by(post_versions.c.id.desc()).limit(1)).first()
            if version is not None and version.origin != origin:
                pass_.held_edits.setdefault(post_id, []).append(held)     # judged by a fetch of its own origin
                continue
            outcome = judge_held_edit(Seen(held.version_hash, held.title), seen)
            if outcome is HeldOutcome.CONFIRM:
                pass_.confirmed_held.add(held.id)
            elif outcome is HeldOutcome.DISMISS:
                conn.execute(update(events).where(events.c.id == held.id).values(status="dismissed"))
                if version is not None:
                    conn.execute(delete(post_versions).where(post_versions.c.id == version.id))
                    restored = self._latest_version(conn, post_id, origin)
                    if restored is not None:
                        conn.execute(update(posts).where(posts.c.id == post_id).values(
                            content_hash=restored.content_hash, title=restored.title))

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
        """A restore that undoes a held removal (a glitch, then the real page again) cancels
        both: subscribers never hear of either. (A held edit is judged by _judge_held_edits.)"""
        held = {r.post_id: r for r in conn.execute(select(events.c.id, events.c.post_id, events.c.kind)
                                                   .where(events.c.source_id == source_id, events.c.status == "held",
                                                          events.c.kind == "removed"))}
        if not held:
            return drafts
        kept = []
        for draft in drafts:
            previous = held.get(draft.get("post_id"))
            if previous is not None and draft["kind"] == "restored":
                conn.execute(update(events).where(events.c.id == previous.id).values(status="dismissed"))
            else:
                kept.append(draft)
        return kept

    def _held_count(self, conn, source_id: int) -> int:
        return conn.execute(select(func.count()).select_from(events).where(
            events.c.source_id == source_id, events.c.status == "held")).scalar()

    def _confirm_held(self, conn, source_id: int, seen_again: set[int]) -> int:
        """A calm check after a held one confirms held removals, and held edits whose content
        this check's fetch saw again. Held "new" posts wait for the operator: a flood of new
        URLs is what a site redesign looks like."""
        count = self._publish_held(conn, source_id, kinds=("removed", "restored"))
        if seen_again:
            count += self._publish_held(conn, source_id, kinds=("updated",), ids=seen_again)
        return count

    def _publish_held(self, conn, source_id: int, kinds: tuple[str, ...] | None = None,
                      ids: set[int] | None = None) -> int:
        query = select(events.c.id).where(events.c.source_id == source_id, events.c.status == "held").order_by(events.c.id)
        if kinds:
            query = query.where(events.c.kind.in_(kinds))
        if ids is not None:
            query = query.where(events.c.id.in_(sorted(ids)))
        ids = list(conn.execute(query).scalars())
        for event_id, seq in zip(ids, self._next_seqs(conn, len(ids))):
            conn.execute(update(events).where(events.c.id == event_id).values(seq=seq, status="published"))
        return len(ids)

    def volatile_posts(self, source: str | None = None) -> list[tuple[str, str, datetime]]:
        """(source, URL, since) of the posts whose content changes on every fetch."""
        query = (select(sources.c.name, posts.c.url, func.min(edit_candidates.c.volatile_since))
                 .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id)
                              .join(sources, sources.c.id == posts.c.source_id))
                 .where(edit_candidates.c.volatile_since.is_not(None))
                 .group_by(sources.c.name, posts.c.url).order_by(sources.c.name, posts.c.url))
        if source:
            query = query.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return [(name, url, _utc(since)) for name, url, since in conn.execute(query)]

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

    def feed_events(self, source: str | None, limit: int) -> list[EventRecord]:
        """The newest `limit` published events (of one source, or of all), last published first:
        what subscribers were told, never a held or dismissed change."""
        # Ids first: sorting whole rows (bodies, diffs) of a 10,000-event source took SQLite 4x longer.
        newest = (select(events.c.id).select_from(events.join(sources, events.c.source_id == sources.c.id))
                  .where(events.c.status == "published").order_by(events.c.seq.desc()).limit(limit))
        if source:
            newest = newest.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return self._events(conn, select(*events.c).where(events.c.id.in_(newest)).order_by(events.c.seq.desc()))

    def source_status(self) -> list[SourceStatus]:
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(posts.c.source_id, func.count()).where(posts.c.status != "removed")
                                       .group_by(posts.c.source_id)).all())
            held = dict(conn.execute(select(events.c.source_id, func.count()).where(events.c.status == "held")
                                     .group_by(events.c.source_id)).all())
            volatile = dict(conn.execute(
                select(posts.c.source_id, func.count(func.distinct(posts.c.id)))
                .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
                .where(edit_candidates.c.volatile_since.is_not(None)).group_by(posts.c.source_id)).all())
            rows = conn.execute(select(sources).where(sources.c.enabled.is_(True)).order_by(sources.c.id)).mappings()
            return [SourceStatus(name=r["name"], url=r["url"], posts=counts.get(r["id"], 0),
                                 last_check_at=_utc(r["last_check_at"]), last_success_at=_utc(r["last_success_at"]),
                                 last_error=r["last_error"], consecutive_failures=r["consecutive_failures"],
                                 degraded=bool(r["degraded"]), degraded_reason=r["degraded_reason"],
                                 held_events=held.get(r["id"], 0), volatile_posts=volatile.get(r["id"], 0))
                    for r in rows]

    # -- subscribers -----------------------------------------------------------------------
    @staticmethod
    def _subscriber(row) -> Subscriber:
        return Subscriber(id=row["id"], email=row["email"], cadence=row["cadence"], send_time=row["send_time"],
                          timezone=row["timezone"], weekday=row["weekday"],
                          sources=json.loads(row["sources"]) if row["sources"] else None, status=row["status"],
                          cursor=row["cursor"], created_at=_utc(row["created_at"]),
                          subscribed_at=_utc(row["subscribed_at"]))

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
                conn.execute(insert(subscribers).values(email=email, status="active", cursor=current, created_at=now,
                                                        subscribed_at=now, **values))
            elif row["status"] != "active":
                # Back after unsubscribing: from now on, not the changes they missed. A new
                # subscription: links from the old one no longer unsubscribe them.
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(
                    status="active", cursor=current, unsubscribed_at=None, subscribed_at=now, **values))
            else:
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(**values))
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            return self._subscriber(row)

    _SETTINGS = ("cadence", "send_time", "timezone", "weekday", "sources")

    def import_subscribers(self, entries: list[dict], now: datetime | None = None, *, commit: bool = True,
                           skip_refused: bool = False) -> SubscriberImport:
        """Many subscribers in one transaction: one executemany for the new addresses, one for
        the changed ones. Each entry has `email` (normalised, distinct) and the settings of
        `add_subscriber`. An address that unsubscribed is refused, never re-activated: only
        the person can subscribe again. Nothing is written when any entry is refused, unless
        `skip_refused`; nothing at all when not `commit`."""
        now = now or _now()
        result = SubscriberImport()
        additions, changes = [], []
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                current = conn.execute(select(counters.c.value).where(counters.c.name == "event_seq")).scalar()
                existing = {row["email"].lower(): row for row in conn.execute(
                    select(subscribers.c.id, subscribers.c.email, subscribers.c.status,
                           *(subscribers.c[name] for name in self._SETTINGS))).mappings()}
                for index, entry in enumerate(entries):
                    values = {"cadence": entry["cadence"], "send_time": entry["send_time"], "timezone": entry["timezone"],
                              "weekday": entry.get("weekday"),
                              "sources": json.dumps(entry["sources"]) if entry.get("sources") else None}
                    row = existing.get(entry["email"].lower())
                    if row is None:
                        additions.append({"email": entry["email"], "status": "active", "cursor": current,
                                          "created_at": now, "subscribed_at": now, **values})
                    elif row["status"] == "unsubscribed":
                        result.refused[index] = "unsubscribed; not re-subscribed without their consent"
                    elif row["status"] != "active":
                        result.refused[index] = f"{row['status']}; not re-activated by an import"
                    elif all(row[name] == values[name] for name in self._SETTINGS):
                        result.unchanged += 1
                    else:
                        changes.append({"row_id": row["id"], **{f"new_{name}": values[name] for name in self._SETTINGS}})
                result.added, result.updated = len(additions), len(changes)
                if not commit or (result.refused and not skip_refused):
                    transaction.rollback()
                    return result
                if additions:
                    conn.execute(insert(subscribers), additions)
                if changes:
                    conn.execute(update(subscribers)
                                 .where(subscribers.c.id == bindparam("row_id"), subscribers.c.status == "active")
                                 .values(**{name: bindparam(f"new_{name}") for name in self._SETTINGS}), changes)
                transaction.commit()
                result.committed = True
                return result
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise

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

    @staticmethod
    def _due_clause(now: datetime):
        return and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
                    or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now))

    def due_outbox(self, now: datetime, limit: int = 1000, *, claim: bool = True) -> list[OutboxItem]:
        """Pending messages whose next attempt is due, leased to the caller for `send_lease`
        so that a daemon and a CLI run never hand the same message to the server at once."""
        lease = now + self.send_lease if claim else None
        with self.engine.begin() as conn:
            query = (select(outbox.c.id, outbox.c.subscriber_id, outbox.c.to_addr, outbox.c.message_id, outbox.c.raw,
                            outbox.c.attempts, outbox.c.created_at)
                     .where(self._due_clause(now))
                     .order_by(outbox.c.id).limit(limit))
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if claim and rows:
                conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                             .values(claimed_until=lease))
            return [OutboxItem(id=r.id, subscriber_id=r.subscriber_id, to_addr=r.to_addr, message_id=r.message_id,
                               raw=bytes(r.raw), attempts=r.attempts, created_at=_utc(r.created_at),
                               claimed_until=lease) for r in rows]

    def outbox_due(self, now: datetime) -> bool:
        """Whether any message is due. Only looks: a lease taken here would hide the message
        from the flush that follows for the whole lease."""
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.id).where(self._due_clause(now)).limit(1)).first() is not None

    def release_claims(self, items: Iterable[OutboxItem]) -> int:
        """Hand leased messages that never reached the server back to the queue at once (a
        stopping sender), so a restart need not wait for the lease to run out. A lease that ran
        out and was taken by another sender is not ours to clear."""
        params = [{"outbox_id": i.id, "lease": i.claimed_until} for i in items if i.claimed_until is not None]
        if not params:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(update(outbox).where(outbox.c.id == bindparam("outbox_id"), outbox.c.status == "pending",
                                                     outbox.c.claimed_until == bindparam("lease"))
                                .values(claimed_until=None), params).rowcount

    def immediate_subscribers_behind(self) -> list[int]:
        """Active immediate subscribers whose cursor is before the newest published event,
        wherever it was published from (a CLI check, a release, a confirmed held edit)."""
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(events.c.seq)).where(events.c.status == "published")).scalar()
            if newest is None:
                return []
            return list(conn.execute(select(subscribers.c.id).where(
                subscribers.c.status == "active", subscribers.c.cadence == "immediate", subscribers.c.cursor < newest)
                .order_by(subscribers.c.id)).scalars())

    # Built once: marking is the one statement run per message sent, 10,000 times a digest.
    _MARK = update(outbox).where(outbox.c.id == bindparam("outbox_id"))
    _MARK_SENT = _MARK.values(status="sent", sent_at=bindparam("at"), attempts=outbox.c.attempts + 1,
                              claimed_until=None, last_error=None)
    _MARK_RETRY = _MARK.values(attempts=outbox.c.attempts + 1, next_attempt_at=bindparam("at"), claimed_until=None,
                               last_error=bindparam("error"))
    _MARK_FAILED = _MARK.values(status="failed", attempts=outbox.c.attempts + 1, claimed_until=None,
                                last_error=bindparam("error"))

    def note_accepted(self, message_id: str) -> None:
        """Written down the moment the server accepted it, before `mark_sent` commits."""
        if self.accepted is not None:
            try:
                self.accepted.record(message_id)
            except OSError as exc:
                raise StorageError(self.display_name, exc) from exc

    def reconcile_accepted(self, now: datetime) -> int:
        """Mark sent what a killed sender had written down as accepted but not yet committed."""
        if self.accepted is None:
            return 0
        ids, files = self.accepted.take()
        marked = 0
        if ids:
            with self.engine.begin() as conn:
                for start in range(0, len(ids), 500):
                    marked += conn.execute(update(outbox).where(
                        outbox.c.message_id.in_(ids[start:start + 500]), outbox.c.status == "pending").values(
                        status="sent", sent_at=now, claimed_until=None, attempts=outbox.c.attempts + 1,
                        last_error=None)).rowcount
        self.accepted.done(files)
        return marked

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
