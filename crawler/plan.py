"""What a crawl is asked to do and what it reports, per source: plain data, no Scrapy.

The caller builds one `CrawlPlan` per source and gets one `CrawlReport` per source back. Inside
the crawl every request carries its source's name in `request.meta["source"]`, so the
middlewares, the signals and the report collector keep sources apart even when one crawl
carries many of them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from crawler.urls import advertised_sitemaps
from state.records import MAX_EXCHANGES, CheckTraffic, Exchange

if TYPE_CHECKING:       # crawler.items loads lxml: a check whose answers are all 304s needs no parser
    from crawler.items import PostItem

# ETag and Last-Modified of one URL, as the site sent them.
Validators = tuple[str | None, str | None]
# Under feed_entry_key(url) the validators also keep what a post's feed entry said last time (its
# crawler.feeds.entry_fingerprint as the first element): the feed entry's own "ETag".
FEED_ENTRY_PREFIX = "postwatch:feed-entry:"


def feed_entry_key(url: str) -> str:
    """Where the fingerprint of the feed entry of the post at `url` is kept among the validators."""
    return FEED_ENTRY_PREFIX + url
# Under listing_entry_key(url) the title a known post's listing entry showed last time (as a
# crawler.feeds.entry_fingerprint): a retitled entry has the post's page read in the same check.
LISTING_ENTRY_PREFIX = "postwatch:listing-entry:"


def listing_entry_key(url: str) -> str:
    """Where the fingerprint of the listing entry's title of the post at `url` is kept."""
    return LISTING_ENTRY_PREFIX + url
# Under listing_lead_key(url) the lead (summary, excerpt) a known post's listing entry showed last
# time, and under sitemap_entry_key(url) the <lastmod> the site's sitemap gave it (both as a
# crawler.feeds.entry_fingerprint): either changing has the post's page read in the same check.
LISTING_LEAD_PREFIX = "postwatch:listing-lead:"
SITEMAP_ENTRY_PREFIX = "postwatch:sitemap-entry:"


def listing_lead_key(url: str) -> str:
    """Where the fingerprint of the listing entry's lead of the post at `url` is kept."""
    return LISTING_LEAD_PREFIX + url


def sitemap_entry_key(url: str) -> str:
    """Where the fingerprint of the sitemap's <lastmod> of the post at `url` is kept."""
    return SITEMAP_ENTRY_PREFIX + url
# Under feed_failed_key(feed URL) the validators keep the last failure of a source's feed (kind
# "auto"/"html": the listing is read without it): (time of the failure as ISO 8601, "<failures in
# a row> <what failed>"). Until the backoff after it passes (FEED_RETRY_FIRST, doubling with each
# failure in a row, at most FEED_RETRY_MAX) checks read the listing alone; a feed that answers
# again clears it (None, None).
FEED_FAILED_PREFIX = "postwatch:feed-failed:"
FEED_RETRY_FIRST = timedelta(hours=1)
FEED_RETRY_MAX = timedelta(days=1)


def feed_failed_key(url: str) -> str:
    """Where the last failure of the feed at `url` is kept among the validators."""
    return FEED_FAILED_PREFIX + url


@dataclass(frozen=True)
class FeedFailure:
    """A feed's last failure: when, how many checks in a row it failed, and the one-line problem."""
    at: datetime
    failures: int
    problem: str

    @property
    def retry_at(self) -> datetime:
        return self.at + min(FEED_RETRY_FIRST * 2 ** min(max(self.failures, 1) - 1, 16), FEED_RETRY_MAX)

    def validators(self) -> Validators:
        return self.at.isoformat(), f"{self.failures} {self.problem}"

    @classmethod
    def kept(cls, validators: dict, url: str | None) -> FeedFailure | None:
        """The failure kept for the feed at `url`, None when there is none (or it was cleared)."""
        at, rest = (validators.get(feed_failed_key(url)) if url else None) or (None, None)
        if not at:
            return None
        try:
            when = datetime.fromisoformat(at)
            count, _, problem = (rest or "1").partition(" ")
            return cls(when if when.tzinfo else when.replace(tzinfo=timezone.utc), int(count), problem)
        except (TypeError, ValueError):
            return None


def feed_resting(validators: dict, url: str | None, now: datetime) -> FeedFailure | None:
    """The failure of the feed at `url` while its backoff lasts (the check skips the feed), else None."""
    failure = FeedFailure.kept(validators, url)
    return failure if failure is not None and now < failure.retry_at else None


# A robots.txt body and when it was fetched, per origin ("https://host[:port]").
RobotsCache = dict[str, tuple[bytes, datetime]]


@dataclass(frozen=True)
class CachedRobotsTxt:
    """A stored robots.txt as the crawl's robots.txt gate gets it (setting
    `POSTWATCH_ROBOTS_CACHE`: origin -> CachedRobotsTxt), with the validators to revalidate it."""
    body: bytes
    fetched_at: datetime
    validators: Validators = (None, None)


@dataclass(frozen=True)
class Prefetched:
    """An answer the lean revalidation client (crawler.revalidate) already holds for a URL, as the
    site sent it (body still content-encoded): the crawl is handed it instead of asking again."""
    url: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class SourceSpec:
    name: str
    url: str                          # listing / home page URL
    kind: str = "auto"                # a registered crawler.kinds.SourceKind name
    feed_url: str | None = None
    sitemap_url: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)
    # `feed_url` is the feed an earlier check found advertised on the listing (kind "auto"), not
    # a configured one: a read of the listing looks again at what it advertises now.
    feed_discovered: bool = False


# What decides a check's first URLs for the built-in kinds (crawler.kinds): name -> (current
# name, feed_only, discovers_feeds). Known here without importing crawler.kinds, which loads
# parsel and lxml; a kind of another name (or "selectors", whose config is checked by its class)
# is asked of the registry. tests/test_startup.py keeps the two in step.
BUILT_IN_KINDS: dict[str, tuple[str, bool, bool]] = {
    "auto": ("auto", False, True),
    "html": ("html", False, False),
    "feed": ("feed", True, False),
    "webflow": ("webflow", False, False),
    "link": ("webflow", False, False),
}


def kind_traits(name: str) -> tuple[str, bool, bool] | None:
    """(current name, feed_only, discovers_feeds) of the kind registered under `name`; None when
    no kind is. The registry is imported only for a kind that is not built in (a module that
    registers its own kind has imported it already)."""
    if "crawler.kinds" not in sys.modules and name in BUILT_IN_KINDS:
        return BUILT_IN_KINDS[name]
    from crawler.kinds import SourceKind, UnknownSourceKind

    try:
        kind = SourceKind.named(name)
    except UnknownSourceKind:
        return None
    return kind.__kind__, kind.feed_only, kind.discovers_feeds


# How long a kind "auto" source whose listing advertised a feed is checked through that feed
# alone (one conditional request): its listing is read again after this, at a full sweep, and
# whenever the feed fails.
LISTING_EVERY = timedelta(days=1)


def feed_alone(kind: str, feed_url: str | None, discovered_feed_url: str | None,
               listing_read_at: datetime | None, now: datetime) -> bool:
    """Whether a normal check of a source reads the feed its listing advertised without the
    listing (CrawlPlan.feed_alone): for a kind that discovers feeds (not one whose feed is the
    source anyway), with a discovered feed and no configured one (an operator who configured
    `feed_url` on an "auto" source gets both read), while its listing was read less than
    LISTING_EVERY ago. A baseline or a full sweep reads the listing whatever this says."""
    if feed_url or not discovered_feed_url or listing_read_at is None:
        return False
    traits = kind_traits(kind)
    if traits is None or traits[1] or not traits[2]:
        return False
    return timedelta(0) <= now - listing_read_at < LISTING_EVERY


@dataclass
class CrawlPlan:
    source: SourceSpec
    known_urls: set[str] = field(default_factory=set)
    # When known posts were published: a newer one missing from the listing's or feed's window is
    # looked at on its own page (a removal the window cannot explain).
    known_published: dict[str, datetime] = field(default_factory=dict)
    # Validators by URL; under feed_entry_key(url) the fingerprint of the post's last feed entry.
    validators: dict[str, Validators] = field(default_factory=dict)
    robots: RobotsCache = field(default_factory=dict)
    baseline: bool = False
    # Known posts whose page this check reads by the revisit schedule (or all, in a full sweep).
    # A summary feed's entry of a known post that changed (summary, content, title, update time)
    # adds that post's page in the same crawl, within what the schedule leaves of the setting
    # REVISITS_PER_CHECK ([crawl] revisits_per_check).
    sweep_urls: list[str] = field(default_factory=list)
    # Known posts whose page must be looked at again now (an edit seen once waits for this
    # fetch to confirm it): requested without validators, so the answer is the content itself.
    recheck_urls: list[str] = field(default_factory=list)
    recheck_feed: bool = False        # the same for edits seen once in a feed entry
    # The feed (found on the listing by an earlier check, and read well since) is read without
    # the listing: a kind "auto" source between two reads of its listing (App._feed_alone). The
    # listing is still read when the feed fails.
    feed_alone: bool = False
    # Answers already fetched for this source's first URLs (crawler.revalidate), by URL: the
    # crawl's first request of each is answered with it, so no URL is fetched twice in a check.
    prefetched: dict[str, Prefetched] = field(default_factory=dict)


def sitemap_of(plan: CrawlPlan) -> str | None:
    """The sitemap a normal check of the plan's source reads for <lastmod> changes of known posts:
    the source's own `sitemap_url`, else the first one the robots.txt kept for its origin
    advertises; None at a baseline, or for a site without one (never guessed). A check that
    starts without Scrapy (crawler.revalidate) asks it after a 304 of the listing when validators
    are kept for it, which the state loads for a source's own `sitemap_url`; an advertised one is
    asked whenever the crawl runs."""
    if plan.baseline:
        return None
    if plan.source.sitemap_url:
        return plan.source.sitemap_url
    parts = urlsplit(plan.source.url)
    kept = plan.robots.get(f"{parts.scheme}://{parts.netloc}")
    advertised = advertised_sitemaps(kept[0].decode("utf-8", "replace"), plan.source.url) if kept else []
    return advertised[0] if advertised else None


def robots_cache(plans: list[CrawlPlan]) -> dict[str, CachedRobotsTxt]:
    """The robots.txt cache of the plans' sources, for one crawl of all of them: the newest copy
    of each origin's robots.txt, with the validators any of the sources kept for it."""
    newest: dict[str, tuple[bytes, datetime]] = {}
    validators: dict[str, Validators] = {}
    for plan in plans:
        for origin, (body, fetched_at) in plan.robots.items():
            if origin not in newest or newest[origin][1] < fetched_at:
                newest[origin] = (body, fetched_at)
            kept = plan.validators.get(f"{origin}/robots.txt")
            if kept and any(kept):
                validators.setdefault(origin, kept)
    return {origin: CachedRobotsTxt(body, fetched_at, validators.get(origin, (None, None)))
            for origin, (body, fetched_at) in newest.items()}


@dataclass
class CrawlReport:
    source_name: str
    baseline: bool = False            # this crawl recorded the source's first baseline
    ok: bool = True
    error: str | None = None
    not_modified: bool = False
    listing_complete: bool = False
    posts_by_url: dict[str, PostItem] = field(default_factory=dict)
    unchanged_urls: set[str] = field(default_factory=set)
    gone: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    validators: dict[str, Validators] = field(default_factory=dict)
    robots: RobotsCache = field(default_factory=dict)
    requests: int = 0
    response_bytes: int = 0
    not_modified_count: int = 0
    warnings: list[str] = field(default_factory=list)
    feed_problem: str | None = None     # the feed failed and the listing was read without it
    discovered_feed: str | None = None
    listing_read: bool = False        # the first listing page answered (200 or 304)
    exchanges: list[Exchange] = field(default_factory=list)    # the first state.traffic.MAX_EXCHANGES requests

    def traffic(self) -> CheckTraffic:
        """What this check cost the site, as the console keeps it (state.traffic)."""
        return CheckTraffic(ok=self.ok, requests=self.requests, response_bytes=self.response_bytes,
                            not_modified=self.not_modified_count, exchanges=self.exchanges[:MAX_EXCHANGES])

    @property
    def posts(self) -> list[PostItem]:
        return list(self.posts_by_url.values())

    def fail(self, error: str) -> None:
        if self.ok:
            self.ok, self.error = False, " ".join(error.split())


@dataclass
class DiscoveryReport:
    """What `postwatch sources test URL` shows: what postwatch would extract, nothing stored."""
    url: str
    ok: bool
    error: str | None
    spec: SourceSpec
    posts: list[PostItem]
    requests: int

    def describe(self, shown: int = 5) -> str:
        if not self.ok:
            return f"{self.url}: {self.error}"
        lines = [f"{self.url}",
                 f"  feed:    {self.spec.feed_url or 'none found'}",
                 f"  sitemap: {self.spec.sitemap_url or 'none found'}",
                 f"  posts:   {len(self.posts)} found on the first listing pages ({self.requests} requests)"]
        dated = sorted(self.posts, key=lambda p: p.published.timestamp() if p.published else 0, reverse=True)
        for post in dated[:shown]:
            when = post.published.strftime("%Y-%m-%d") if post.published else "undated   "
            lines.append(f"    {when}  {post.title}")
        return "\n".join(lines)
