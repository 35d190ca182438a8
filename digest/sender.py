"""The transactional outbox: compose and store first, send after, mark sent only on acceptance."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

from digest.compose import DigestComposer, preferences_url, unsubscribe_url
from digest.delivery import channel_for_address, private_opener, shown_address
from digest.filters import KeywordFilter, select_events
from digest.render import render_digest
from digest.settings import DigestSettings, FlushStats  # noqa: F401 - FlushStats: its old home
from state import Subscriber
from state.suppression import DEFAULT_BOUNCE_LIMIT, is_hard_bounce

log = logging.getLogger("postwatch.digest")

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)


class ComposeForChannels:
    """Composes each subscriber's message for the channel their address belongs to: a digest
    email, a webhook's JSON, an Apprise notification. One composer per kind for a whole run,
    so the email digests still share their renderings."""

    def __init__(self, settings: DigestSettings, now: datetime):
        self.settings, self.now = settings, now
        self._composers: dict[str, object] = {}

    def __call__(self, subscriber: Subscriber, events):
        channel = channel_for_address(subscriber.email)
        kind = channel.carries if channel is not None else "email"
        if kind not in self._composers:
            self._composers[kind] = (channel.composer(self.settings, self.now) if channel is not None
                                     else DigestComposer(self.settings, self.now))
        return self._composers[kind](subscriber, events)


def keyword_selection(source_filters: dict[str, KeywordFilter]):
    """What `Store.compose_digests` asks of each subscriber's pending events: those that pass
    their source's filter and the subscriber's own."""
    def choose(subscriber: Subscriber, events):
        return select_events(events, source_filters, KeywordFilter(subscriber.include, subscriber.exclude,
                                                                  owner=f"subscriber #{subscriber.id}"))
    return choose


def compose_and_queue(store, settings: DigestSettings, now: datetime, subscriber_ids=None,
                      source_filters: dict[str, KeywordFilter] | None = None) -> list[int]:
    return store.compose_digests(ComposeForChannels(settings, now), now, subscriber_ids,
                                 choose=keyword_selection(source_filters or {}))


def next_attempt(attempts: int, now: datetime, first: timedelta = BACKOFF_FIRST) -> datetime:
    delay = min(BACKOFF_MAX, first * (2 ** max(0, attempts)))
    return now + delay * random.uniform(0.9, 1.1)


def flush_outbox(store, channel, now: datetime, *, max_attempts: int = 12, limit: int = 10_000,
                 retry_after: timedelta = BACKOFF_FIRST, stop: threading.Event | None = None,
                 bounce_limit: int = DEFAULT_BOUNCE_LIMIT) -> FlushStats:
    """Send what is due of the messages `channel` carries (its `carries`: email, webhook...). Once `stop` is set no further message is handed to the channel: those
    in flight finish and are recorded, the rest stay pending with their lease handed back.
    A permanent refusal of a subscriber's address (not of the message) is a hard bounce;
    `bounce_limit` in a row suppress the subscriber, and nothing more is sent to them."""
    stats = FlushStats()
    recovered = store.reconcile_accepted(now)
    if recovered:
        log.warning("mail: %d messages the server had accepted before postwatch was stopped are marked sent", recovered)
    handout = _Handout(store, now, limit, stop, kind=channel.carries)
    put_off: dict[str, int] = {}      # reason -> messages not tried because of it (one line each)
    try:
        for item, result in channel.send_many(handout, on_sent=store.note_accepted,
                                              wanted=handout.wanted):
            if result.status == "sent":
                store.mark_sent(item.id, datetime.now(timezone.utc), item.subscriber_id)
                stats.sent += 1
            elif result.status == "failed" or item.attempts + 1 >= max_attempts:
                store.mark_failed(item.id, result.detail, now)
                log.error("%s to %s failed permanently: %s", _what(channel), shown_address(item.to_addr), result.detail)
                stats.failed += 1
                if (result.status == "failed" and item.subscriber_id is not None
                        and (result.address_gone or is_hard_bounce(result.code, result.enhanced))):
                    suppressed = store.record_bounce(item.subscriber_id, result.detail, now, bounce_limit)
                    if suppressed is not None:
                        handout.skip.add(suppressed.id)
                        stats.suppressed += 1
                        log.warning("mail: %s suppressed: %s", suppressed.email, suppressed.suppressed_reason)
            else:
                when = next_attempt(item.attempts, handout.clock(), retry_after)
                if result.retry_after:          # the receiver said how long to wait: not sooner
                    when = max(when, handout.clock() + timedelta(seconds=result.retry_after))
                store.mark_retry(item.id, result.detail, when)
                stats.retried += 1
                if result.put_off:
                    put_off[result.detail] = put_off.get(result.detail, 0) + 1
                else:
                    log.warning("%s to %s put off for a retry: %s", _what(channel), shown_address(item.to_addr),
                                result.detail)
    finally:
        handout.release_unsent()
    for reason, count in put_off.items():
        log.warning("%s: %d more message%s put off for a retry: %s", _what(channel), count, "s" * (count != 1), reason)
    return stats


def _what(channel) -> str:
    return "mail" if channel.carries == "email" else channel.carries


class _Handout:
    """Due messages a page at a time (10,000 queued digests are never all in memory), one by one
    to the channel. Messages leased with a page but never handed out are released; a message
    handed out keeps its lease unless recorded, since the server may have accepted it."""

    def __init__(self, store, now: datetime, limit: int, stop: threading.Event | None, page: int = 200,
                 kind: str = "email"):
        self.store, self.now, self.limit, self.stop, self.page = store, now, limit, stop, page
        self.kind = kind
        self.waiting: deque = deque()
        self.started = time.monotonic()
        # Subscribers suppressed during this flush: the store cancelled their queued messages,
        # and those already leased to this page are not handed out either.
        self.skip: set[int] = set()

    def clock(self) -> datetime:
        """`now` moved on by the time this flush has taken: leases are counted from when they
        are taken, not from when a flush of thousands of messages began."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)

    def __iter__(self):
        handed = 0
        while handed < self.limit and not self._stopping():
            self.waiting.extend(self.store.due_outbox(self.clock(), limit=min(self.page, self.limit - handed),
                                                        channel=self.kind))
            if not self.waiting:
                return
            handed += len(self.waiting)
            while self.waiting and not self._stopping():
                item = self.waiting.popleft()
                if item.subscriber_id in self.skip:
                    continue
                if item.claimed_until is not None and item.claimed_until - self.clock() < self.store.send_lease / 2:
                    if not self._renew(item):
                        continue
                yield item

    def _renew(self, item) -> bool:
        """Renew the lease of `item` and of the rest of its page; False when `item` is no
        longer this sender's (its lease ran out and another sender took it)."""
        self.waiting = deque(i for i in self.waiting if i.subscriber_id not in self.skip)
        held = self.store.renew_claims([item, *self.waiting], self.clock())
        kept = {i.id for i in held}
        lost = 1 + len(self.waiting) - len(kept)
        if lost:
            log.warning("mail: %d messages whose lease ran out were taken by another sender; left to it", lost)
        self.waiting = deque(i for i in self.waiting if i.id in kept)
        return item.id in kept

    def wanted(self, item) -> bool:
        return item.subscriber_id not in self.skip

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def release_unsent(self) -> None:
        if self.waiting:
            self.store.release_claims(list(self.waiting))
            self.waiting.clear()


def preview(store, settings: DigestSettings, subscriber_email: str | None, path: Path, now: datetime,
            source_filters: dict[str, KeywordFilter] | None = None) -> Path:
    """Write exactly the HTML that subscriber would get for their pending events, keyword filters
    applied (the first active subscriber when none is named; the most recent events when
    nothing is pending)."""
    subscriber = store.get_subscriber(subscriber_email) if subscriber_email else None
    if subscriber_email and subscriber is None:
        raise LookupError(f"no subscriber {subscriber_email}")
    if subscriber is None:
        active = store.list_subscribers(active_only=True)
        subscriber = active[0] if active else None
    html = preview_html(store, settings, subscriber, now, source_filters)
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", opener=private_opener) as handle:   # it names a subscriber
        handle.write(html)
    return path.resolve()


def preview_html(store, settings: DigestSettings, subscriber: Subscriber | None, now: datetime,
                 source_filters: dict[str, KeywordFilter] | None = None, *, pending_only: bool = False) -> str:
    """The HTML digest `subscriber` would get now for their pending events, keyword filters
    applied; with nothing pending, the most recent published events (or, `pending_only`, ""
    : no digest would go out). Its unsubscribe and preferences links carry working tokens when `settings.secret` is
    set."""
    events = keyword_selection(source_filters or {})(subscriber, store.pending_events(subscriber)) if subscriber else []
    if not events and pending_only:
        return ""
    if not events:
        events = [e for e in store.history(limit=20) if e.status == "published"]
    target = subscriber or Subscriber(id=0, email="subscriber@example.org", cadence="daily", send_time="08:00",
                                      timezone="UTC", weekday=None, sources=None, status="active", cursor=0,
                                      created_at=now)
    link = unsubscribe_url(target, settings) if settings.secret else settings.unsubscribe_base_url
    return render_digest(target, events, settings, now, link,
                         preferences_url(target, settings) if settings.secret else "").html
