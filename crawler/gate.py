"""One politeness gate per real host, for the whole process.

Scrapy keeps its per-host download slots (delay, concurrency, AutoThrottle's latency estimate)
inside one crawler, and a crawler lives for one crawl. postwatch crawls many sources, in sweeps
that follow each other, and revalidates a sweep's first URLs with a lean client before any
crawler exists (crawler.revalidate). Slots that die with each crawl would let a host that carries
twenty watched blogs receive twenty requests at once. So every request of every path waits here:

- at most `concurrency` requests in flight per host;
- between two request starts to a host, DOWNLOAD_DELAY, varied by DOWNLOAD_DELAY_JITTER (±50 %)
  as Scrapy's own slots vary it;
- between an answer and the next request start, at least the shortest of those delays: the gate
  counts a request as started when it lets it go, and a request can reach the host later (held
  in Scrapy's own slot behind its delay, a slow connect, a paused process), so the time since
  the answer is the one gap the host is sure to see;
- a Retry-After (429/503) holds the whole host, for every source on it, until it has passed.

Inside one crawl Scrapy's slots (and AutoThrottle, which tunes them by latency) still apply on
top: the gate only adds what a crawler cannot know, the requests of other crawls and of the
lean client.

A host is its lower-cased hostname, as Scrapy's slots key it: two ports of one machine share a gate.
The gate's state is guarded by a thread lock and waiting is done with short sleeps, so it serves
every event loop and thread of the process (the CLI's revalidation, the reactor's loop).
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

# How often a waiter looks again while a host is at its concurrency limit.
_FULL_POLL_SECONDS = 0.005


@dataclass
class GateSettings:
    delay: float = 1.0               # seconds between request starts to one host
    jitter: float = 0.5              # the delay varies by up to this share either way
    concurrency: int = 2             # requests in flight per host


@dataclass
class _Host:
    next_start: float = 0.0          # time.monotonic() before which no request to this host starts
    in_flight: int = 0
    held_until: float = 0.0          # a Retry-After's end


class HostGate:
    def __init__(self, settings: GateSettings | None = None):
        self.settings = settings or GateSettings()
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def configure(self, settings: GateSettings) -> None:
        """The crawl settings in force (the same for every crawl of a process; set again by each)."""
        with self._lock:
            self.settings = settings

    async def acquire(self, host: str) -> None:
        """Wait until a request to `host` may start, and count it as in flight."""
        import asyncio      # not for the lean client's threads (acquire_blocking)

        while (wait := self._take(host)) is not None:
            await asyncio.sleep(wait)

    def acquire_blocking(self, host: str) -> None:
        """`acquire` for a worker thread."""
        while (wait := self._take(host)) is not None:
            time.sleep(wait)

    def _take(self, host: str) -> float | None:
        """Count a request to `host` as started (None), or how long to wait before asking again."""
        key = host.lower().rstrip(".")
        with self._lock:
            slot = self._hosts.setdefault(key, _Host())
            now = time.monotonic()
            ready_at = max(slot.next_start, slot.held_until)
            if now >= ready_at and slot.in_flight < self.settings.concurrency:
                slot.in_flight += 1
                slot.next_start = now + self._next_gap(slot)
                return None
            wait = ready_at - now if now < ready_at else _FULL_POLL_SECONDS
        return min(max(wait, 0.0005), 1.0)

    def release(self, host: str, *, retry_after: float | None = None) -> None:
        """A request to `host` is over; a Retry-After it carried holds the host that long."""
        key = host.lower().rstrip(".")
        with self._lock:
            slot = self._hosts.setdefault(key, _Host())
            slot.in_flight = max(0, slot.in_flight - 1)
            slot.next_start = max(slot.next_start, time.monotonic() + self._shortest_gap())
        if retry_after:
            self.hold(host, retry_after)

    def hold(self, host: str, seconds: float) -> None:
        """No request to `host` starts for `seconds` (its Retry-After)."""
        key = host.lower().rstrip(".")
        with self._lock:
            slot = self._hosts.setdefault(key, _Host())
            slot.held_until = max(slot.held_until, time.monotonic() + seconds)

    def quiet_for(self, host: str) -> float:
        """Seconds before a request to `host` may start (the delay since the last one, a
        Retry-After), 0 if one may start now: what another process crawling the host next must
        wait (state.cluster.host_turn)."""
        with self._lock:
            slot = self._hosts.get(host.lower().rstrip("."))
            return max(0.0, max(slot.next_start, slot.held_until) - time.monotonic()) if slot else 0.0

    def _next_gap(self, slot: _Host) -> float:
        delay, jitter = self.settings.delay, self.settings.jitter
        if delay <= 0:
            return 0.0
        return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))

    def _shortest_gap(self) -> float:
        return max(0.0, self.settings.delay * (1 - self.settings.jitter))

    def in_flight(self, host: str) -> int:
        with self._lock:
            slot = self._hosts.get(host.lower().rstrip("."))
            return slot.in_flight if slot else 0


# The process's gate: every crawl and every revalidation goes through it.
GATE = HostGate()


def gate_settings(settings) -> GateSettings:
    """GateSettings from Scrapy's own settings (a scrapy Settings, or a plain mapping of the
    same names): DOWNLOAD_DELAY, DOWNLOAD_DELAY_JITTER, CONCURRENT_REQUESTS_PER_DOMAIN."""
    get = settings.get
    return GateSettings(delay=float(get("DOWNLOAD_DELAY", 1.0)), jitter=float(get("DOWNLOAD_DELAY_JITTER", 0.5)),
                        concurrency=int(get("CONCURRENT_REQUESTS_PER_DOMAIN", 2)))


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def host_hold(status: int, retry_after: bytes | str | None, longest: float) -> float | None:
    """How long a host is held after an answer: its Retry-After on a 429 or 503, unless that is
    beyond `longest` (the request then gives up for this check, and the host is not held for it)."""
    if status not in (429, 503):
        return None
    wait = retry_after_seconds(retry_after)
    return wait if wait is not None and wait <= longest else None
