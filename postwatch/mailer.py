"""The mail side of the application: composing digests into the outbox, flushing it channel by
channel, the channel that carries each kind of message, and the outbox's health."""
from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from digest.settings import DigestSettings
from postwatch import settings
from postwatch.config import Config

if TYPE_CHECKING:
    from digest.delivery import Channel
    from digest.settings import FlushStats
    from postwatch.metrics import Metrics
    from state import Store

# digest.sender and digest.compose (Jinja2, css-inline, nh3: 0.1-0.25 s) are imported where they
# are used: a command or a period with nothing to compose or send does not load them.


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Mailer:
    """Composes digests into the outbox and sends what is due, each kind of message through its
    own channel; keeps when each kind's flushes began and ended, for /healthz."""

    def __init__(self, config: Config, store: Store, metrics: Metrics, sources: settings.SourceSettings):
        self.config, self.store, self.metrics, self.sources = config, store, metrics, sources
        # Per kind of outbox message (email, webhook...), monotonic times: when the flush under
        # way began, and when the last one ended (or this Mailer was made). Written by the
        # flushing threads, read by /healthz (outbox_health).
        self.flush_began: dict[str, float] = {}
        self.flush_ended: dict[str, float] = {}
        self._made = time.monotonic()

    def digest_settings(self) -> DigestSettings:
        return settings.digest_settings(self.config, self.store.list_sources())

    @functools.cached_property
    def dkim_signer(self):
        """Loaded once, not for every batch of mail."""
        return self.config.dkim_signer()

    @functools.cached_property
    def _secret(self) -> bytes:
        return self.config.unsubscribe_secret()

    def verp_return_path(self, item) -> str | None:
        """MAIL FROM of a message to a subscriber while the inbound listener runs: an address
        that names them, so that a bounce says whose address failed (others: None, the usual).
        The subscriber is read for the start of their subscription, which the address signs."""
        if item.subscriber_id is None:
            return None
        from digest.tokens import make_address_token

        subscriber = self.store.get_subscriber(item.subscriber_id)
        if subscriber is None:
            return None
        token = make_address_token(subscriber, self._secret, "bounce")
        return f"{self.config.inbound.bounce_prefix}+{token}@{self.config.inbound_domain}"

    def delivery_channel(self) -> Channel:
        """The channel of [delivery] channel: SMTP when a host is configured, else .eml files in
        the outbox folder, or any other registered channel with its [delivery] options."""
        from digest.delivery import make_channel

        channel = self.config.delivery_channel
        if channel == "smtp":
            return_path = self.verp_return_path if self.config.inbound_domain else None
            return make_channel("smtp", settings=settings.smtp_settings(self.config, self.dkim_signer, return_path))
        if channel == "folder":
            return make_channel("folder", path=self.config.outbox_path)
        return make_channel(channel, **self.config.delivery.options)

    def channel_for(self, kind: str) -> Channel:
        """The channel that delivers the outbox messages of `kind`: the mail channel for
        "email", else the registered channel that carries that kind, as the config sets it up."""
        from digest.delivery import CHANNELS

        if kind == "email":
            return self.delivery_channel()
        for cls in CHANNELS.values():
            if cls.carries == kind:
                return cls.configured(self.config)
        raise ValueError(f"no delivery channel carries {kind!r} messages (known: {', '.join(sorted(CHANNELS))})")

    def compose_digests(self, subscriber_ids: Iterable[int] | None = None) -> list[int]:
        if not self.store.digests_pending(subscriber_ids):
            return []       # every cursor is at the newest event: the rendering stack stays unloaded
        from digest.sender import compose_and_queue

        return compose_and_queue(self.store, self.digest_settings(), utcnow(), subscriber_ids=subscriber_ids,
                                 source_filters=self.sources.filters())

    def send_digests(self, subscriber_ids: Iterable[int] | None = None) -> tuple[list[int], FlushStats]:
        queued = self.compose_digests(subscriber_ids)
        return queued, self.flush_outbox()

    def flush_outbox(self, stop: threading.Event | None = None) -> FlushStats:
        """Send what is due, channel by channel (email first, then every other channel that has
        a message due): the totals of all of them."""
        from digest.settings import FlushStats

        total = FlushStats()
        due = self.store.due_channels(utcnow())
        journal = self.store.accepted
        if not due and not (journal is not None and journal.waiting()):
            # Nothing to send nor to reconcile: the delivery stack (digest.sender) stays unloaded.
            self.update_outbox_gauges()
            return total
        kinds = ["email", *(kind for kind in due if kind != "email")]
        for kind in kinds:
            if stop is not None and stop.is_set():
                break
            total.add(kind, self.flush_channel(kind, stop))
        return total

    def flush_channel(self, kind: str, stop: threading.Event | None = None) -> FlushStats:
        """Send what is due of the messages of one kind ("email", "webhook"...): the daemon
        flushes each kind on its own, so that one whose receivers hang holds up no other."""
        from digest.sender import flush_outbox

        self.flush_began[kind] = time.monotonic()
        try:
            with self.channel_for(kind) as channel:
                stats = flush_outbox(self.store, channel, utcnow(), max_attempts=self.config.digest.max_attempts,
                                     retry_after=self.config.digest.retry_after, stop=stop,
                                     bounce_limit=self.config.digest.bounce_limit)
        finally:
            self.flush_ended[kind] = time.monotonic()
            del self.flush_began[kind]
        for result in ("sent", "failed", "retried"):
            self.metrics.deliveries.labels(kind, result).inc(getattr(stats, result))
        self.metrics.digests_sent.inc(stats.sent)
        self.metrics.digests_failed.inc(stats.failed)
        self.metrics.digests_retried.inc(stats.retried)
        self.update_outbox_gauges()
        return stats

    @property
    def largest_deadline(self) -> float:
        """The longest a single outbound exchange may take: one message's SMTP conversation, or
        one webhook or Apprise delivery ([smtp] timeout, [webhook] timeout)."""
        return max(self.config.smtp.timeout, self.config.webhook.timeout)

    def outbox_health(self) -> tuple[bool, str]:
        """(ok, detail) of the outbox for /healthz: unhealthy when a kind of message has been due
        without a flush of that kind ending for longer than three outbox periods and a deadline
        (or one flush has been running that long: a hung one holds its messages' leases, so they
        no longer look due)."""
        allowed = 3 * self.config.daemon.outbox_every.total_seconds() + self.largest_deadline
        now = time.monotonic()
        for kind, began in list(self.flush_began.items()):
            if now - began > allowed:
                return False, f"outbox: a {kind} flush has been running for {now - began:.0f}s (limit {allowed:.0f}s)"
        for kind in self.store.due_channels(utcnow()):
            age = now - self.flush_ended.get(kind, self._made)
            if age > allowed and kind not in self.flush_began:
                return False, f"outbox: {kind} messages due and no {kind} flush ended for {age:.0f}s (limit {allowed:.0f}s)"
        return True, "outbox flushing"

    def update_outbox_gauges(self) -> None:
        by_channel = self.store.outbox_stats_by_channel()
        self.metrics.outbox_depth.set(sum(counts.get("pending", 0) for counts in by_channel.values()))
        for kind in {"email", *by_channel}:
            self.metrics.outbox_pending.labels(kind).set(by_channel.get(kind, {}).get("pending", 0))
