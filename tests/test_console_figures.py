"""The console's stored figures (state/traffic.py, state/overview.py), on SQLite and PostgreSQL,
without a daemon: a day's requests add up over its checks, a run of failed checks keeps the time
it began, the last check keeps at most 100 requests, old days go; the dashboard reads the daemon's
lease on the store's own connections."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from state import SourceRecord
from state.records import MAX_EXCHANGES, CheckTraffic, Exchange
from state.traffic import KEEP_DAYS, utc_day

MORNING = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)


def test_a_days_requests_add_up_and_a_failing_run_keeps_its_start(store):
    store.add_source(SourceRecord(name="link", url="http://127.0.0.1:1/blog", kind="link"))
    old_day = MORNING - timedelta(days=KEEP_DAYS + 1)
    store.record_check_traffic("link", CheckTraffic(True, 9, 9000, 0), old_day)
    store.record_check_traffic("link", CheckTraffic(True, 2, 0, 2, [Exchange("http://x/feed", 304), Exchange("http://x/", 304)]),
                               MORNING)
    many = [Exchange(f"http://x/p{n}", 200, 100) for n in range(MAX_EXCHANGES + 20)]
    store.record_check_traffic("link", CheckTraffic(False, len(many) + 1, 12_000, 0, many), MORNING + timedelta(hours=1))
    store.record_check_traffic("link", CheckTraffic(False, 1, 0, 0, [Exchange("http://x/", None, 0, "TimeoutError")]),
                               MORNING + timedelta(hours=2))
    today = store.traffic_on(utc_day(MORNING))["link"]
    assert (today.checks, today.failed_checks, today.requests, today.response_bytes, today.not_modified) == (3, 2, 124, 12_000, 2)
    assert store.traffic_on(utc_day(old_day)) == {}                      # older than KEEP_DAYS: gone
    last = store.recorded_checks("link")["link"]
    assert not last.ok and last.failing_since == MORNING + timedelta(hours=1)      # the run's first failure
    assert [(e.url, e.status, e.error) for e in last.exchanges] == [("http://x/", None, "TimeoutError")]
    store.record_check_traffic("link", CheckTraffic(False, 1, 0, 0, many), MORNING + timedelta(hours=3))
    assert len(store.recorded_checks("link")["link"].exchanges) == MAX_EXCHANGES
    store.record_check_traffic("link", CheckTraffic(True, 1, 10, 0), MORNING + timedelta(hours=4))
    assert store.recorded_checks()["link"].failing_since is None
    assert store.remove_source("link") and store.recorded_checks() == {}


def test_the_dashboard_reads_the_daemon_lease_holder(store):
    assert store.daemon_holder() is None
    if store.is_sqlite:
        return                                  # one daemon per file: an flock, no lease row
    assert store.take_lease("holder-1", "host-a", "node-a", 4242, timedelta(seconds=30))
    holder = store.daemon_holder()
    assert holder["host"] == "host-a" and holder["pid"] == 4242 and 0 < holder["remaining"] <= 30
