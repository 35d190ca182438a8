"""When things happen, for both runtimes: the `postwatch run` daemon (scheduler.py) and the
`postwatch worker` cluster (postwatch/cluster.py, state/cluster.py) ask these rules, and no
other module writes them again.

Pure functions of their arguments (no database, no clock, no configuration object): a source's
share of the jitter and so its next check, when a removal is due to be confirmed, how often the
daemon looks for due sources, the digest cadences' windows, and what follows a check. Both
runtimes store the next check in `sources.next_check_at` and take what is due with one query
(state/planning.py), which asks these rules: a source is due when it was never planned, when its
next_check_at has come, or when removal_due.

Imports only the standard library and APScheduler's cron trigger (the cadence windows), so
that either runtime may import it without importing the other.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Iterable


# -- checks ----------------------------------------------------------------------------------
def jitter_share(name: str, at: datetime) -> float:
    """A source's share of the jitter, 0..1, fixed per source and check time: a hash, not a
    draw, so sources checked (or planned) together spread over the jitter, and a restart does
    not move them."""
    digest = hashlib.sha256(f"{name}@{at.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def next_check(name: str, at: datetime, interval: timedelta, jitter: timedelta) -> datetime:
    """When a source taken for a check at `at` (a daemon's sweep, a worker's planning) is next
    due: an interval later plus its share of the jitter."""
    return at + interval + jitter * jitter_share(name, at)


def removal_due(last: datetime | None, missing_since: datetime | None, removal_delay: timedelta,
                now: datetime) -> bool:
    """Whether a source holding a post missing since `missing_since` is due to confirm its
    removal: the delay has passed, and no check has run since it passed (the removal is then
    confirmed that day, not at the next interval). state/planning.py's due query asks the
    same in SQL, so that it can lock the rows it picks."""
    return missing_since is not None and (last is None or last < missing_since + removal_delay) \
        and missing_since + removal_delay <= now


def sweep_period(intervals: Iterable[timedelta], removal_delay: timedelta) -> float:
    """How often the daemon looks for due sources: a quarter of the shortest interval or of the
    removal delay, at least every 10 s and at most twice a second (one small query each time)."""
    shortest = min([i.total_seconds() for i in intervals] + [removal_delay.total_seconds() or 3600.0])
    return min(10.0, max(0.5, shortest / 4))


def publishes(summaries: Iterable[Any]) -> bool:
    """What follows a check: whether it published anything (new events not held back, or held
    changes it confirmed), for which the immediate subscribers get a delivery now rather than
    at the next outbox period. `summaries` are postwatch.app.CheckSummary."""
    summaries = list(summaries)
    return any(s.events and not s.held for s in summaries) or any(s.published_held for s in summaries)


# -- digests ---------------------------------------------------------------------------------
def cadence_key_of(subscriber) -> str | None:
    """Subscribers who share a schedule share one key: None for immediate subscribers."""
    if subscriber.cadence == "daily":
        return f"daily@{subscriber.send_time}@{subscriber.timezone}"
    if subscriber.cadence == "weekly":
        return f"weekly@{subscriber.weekday}@{subscriber.send_time}@{subscriber.timezone}"
    return None


def trigger_for_cadence(key: str):
    """The cron trigger of a cadence key: the digest planning of both runtimes asks it
    (cadence_due_between), and the console shows its next send."""
    from apscheduler.triggers.cron import CronTrigger

    parts = key.split("@")
    if parts[0] == "daily":
        hour, minute = parts[1].split(":")
        return CronTrigger(hour=int(hour), minute=int(minute), timezone=parts[2])
    _, weekday, at, tz = parts
    hour, minute = at.split(":")
    return CronTrigger(day_of_week=int(weekday), hour=int(hour), minute=int(minute), timezone=tz)


def cadence_due_between(key: str, after: datetime, until: datetime) -> bool:
    """Whether a digest of cadence `key` falls due in (after, until]."""
    fire = trigger_for_cadence(key).get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire is not None and fire <= until


def digest_due_between(subscriber, after: datetime, until: datetime) -> bool:
    """Whether `subscriber`'s daily or weekly digest falls due in (after, until]."""
    key = cadence_key_of(subscriber)
    return key is not None and cadence_due_between(key, after, until)
