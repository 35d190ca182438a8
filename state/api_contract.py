"""The contract of `state.Store`: what the scheduler, the CLI and digest/ call.

The state helper implements these in `state/store.py` (class `Store`, re-exported by
`state/__init__.py`) and then deletes this file. Signatures and semantics below are the
agreement; add methods freely, but do not change these without telling the integrator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Protocol


class ObservedPost(Protocol):          # crawler.items.PostItem satisfies this
    url: str
    title: str
    published: datetime | None
    body_html: str | None
    summary: str | None
    origin: str                        # "page" | "feed" | "listing"


@dataclass
class SourceRecord:
    name: str
    url: str
    kind: str = "auto"                 # "link" | "html" | "feed" | "auto"
    feed_url: str | None = None
    sitemap_url: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)
    title: str | None = None           # human name shown in digests, default = name
    origin: str = "config"             # "config" (from the TOML file) | "cli" (sources add)


@dataclass
class KnownPost:
    url: str
    title: str
    content_hash: str | None           # None when only seen in a listing (no body fetched yet)
    status: str                        # "active" | "gone_pending" | "removed"


@dataclass
class CrawlState:
    baseline_done: bool
    known: dict[str, KnownPost]                      # every post of the source, any status
    validators: dict[str, tuple[str | None, str | None]]
    robots: dict[str, tuple[bytes, datetime]]
    last_full_sweep_at: datetime | None


@dataclass
class CheckInput:                                  # what the scheduler hands over after a crawl
    posts: list[ObservedPost]
    not_modified: bool
    unchanged_urls: set[str]
    gone: dict[str, int]
    failed: dict[str, str]
    validators: dict[str, tuple[str | None, str | None]]
    robots: dict[str, tuple[bytes, datetime]]
    full_sweep: bool
    baseline: bool


@dataclass
class EventRecord:
    id: int
    seq: int | None                    # None while held
    source: str
    kind: str                          # new | updated | removed | restored
    url: str
    title: str
    published: datetime | None
    summary: str | None                # plain-text excerpt (<= ~300 chars)
    body_html: str | None              # the post's content HTML as fetched (digest sanitises it)
    diff: dict | None                  # see docs/architecture.md
    created_at: datetime
    status: str                        # "published" | "held" | "dismissed"


@dataclass
class ApplyResult:
    events: list[EventRecord]          # events created by this check (published or held)
    held: bool                         # True when the flood guard held them
    hold_reason: str | None
    baseline: bool                     # this check recorded the baseline (no events)


@dataclass
class Subscriber:
    id: int
    email: str
    cadence: str                       # "immediate" | "daily" | "weekly"
    send_time: str                     # "HH:MM" in tz (daily/weekly)
    timezone: str                      # IANA name, e.g. "Europe/London"
    weekday: int | None                # 0=Monday .. 6 (weekly)
    sources: list[str] | None          # None = all sources
    status: str                        # "active" | "unsubscribed"
    cursor: int                        # last event seq delivered
    created_at: datetime


@dataclass
class ComposedMessage:
    message_id: str                    # "<...@...>", deterministic per subscriber and digest
    subject: str
    to_addr: str
    raw: bytes                         # the whole RFC 5322 message


@dataclass
class OutboxItem:
    id: int
    subscriber_id: int | None          # None for operator alerts
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


class StoreContract(Protocol):
    # -- lifecycle
    def __init__(self, url: str, *, removal_confirm_after: timedelta = timedelta(hours=1),
                 flood_share: float = 0.30) -> None:
        """url: "sqlite:///path.db" or a bare file path (SQLite, WAL, foreign keys, busy
        timeout) or "postgresql+psycopg://..." . Runs Alembic migrations to head."""
    def close(self) -> None: ...
    def instance_lock(self) -> Any:
        """Context manager; raises AlreadyRunning when another process holds it
        (SQLite: fcntl lock on '<db>.lock'; PostgreSQL: pg_try_advisory_lock)."""

    # -- sources
    def sync_sources(self, records: Iterable[SourceRecord]) -> None:
        """Upsert the config's sources by name (origin='config'). Sources added with the
        CLI (origin='cli') are kept; config sources no longer in the file are disabled, their
        posts kept."""
    def add_source(self, record: SourceRecord) -> None: ...
    def remove_source(self, name: str) -> bool: ...
    def list_sources(self) -> list[SourceRecord]: ...
    def get_source(self, name: str) -> SourceRecord | None: ...

    # -- checks
    def crawl_state(self, source: str) -> CrawlState: ...
    def apply_check(self, source: str, check: CheckInput, now: datetime) -> ApplyResult:
        """One transaction: diff what the crawl saw against the stored posts.
        - baseline (first successful check): store posts/versions, no events.
        - new canonical URL -> 'new'; body text hash changed vs the last version OF THE SAME
          ORIGIN ('page' vs 'feed') -> 'updated' with the paragraph diff; a different origin is
          recorded silently. Whitespace/markup-only changes hash the same (normalised text).
        - a post with no stored body that now has one: version recorded silently.
        - gone 404/410: first time -> status gone_pending (no event); again after
          removal_confirm_after -> 'removed'. failed/absent never remove anything.
        - a removed post seen again with 200 -> 'restored'.
        - flood guard: if the non-baseline events would touch more than flood_share of the
          source's known posts (and more than 3 posts), or the crawl saw 0 posts where posts
          existed and the listing was not 304: events are stored HELD (no seq), source marked
          degraded with the reason. The next check that sees the same changes again confirms
          them (publishes); `release_source` publishes them too.
        - records validators, robots cache, last_check_at/last_success_at, clears last_error.
        """
    def record_check_failure(self, source: str, error: str, now: datetime) -> int:
        """Stores last_error, returns consecutive failure count. Touches no post."""
    def release_source(self, name: str) -> int:
        """Publish held events of a source, clear degraded; returns how many."""
    def history(self, source: str | None = None, limit: int = 50) -> list[EventRecord]: ...
    def source_status(self) -> list[SourceStatus]: ...
    def mark_full_sweep(self, source: str, now: datetime) -> None: ...

    # -- subscribers
    def add_subscriber(self, email: str, *, cadence: str = "daily", send_time: str = "08:00",
                       timezone: str = "UTC", weekday: int | None = None,
                       sources: list[str] | None = None, now: datetime | None = None) -> Subscriber:
        """Cursor starts at the current max seq: no back-catalogue. Re-adding an
        unsubscribed address reactivates it with a fresh cursor."""
    def remove_subscriber(self, email: str) -> bool: ...
    def unsubscribe(self, subscriber_id: int) -> bool: ...
    def list_subscribers(self, active_only: bool = False) -> list[Subscriber]: ...
    def get_subscriber(self, key: int | str) -> Subscriber | None: ...

    # -- digest outbox (transactional)
    def pending_events(self, subscriber: Subscriber) -> list[EventRecord]:
        """Published events with seq > cursor, for the subscriber's sources, oldest first."""
    def compose_digests(self, build: Callable[[Subscriber, list[EventRecord]], ComposedMessage],
                        now: datetime, subscriber_ids: Iterable[int] | None = None) -> list[int]:
        """For each active subscriber (or the given ids) with pending events, in ONE
        transaction per subscriber: build the message, insert it into the outbox, advance
        the cursor to the max seq included. Returns outbox ids."""
    def enqueue_message(self, message: ComposedMessage, now: datetime, subscriber_id: int | None = None) -> int:
        """Put an already-built message (operator alert) into the outbox; idempotent on message_id."""
    def due_outbox(self, now: datetime, limit: int = 1000) -> list[OutboxItem]:
        """Pending items whose next attempt is due."""
    def mark_sent(self, outbox_id: int, now: datetime) -> None: ...
    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: datetime) -> None: ...
    def mark_failed(self, outbox_id: int, error: str, now: datetime) -> None: ...
    def outbox_stats(self) -> dict[str, int]:
        """{'pending': n, 'sent': n, 'failed': n, 'oldest_pending_age_s': n}"""

    # -- alerts and retention
    def alert_due(self, key: str, now: datetime, every: timedelta = timedelta(days=1)) -> bool:
        """True (and records now) when no alert with this key was sent within `every`."""
    def prune(self, now: datetime, older_than: timedelta) -> dict[str, int]:
        """Delete superseded versions and delivered events older than the age; keep each
        post's latest version and everything not yet delivered to every subscriber."""
