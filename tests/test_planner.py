"""postwatch.planner: the rules both runtimes plan by; state.planning: the one query of due
sources and the stored digest window they take work by; postwatch.stopping. In-process."""
from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, text

from postwatch import planner
from postwatch.stopping import grace_seconds, stop_signals
from state import Store
from state.records import SourceRecord
from state.schema import posts

NOW = datetime(2030, 1, 2, 8, 0, tzinfo=timezone.utc)


def test_next_check_is_an_interval_plus_a_fixed_share_of_the_jitter():
    at, interval, jitter = NOW, timedelta(hours=1), timedelta(minutes=10)
    nexts = [planner.next_check(f"source{n}", at, interval, jitter) for n in range(200)]
    assert all(at + interval <= t < at + interval + jitter for t in nexts)
    assert nexts == [planner.next_check(f"source{n}", at, interval, jitter) for n in range(200)]   # a hash, not a draw
    assert len(set(nexts)) == 200
    shares = sorted(planner.jitter_share(f"source{n}", at) for n in range(200))
    assert shares[20] < 0.2 and shares[180] > 0.8       # spread over the jitter


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


def test_due_sources_are_taken_by_next_check_at_and_moved_an_interval_on(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    for name in ("never", "due", "later", "paused", "removal", "checked"):
        store.add_source(SourceRecord(name, f"https://{name}.example/"))
    hour = timedelta(hours=1)
    with store.engine.begin() as conn:
        for name, next_at in (("due", NOW - timedelta(minutes=1)), ("later", NOW + hour), ("paused", NOW - hour),
                              ("removal", NOW + hour)):
            conn.execute(text("UPDATE sources SET next_check_at = :at WHERE name = :name"),
                         {"at": next_at.strftime("%Y-%m-%d %H:%M:%S.%f"), "name": name})
        # Missing for two hours, last checked 90 minutes ago: the removal delay (1 h) has passed since.
        conn.execute(text("UPDATE sources SET last_check_at = :at WHERE name = 'removal'"),
                     {"at": (NOW - timedelta(minutes=90)).strftime("%Y-%m-%d %H:%M:%S.%f")})
        # Checked (by `postwatch check`) half an hour ago, never planned: due an interval after that check.
        conn.execute(text("UPDATE sources SET last_check_at = :at WHERE name = 'checked'"),
                     {"at": (NOW - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S.%f")})
        source_id = conn.execute(text("SELECT id FROM sources WHERE name = 'removal'")).scalar()
        conn.execute(insert(posts).values(source_id=source_id, url="https://removal.example/a", title="A",
                                          first_seen_at=NOW - timedelta(days=2), last_seen_at=NOW - timedelta(days=2),
                                          status="gone_pending", gone_since=NOW - 2 * hour))
    store.pause_source("paused", True, NOW)

    def take(now):
        return sorted(store.take_due_sources(now, lambda name, at: at + hour, hour))

    assert take(NOW) == ["due", "never", "removal"]
    assert store.next_checks()["due"] == NOW + hour
    assert store.next_checks()["checked"] == NOW + timedelta(minutes=30)
    assert take(NOW) == ["removal"]           # its removal is still to be confirmed: no check recorded yet
    store.record_quiet_checks(["due", "never", "removal"], NOW + timedelta(seconds=1))
    assert take(NOW + timedelta(seconds=2)) == []
    # A sweep cut off: those it had not recorded are due again, not an interval on.
    store.record_quiet_checks(["due"], NOW + timedelta(seconds=4))
    assert store.make_due_unless_checked_since(["due", "never"], NOW + timedelta(seconds=3)) == 1
    assert take(NOW + timedelta(seconds=5)) == ["never"]
    store.request_check("later", NOW + timedelta(seconds=6))     # the console's "check now"
    assert take(NOW + timedelta(seconds=6)) == ["later"]
    # A sweep's sources are next due an interval after each one's check was recorded.
    store.record_quiet_checks(["later"], NOW + timedelta(seconds=7))
    store.count_next_checks_from_last_check(["later", "paused"], lambda name, last: last + hour)
    assert store.next_checks()["later"] == NOW + hour + timedelta(seconds=7)
    assert take(NOW + timedelta(minutes=30)) == ["checked"]
    assert take(NOW + hour - timedelta(seconds=1)) == []
    assert take(NOW + hour) == ["due", "removal"]
    assert take(NOW + hour + timedelta(seconds=7)) == ["later", "never"]
    assert take(NOW + 2 * hour) == ["checked", "due", "removal"]
    store.close()


def test_a_digest_missed_while_nothing_ran_is_planned_once_from_the_stored_window(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    ada = store.add_subscriber("ada@example.org", cadence="daily", send_time="08:00", timezone="UTC")
    store.add_subscriber("bob@example.org", cadence="weekly", send_time="08:00", timezone="UTC", weekday=4)
    due = planner.digest_due_between

    def plan(now):                      # as the daemon's plan_job does when nothing stops it
        ids, until = store.due_digests(now, due)
        if until is not None:
            store.digests_planned(until)
        return ids

    assert plan(NOW - timedelta(hours=1)) == []                 # the first planning looks back a minute
    # Down from 07:00 to 09:00: the 08:00 digest at the next start, once.
    assert plan(NOW + timedelta(hours=1)) == [ada.id]
    assert plan(NOW + timedelta(hours=1)) == []
    assert plan(NOW + timedelta(hours=1, minutes=1)) == []
    # Down for three days, over Friday: one digest each, not one per missed send time.
    assert plan(NOW + timedelta(days=3, hours=1)) == sorted([ada.id, ada.id + 1])
    store.close()


def test_a_digest_window_moves_only_once_its_digests_are_composed(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    ada = store.add_subscriber("ada@example.org", cadence="daily", send_time="08:00", timezone="UTC")
    due = planner.digest_due_between
    store.digests_planned(NOW - timedelta(hours=1))
    ids, until = store.due_digests(NOW + timedelta(hours=1), due)
    assert ids == [ada.id]
    # Stopped before composing: the next start finds the same digest due.
    assert store.due_digests(NOW + timedelta(hours=1, minutes=5), due)[0] == [ada.id]
    store.digests_planned(until)
    assert store.due_digests(NOW + timedelta(hours=1, minutes=5), due)[0] == []
    store.digests_planned(NOW)                  # a late marker never moves the window back
    assert store.due_digests(NOW + timedelta(hours=1, minutes=5), due)[0] == []
    store.close()
