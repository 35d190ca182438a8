"""Table definitions (SQLAlchemy Core). The migrations in state/migrations create them; this
module is what the queries of the storage modules (state/sources.py, posts.py, events.py,
subscribers.py, outbox.py, lease.py) are written against."""
from __future__ import annotations

from sqlalchemy import (Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String,
                        Table, Text, UniqueConstraint)

metadata = MetaData()
UTC = DateTime(timezone=True)

sources = Table(
    "sources", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("kind", String(20), nullable=False, default="auto"),
    Column("feed_url", Text),
    Column("sitemap_url", Text),
    Column("selectors", Text, nullable=False, default="{}"),
    Column("title", Text),
    Column("origin", String(20), nullable=False, default="config"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("baseline_done", Boolean, nullable=False, default=False),
    Column("last_check_at", UTC),
    Column("last_success_at", UTC),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("degraded", Boolean, nullable=False, default=False),
    Column("degraded_reason", Text),
    Column("last_full_sweep_at", UTC),
    Column("created_at", UTC, nullable=False),
    Column("discovered_feed_url", Text),      # the feed its listing advertises (kind "auto")
    # Added by revision 0010: when the cluster's planning task next hands it to a worker (NULL: now).
    Column("next_check_at", UTC),
    # Added by revision 0014: when a check last read its listing (200 or 304). A source of kind
    # "auto" with a discovered feed reads the feed alone until this is a day old.
    Column("listing_read_at", UTC),
    # Added by revision 0016 (the console): a paused source is not checked; "check now" asks the
    # daemon's next sweep to take it.
    Column("paused_at", UTC),
    Column("check_requested_at", UTC),
    # Added by revision 0017: a source added with the CLI or the console: its own check interval
    # (NULL: [crawl] interval) and keyword filters (JSON lists; NULL: none), edited in the console.
    Column("interval_seconds", Float),
    Column("include_terms", Text),
    Column("exclude_terms", Text),
    Index("ix_sources_next_check", "next_check_at"),
)

posts = Table(
    "posts", metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("published_at", UTC),
    Column("first_seen_at", UTC, nullable=False),
    Column("last_seen_at", UTC, nullable=False),
    Column("status", String(20), nullable=False, default="active"),
    Column("gone_since", UTC),
    Column("content_hash", String(64)),
    Column("page_checked_at", UTC),           # the post's own page last fetched (revisits by age)
    UniqueConstraint("source_id", "url", name="uq_posts_source_url"),
)

post_versions = Table(
    "post_versions", metadata,
    Column("id", Integer, primary_key=True),
    Column("post_id", Integer, ForeignKey("posts.id", ondelete="CASCADE"), nullable=False),
    Column("origin", String(20), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("body_html", Text),
    Column("fetched_at", UTC, nullable=False),
    # Added by revision 0013: the reader that produced the body (crawler.items.PostItem.reader;
    # NULL: unknown, kept before 0013). Another reader's body is a new reference, not an edit.
    Column("reader", String(40)),
    Index("ix_post_versions_post", "post_id", "origin", "id"),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, unique=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("post_id", Integer, ForeignKey("posts.id", ondelete="SET NULL")),
    Column("kind", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("published_at", UTC),
    Column("summary", Text),
    Column("body_html", Text),
    Column("diff", Text),
    Column("version_hash", String(64)),
    Column("previous_hash", String(64)),
    Column("created_at", UTC, nullable=False),
    Column("status", String(20), nullable=False),
    Index("ix_events_source_status", "source_id", "status"),
    Index("ix_events_created", "created_at"),
)

subscribers = Table(
    "subscribers", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("cadence", String(20), nullable=False),
    Column("send_time", String(5), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("weekday", Integer),
    Column("sources", Text),
    Column("status", String(20), nullable=False),
    Column("cursor", Integer, nullable=False, default=0),
    Column("created_at", UTC, nullable=False),
    Column("unsubscribed_at", UTC),
    # Added by revision 0004: when the current subscription began (NULL: before 0004).
    Column("subscribed_at", UTC),
    # Added by revision 0006: hard bounces in a row, and why and when the address was suppressed.
    Column("bounces", Integer, nullable=False, server_default="0"),
    Column("suppressed_reason", String(200)),
    Column("suppressed_at", UTC),
    # Added by revision 0007: the consent record. How they joined (page, cli, import); when an
    # unconfirmed signup was asked and reminded (pending, or an unsubscribed address asking again);
    # when and from where the confirmation link was followed; a re-consent's note.
    Column("joined_via", String(20)),
    Column("signup_at", UTC),
    Column("reminded_at", UTC),
    Column("confirmed_at", UTC),
    Column("confirm_ip", String(64)),
    Column("confirm_user_agent", String(300)),
    Column("consent_note", String(200)),
    # Added by revision 0009: keyword filters, JSON {"include": [...], "exclude": [...]} (NULL: none).
    Column("filters", Text),
    # ...and where the subscriber was added: "cli" (subscribers add/import), "config" ([[routes]]).
    Column("origin", String(20), nullable=False, server_default="cli"),
    # Added by revision 0015: the language of their mails and pages ("en", "ko").
    Column("lang", String(8), nullable=False, server_default="en"),
    # Revision 0012: ids are in mailed tokens, so SQLite never hands a deleted one out again.
    sqlite_autoincrement=True,
)

# Added by revision 0007: addresses erased on request (`subscribers forget`), as the sha256 of the
# normalised address, so that they are not subscribed again without their new consent.
forgotten_addresses = Table(
    "forgotten_addresses", metadata,
    Column("address_hash", String(64), primary_key=True),
    Column("forgotten_at", UTC, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("to_addr", String(320), nullable=False),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTC, nullable=False),
    Column("claimed_until", UTC),
    Column("last_error", Text),
    Column("first_seq", Integer),
    Column("last_seq", Integer),
    Column("created_at", UTC, nullable=False),
    Column("sent_at", UTC),
    # Added by revision 0009: the channel the message leaves through (email, webhook, apprise).
    Column("channel", String(20), nullable=False, server_default="email"),
    Index("ix_outbox_due", "status", "next_attempt_at"),
)

http_validators = Table(
    "http_validators", metadata,
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("url", String(2048), primary_key=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("updated_at", UTC, nullable=False),
)

# Added by revision 0011 (`postwatch worker`): when the next request to a host may start.
host_fences = Table(
    "host_fences", metadata,
    Column("host", String(255), primary_key=True),
    Column("free_at", UTC, nullable=False),
)

robots_cache = Table(
    "robots_cache", metadata,
    Column("origin", String(512), primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("fetched_at", UTC, nullable=False),
)

counters = Table(
    "counters", metadata,
    Column("name", String(50), primary_key=True),
    Column("value", Integer, nullable=False),
)

# The rows a new database starts with (revision 0001 inserts the same).
INITIAL_ROWS = {counters: [{"name": "event_seq", "value": 0}]}

# Added by revision 0002.
alerts = Table(
    "alerts", metadata,
    Column("key", String(300), primary_key=True),
    Column("last_sent_at", UTC, nullable=False),
    Column("count", Integer, nullable=False, default=1, server_default="1"),
)

# Added by revision 0003: one row per post and origin ("page", "feed") while new content awaits
# its confirming fetch, or while the post changes on every fetch (volatile_since set).
edit_candidates = Table(
    "edit_candidates", metadata,
    Column("post_id", Integer, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True),
    Column("origin", String(20), primary_key=True),
    Column("content_hash", String(64)),
    Column("title", Text),
    Column("streak", Integer, nullable=False, default=0, server_default="0"),
    Column("first_seen_at", UTC),
    Column("last_seen_at", UTC, nullable=False),
    Column("volatile_since", UTC),
)

# Added by revision 0005. One row while a daemon runs on a PostgreSQL database: whoever holds an
# unexpired lease (times from the database's clock) is the only daemon allowed to run jobs.
daemon_lease = Table(
    "daemon_lease", metadata,
    Column("name", String(50), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("node", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", UTC, nullable=False),
    Column("renewed_at", UTC, nullable=False),
    Column("expires_at", UTC, nullable=False),
)

# Added by revision 0016: the operator's console. Accounts (Argon2id hashes), server-side
# sessions (the sha256 of the session id, never the id), and what each operator did.
operators = Table(
    "operators", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTC, nullable=False),
    Column("password_changed_at", UTC, nullable=False),
    Column("last_sign_in_at", UTC),
    sqlite_autoincrement=True,
)

operator_sessions = Table(
    "operator_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("operator_id", Integer, ForeignKey("operators.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTC, nullable=False),
    Column("last_seen_at", UTC, nullable=False),
    Column("client", String(64)),
    Index("ix_operator_sessions_operator", "operator_id"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTC, nullable=False),
    Column("operator", String(100)),
    Column("action", String(40), nullable=False),
    Column("target", Text),
    Column("detail", Text),
    Column("client", String(64)),
)

# Added by revision 0018 (the console, issue 34). What each check cost the watched site, per
# source and UTC day (kept 35 days); the last check's requests, one row per source (its
# exchanges as JSON, at most state.traffic.MAX_EXCHANGES); and failed sign-ins, kept for the
# throttle window so that a restart does not forgive them.
source_traffic = Table(
    "source_traffic", metadata,
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),      # YYYY-MM-DD, UTC
    Column("checks", Integer, nullable=False, default=0),
    Column("failed_checks", Integer, nullable=False, default=0),
    Column("requests", Integer, nullable=False, default=0),
    Column("response_bytes", Integer, nullable=False, default=0),
    Column("not_modified", Integer, nullable=False, default=0),
)

source_last_check = Table(
    "source_last_check", metadata,
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("checked_at", UTC, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("response_bytes", Integer, nullable=False),
    Column("not_modified", Integer, nullable=False),
    Column("exchanges", Text, nullable=False),
    Column("failing_since", UTC),                      # the first failed check of the current streak
)

login_failures = Table(
    "login_failures", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(200), nullable=False),       # "account:NAME" or "client:ADDRESS"
    Column("at", UTC, nullable=False),
    Index("ix_login_failures_key_at", "key", "at"),
)
