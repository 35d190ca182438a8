"""The records the store hands out and takes in: what callers (the crawl, the digest, the CLI)
see of the stored state. Plain dataclasses; no SQL."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

# Where a post was seen: a page's own body beats a feed's copy, which beats the line in a listing.
ORIGIN_RANK = {"listing": 0, "feed": 1, "page": 2}


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
    discovered_feed_url: str | None = None     # the feed the listing advertises, found by a check
    # A source added with the CLI or the console (stored, edited in the console); a configured
    # source's come from the config file and are None/() here.
    interval: timedelta | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def read_feed_url(self) -> str | None:
        """The feed a check reads first: the configured one, else the one the listing advertised."""
        return self.feed_url or self.discovered_feed_url


@dataclass
class KnownPost:
    url: str
    title: str
    content_hash: str | None
    status: str
    published_at: datetime | None = None


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
    # Neither held events nor a degraded mark: a check that sees nothing new changes nothing but
    # the source's check times (Store.record_quiet_checks).
    quiet: bool = True
    # Known posts whose page is due for a look by the revisit schedule (most overdue first), and
    # posts missing since at least the removal delay, whose page is asked again to confirm.
    revisits: list[str] = field(default_factory=list)
    removals_to_confirm: list[str] = field(default_factory=list)
    failures: int = 0       # failed checks in a row before this one (a success after them is told)
    listing_read_at: datetime | None = None     # when a check last read the listing (200 or 304)


@dataclass
class CheckInput:
    """What one check saw, built by hand (tests, benchmarks); a crawl's own report
    (crawler.plan.CrawlReport) is handed to the store as it is: both are an ObservedCheck."""
    posts: list[ObservedPost]
    not_modified: bool = False
    unchanged_urls: set[str] = field(default_factory=set)
    gone: dict[str, int] = field(default_factory=dict)
    validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    robots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    baseline: bool = False
    discovered_feed: str | None = None
    listing_read: bool = False


class ObservedCheck(Protocol):
    """What `Store.apply_check` reads of a check. A post that could not be fetched (5xx,
    timeout) is in none of these: it is neither seen, unchanged nor gone, so nothing changes."""
    @property
    def posts(self) -> list[ObservedPost]: ...
    not_modified: bool                        # the listing or feed answered 304
    unchanged_urls: set[str]                  # post pages that answered 304
    gone: dict[str, int]                      # post pages that answered 404/410 -> status
    validators: dict[str, tuple[str | None, str | None]]
    robots: dict[str, tuple[bytes, datetime]]
    baseline: bool
    discovered_feed: str | None               # the feed the listing advertises, if it was read
    listing_read: bool                        # the first listing page answered (200 or 304)


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
    bounces: int = 0                              # hard bounces in a row (state/suppression.py)
    suppressed_reason: str | None = None
    suppressed_at: datetime | None = None
    # The consent record (revision 0007); None for rows from before it.
    joined_via: str | None = None                 # page, cli, import
    lang: str = "en"                              # the language of their mails and pages (revision 0015)
    signup_at: datetime | None = None             # an unconfirmed signup waiting for its link
    reminded_at: datetime | None = None
    confirmed_at: datetime | None = None
    confirm_ip: str | None = None
    confirm_user_agent: str | None = None
    consent_note: str | None = None
    # Keyword filters (digest/filters.py): words or /regular expressions/ on an event's title
    # and text. An event must match an `include` term (when there are any) and no `exclude` term.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    origin: str = "cli"            # "config": a [[routes]] entry of the config file, kept in step with it


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
    channel: str = "email"            # the kind of message: email, webhook, apprise (digest/delivery.py)


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
    channel: str = "email"


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
    paused_at: datetime | None = None              # paused in the console: not checked
    check_requested_at: datetime | None = None     # "check now" asked, not yet done
    origin: str = "config"


# What one check cost the watched site, kept by state.traffic for the console (issue 34).
MAX_EXCHANGES = 100          # requests of one check kept for the source page


@dataclass
class Exchange:
    """One request of a check and what came of it."""
    url: str
    status: int | None           # None: no answer (a timeout, a refused connection: `error` says)
    size: int = 0                # body bytes as received
    error: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass
class CheckTraffic:
    """One check's requests: the totals, and the first MAX_EXCHANGES of its exchanges."""
    ok: bool
    requests: int
    response_bytes: int
    not_modified: int
    exchanges: list[Exchange] = field(default_factory=list)
