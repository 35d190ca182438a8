"""postwatch.planner: the rules both runtimes plan by, and postwatch.stopping, in-process."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from postwatch import planner
from postwatch.stopping import grace_seconds, stop_signals

NOW = datetime(2030, 1, 2, 8, 0, tzinfo=timezone.utc)


def old_due_sources(last_checks, intervals, jitter, confirm_removals_after, now):
    """scheduler.due_sources as it was before the planner: the oracle of the due rule."""
    due = []
    for name, (last, missing_since) in last_checks.items():
        if last is None:
            due.append(name)
            continue
        if missing_since is not None and last < missing_since + confirm_removals_after <= now:
            due.append(name)
            continue
        digest = hashlib.sha256(f"{name}@{last.isoformat()}".encode()).digest()
        share = int.from_bytes(digest[:8], "big") / 2 ** 64
        if last + intervals[name] + jitter * share <= now:
            due.append(name)
    return due


minutes = st.integers(min_value=0, max_value=3 * 24 * 60).map(lambda m: timedelta(minutes=m))
moments = minutes.map(lambda ago: NOW - ago)
source = st.tuples(st.none() | moments, st.none() | moments, st.integers(1, 24 * 60).map(lambda m: timedelta(minutes=m)))


@given(st.dictionaries(st.text("abcdefg", min_size=1, max_size=6), source, max_size=12), minutes, minutes)
def test_due_rule_is_the_daemons(sources, jitter, removal_delay):
    last_checks = {name: (last, missing) for name, (last, missing, _) in sources.items()}
    intervals = {name: interval for name, (_, _, interval) in sources.items()}
    assert planner.due_sources(last_checks, intervals, jitter, removal_delay, NOW) == \
        old_due_sources(last_checks, intervals, jitter, removal_delay, NOW)


def test_next_check_is_an_interval_plus_a_fixed_share_of_the_jitter():
    at, interval, jitter = NOW, timedelta(hours=1), timedelta(minutes=10)
    nexts = [planner.next_check(f"source{n}", at, interval, jitter) for n in range(200)]
    assert all(at + interval <= t < at + interval + jitter for t in nexts)
    assert nexts == [planner.next_check(f"source{n}", at, interval, jitter) for n in range(200)]   # a hash, not a draw
    assert len(set(nexts)) == 200
    shares = sorted(planner.jitter_share(f"source{n}", at) for n in range(200))
    assert shares[20] < 0.2 and shares[180] > 0.8       # spread over the jitter
    # The daemon's rule (due when the next check after the last has come) and the worker's
    # (next_check_at stored at planning) are one: due exactly at next_check.
    due_at = planner.next_check("a", at, interval, jitter)
    assert planner.is_due("a", at, None, interval, jitter, timedelta(days=1), due_at)
    assert not planner.is_due("a", at, None, interval, jitter, timedelta(days=1), due_at - timedelta(microseconds=1))


def test_a_removal_is_confirmed_once_its_delay_has_passed_since_the_last_check():
    delay = timedelta(hours=6)
    missing = NOW - timedelta(hours=7)
    assert planner.removal_due(NOW - timedelta(hours=2), missing, delay, NOW)        # checked before the delay ran out
    assert not planner.removal_due(NOW - timedelta(minutes=30), missing, delay, NOW)  # checked since: confirmed then
    assert not planner.removal_due(NOW, NOW - timedelta(hours=5), delay, NOW)        # the delay still runs
    assert not planner.removal_due(NOW, None, delay, NOW)
    assert planner.removal_due(None, missing, delay, NOW)


def test_sweep_period():
    assert planner.sweep_period([timedelta(hours=1)], timedelta(days=1)) == 10.0
    assert planner.sweep_period([timedelta(seconds=8)], timedelta(days=1)) == 2.0
    assert planner.sweep_period([timedelta(seconds=1)], timedelta(days=1)) == 0.5
    assert planner.sweep_period([], timedelta(seconds=20)) == 5.0
    assert planner.sweep_period([], timedelta(0)) == 10.0


@dataclass
class Subscriber:
    cadence: str
    send_time: str = "08:00"
    timezone: str = "UTC"
    weekday: int = 4


def test_cadence_windows():
    daily, weekly = Subscriber("daily"), Subscriber("weekly", timezone="Europe/London")
    assert planner.cadence_key_of(daily) == "daily@08:00@UTC"
    assert planner.cadence_key_of(weekly) == "weekly@4@08:00@Europe/London"
    assert planner.cadence_key_of(Subscriber("immediate")) is None
    eight = datetime(2030, 1, 2, 8, 0, tzinfo=timezone.utc)     # a Wednesday
    assert planner.digest_due_between(daily, eight - timedelta(minutes=1), eight)
    assert not planner.digest_due_between(daily, eight, eight + timedelta(minutes=1))     # (after, until]
    assert not planner.digest_due_between(Subscriber("immediate"), eight - timedelta(days=9), eight)
    friday = datetime(2030, 1, 4, 8, 0, tzinfo=timezone.utc)    # London is on UTC in January
    assert planner.digest_due_between(weekly, friday - timedelta(seconds=30), friday + timedelta(seconds=30))
    assert not planner.digest_due_between(weekly, eight - timedelta(days=1), eight + timedelta(days=1))


@dataclass
class Summary:
    events: list = field(default_factory=list)
    held: bool = False
    published_held: int = 0


def test_what_follows_a_check():
    assert not planner.publishes([])
    assert not planner.publishes([Summary(), Summary(events=["new"], held=True)])
    assert planner.publishes([Summary(), Summary(events=["new"])])
    assert planner.publishes([Summary(published_held=2, held=True)])


def test_stop_signals_and_grace():
    assert grace_seconds(timedelta(seconds=8)) == 8.0
    assert grace_seconds(timedelta(seconds=8), lease_lost=True) == 2.0
    assert grace_seconds(timedelta(seconds=1), lease_lost=True) == 1.0

    async def main():
        loop, got = asyncio.get_running_loop(), []
        with stop_signals(loop, got.append, second_kills=True):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            assert got == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL      # a second one ends the process
        with stop_signals(loop, got.append):
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)
        assert got == [signal.SIGTERM, signal.SIGINT, signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
