"""`postwatch run` as a real subprocess against the replica and a real SMTP server."""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from support.harness import Cli, Daemon, free_port, get, wait_for, write_config


@pytest.fixture
def daemon_cli(tmp_path, site, smtp):
    port = free_port()
    extra = '[alerts]\noperator = "ops@example.org"\nfailures_before_alert = 2\n'
    return Cli(write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s", extra=extra)), port


def test_daemon_checks_on_schedule_mails_immediate_subscribers_and_serves_health_and_metrics(daemon_cli, site, smtp):
    cli, port = daemon_cli
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    with Daemon(cli, port) as daemon:
        post = site.add_post("Daemon test: a new rescue", body_paragraphs=["Twelve people reached safety."])
        wait_for(lambda: smtp.messages, timeout=30, what="the digest email")
        assert post.title in smtp.messages[0].get_body(preferencelist=("plain",)).get_content()

        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        # The server has the message a moment before the daemon records it as sent.
        metrics = wait_for(lambda: (page := get(f"http://127.0.0.1:{port}/metrics"))[0] == 200
                           and "postwatch_digests_sent_total 1.0" in page[1] and page[1], timeout=10,
                           what="the digest counted as sent")
        assert 'postwatch_checks_total{result="ok",source="link"}' in metrics
        assert 'postwatch_events_total{kind="new",source="link"} 1.0' in metrics
        assert "postwatch_digests_sent_total 1.0" in metrics
        assert 'postwatch_source_last_success_timestamp_seconds{source="link"}' in metrics
        assert "postwatch_http_not_modified_total" in metrics
        assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_database_refuses(daemon_cli):
    cli, port = daemon_cli
    with Daemon(cli, port) as daemon:
        second = cli("run", timeout=30)
        assert second.returncode != 0
        assert "another postwatch daemon" in second.stderr
        assert daemon.stop() == 0


def test_operator_is_alerted_once_when_a_source_keeps_failing(daemon_cli, site, smtp):
    cli, port = daemon_cli
    cli("check", check=True)
    site.set_fault("/blog", status=500)
    with Daemon(cli, port) as daemon:
        wait_for(lambda: any("ops@example.org" in tos for _, tos in smtp.envelopes), timeout=40, what="the operator alert")
        time.sleep(5)   # more failing checks: still one alert per problem per day
        alerts = [m for m, (_, tos) in zip(smtp.messages, smtp.envelopes) if "ops@example.org" in tos]
        assert len(alerts) == 1
        assert "link" in alerts[0]["Subject"]
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert daemon.stop() == 0
    assert "last error" in cli("status").stdout


def test_sigterm_in_the_middle_of_a_crawl_exits_zero_and_leaves_the_database_consistent(daemon_cli, site, tmp_path):
    cli, port = daemon_cli
    cli("check", check=True)
    for n in range(3):
        site.add_post(f"Slow post {n}", body_paragraphs=["Body."])
    site.set_fault("/blog/slow", delay=4)
    with Daemon(cli, port) as daemon:
        wait_for(lambda: site.count("/blog/slow") > 0, what="a slow post request")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The interrupted crawl left nothing half-done: the next check finds the three posts.
    site.clear_faults()
    assert "3 new" in cli("check", check=True).stdout


def test_a_daily_digest_missed_while_the_daemon_was_down_goes_out_once_at_restart(daemon_cli, site, smtp, tmp_path):
    cli, port = daemon_cli
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "daily", "--at", "08:00", check=True)
    with Daemon(cli, port) as daemon:
        wait_for(lambda: _digests_planned_until(tmp_path) is not None, what="the stored digest window")
        assert daemon.stop() == 0
    site.add_post("Missed while down", body_paragraphs=["Posted while the daemon was stopped."])
    cli("check", check=True)
    # The daemon last planned a day and an hour ago: it was down at the last 08:00, wherever that is.
    _set_digests_planned_until(tmp_path, datetime.now(timezone.utc) - timedelta(days=1, hours=1))
    with Daemon(cli, port) as daemon:
        wait_for(lambda: smtp.messages, timeout=20, what="the caught-up digest")
        time.sleep(2)
        assert daemon.stop() == 0
    with Daemon(cli, port) as daemon:     # a restart plans on from where the last planning stopped
        time.sleep(2)
        assert daemon.stop() == 0
    assert len(smtp.messages) == 1
    assert "Missed while down" in smtp.messages[0].get_body(preferencelist=("plain",)).get_content()


def _digests_planned_until(folder):
    with sqlite3.connect(folder / "state.db") as db:
        row = db.execute("SELECT value FROM counters WHERE name = 'cluster_digests_planned_until'").fetchone()
        return row and row[0]


def _set_digests_planned_until(folder, at: datetime) -> None:
    with sqlite3.connect(folder / "state.db") as db:
        db.execute("UPDATE counters SET value = ? WHERE name = 'cluster_digests_planned_until'", (int(at.timestamp()),))
