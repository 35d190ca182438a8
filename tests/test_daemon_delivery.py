"""The daemon's delivery path (`postwatch run` as a subprocess, a real SMTP server): retries and
leases left by a crash are picked up, immediate subscribers hear of events published by other
processes, and SIGTERM in the middle of a flush stops promptly without doubling anything."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from email import message_from_bytes, policy

from support.harness import Cli, Daemon, free_port, get, wait_for, write_config

DAEMON_PERIODS = '[daemon]\nlisten = "127.0.0.1:{port}"\noutbox_every = "1s"\nshutdown_grace = "{grace}"\n'


def delivery_cli(tmp_path, site, smtp_port: int, *, grace: str = "8s", digest: str = "", crawl: str = "",
                 smtp: str = "") -> tuple[Cli, int]:
    """A daemon whose own checks never run during a test (1 h interval): whatever it mails, it
    found through the outbox."""
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp_port, listen_port=port)
    text = config.read_text()
    text = text.replace(f'[daemon]\nlisten = "127.0.0.1:{port}"\n', DAEMON_PERIODS.format(port=port, grace=grace))
    text = text.replace("[digest]\n", f'[digest]\nretry_after = "2s"\n{digest}')
    text = text.replace("[crawl]\n", f"[crawl]\n{crawl}")
    text = text.replace('security = "none"\n', f'security = "none"\n{smtp}')
    config.write_text(text)
    return Cli(config), port


def body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def outbox_rows(folder) -> list[tuple]:
    with sqlite3.connect(folder / "state.db") as db:
        return db.execute("SELECT id, status, attempts, claimed_until FROM outbox ORDER BY id").fetchall()


def add_daily_readers(folder, count: int) -> None:
    from state import Store

    store = Store(str(folder / "state.db"))
    try:
        for n in range(count):
            store.add_subscriber(f"reader{n}@example.org", cadence="daily")
    finally:
        store.close()


def compose_without_sending(config_path) -> list[int]:
    """Queue the digests as a flush that never ran (or was killed) leaves them."""
    from postwatch.config import load_config
    from postwatch.app import App

    os.environ.setdefault("POSTWATCH_SECRET", "test-secret")
    app = App.open(load_config(config_path))
    try:
        return app.mailer.compose_digests()
    finally:
        app.close()


def test_a_digest_refused_once_with_451_is_delivered_by_the_running_daemon(tmp_path, site, smtp):
    cli, port = delivery_cli(tmp_path, site, smtp.port)
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "daily", check=True)
    with Daemon(cli, port) as daemon:
        site.add_post("Refused once, then delivered", body_paragraphs=["The server said 451 the first time."])
        cli("check", check=True)
        smtp.answers = ["451 4.3.0 Temporary local problem"]
        cli("digest")      # whoever tries first meets the 451; the retry is the daemon's
        wait_for(lambda: smtp.messages, timeout=30, what="the digest after its 451")
        time.sleep(4)      # several more outbox periods and retry delays: no second copy
        assert daemon.stop() == 0
    assert smtp.answers == []                       # the 451 was really given
    assert len(smtp.messages) == 1
    assert "Refused once, then delivered" in body(smtp.messages[0])
    [(_, status, attempts, claimed)] = outbox_rows(tmp_path)
    assert (status, attempts, claimed) == ("sent", 2, None)


def test_messages_left_leased_by_a_killed_flush_are_delivered_by_the_daemon(tmp_path, site, smtp):
    cli, port = delivery_cli(tmp_path, site, smtp.port)
    cli("check", check=True)
    add_daily_readers(tmp_path, 5)
    site.add_post("Queued before a crash", body_paragraphs=["The sender was killed."])
    cli("check", check=True)
    assert len(compose_without_sending(cli.config)) == 5
    with sqlite3.connect(tmp_path / "state.db") as db:     # a killed flush's leases, run out
        db.execute("UPDATE outbox SET claimed_until = '2001-01-01 00:00:00.000000'")
    with Daemon(cli, port) as daemon:
        wait_for(lambda: len(smtp.messages) >= 5, timeout=30, what="all five digests")
        time.sleep(3)
        assert daemon.stop() == 0
    assert sorted(tos[0] for _, tos in smtp.envelopes) == [f"reader{n}@example.org" for n in range(5)]
    assert len(set(smtp.message_ids())) == 5
    assert {status for _, status, _, _ in outbox_rows(tmp_path)} == {"sent"}


def test_immediate_subscribers_get_events_published_by_a_cli_check_and_by_a_release(tmp_path, site, smtp):
    cli, port = delivery_cli(tmp_path, site, smtp.port, crawl="flood_share = 0.05\n")
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    with Daemon(cli, port) as daemon:
        site.add_post("Found by the command line", body_paragraphs=["A check run by hand, not by the daemon."])
        assert "1 new" in cli("check", check=True).stdout
        wait_for(lambda: smtp.messages, timeout=20, what="the immediate digest of a CLI check")
        assert "Found by the command line" in body(smtp.messages[0])

        for n in range(4):
            site.add_post(f"Held burst post {n}", body_paragraphs=["x"])
        assert "HELD as suspect" in cli("check", check=True).stdout
        time.sleep(3)
        assert len(smtp.messages) == 1                # held events are not mailed
        assert "released 4 held events" in cli("sources", "release", "link", check=True).stdout
        wait_for(lambda: len(smtp.messages) >= 2, timeout=20, what="the digest of the released events")
        time.sleep(2)
        assert daemon.stop() == 0
    assert len(smtp.messages) == 2
    released = body(smtp.messages[1])
    assert all(f"Held burst post {n}" in released for n in range(4))
    assert "Found by the command line" not in released


class SlowServer:
    """Accepts every message after `seconds`, keeping the Message-IDs it accepted."""

    def __init__(self, seconds: float):
        self.seconds, self.accepted, self._lock = seconds, [], threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        await asyncio.sleep(self.seconds)
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self._lock:
            self.accepted.append(str(message["Message-ID"]))
        return "250 OK"

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)


def test_sigterm_in_the_middle_of_a_flush_stops_within_the_grace_and_doubles_nothing(tmp_path, site):
    from aiosmtpd.controller import Controller

    server = SlowServer(1.0)
    controller = Controller(server, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        grace = 2
        cli, port = delivery_cli(tmp_path, site, controller.port, grace=f"{grace}s", smtp="connections = 2\n")
        cli("check", check=True)
        add_daily_readers(tmp_path, 20)
        site.add_post("Twenty readers", body_paragraphs=["One slow server."])
        cli("check", check=True)
        assert len(compose_without_sending(cli.config)) == 20

        with Daemon(cli, port) as daemon:
            wait_for(lambda: server.count() >= 2, timeout=30, what="the flush to be under way")
            asked = time.monotonic()
            status, _ = get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and time.monotonic() - asked < 2      # answered during the flush
            started = time.monotonic()
            assert daemon.stop() == 0
            stopped_after = time.monotonic() - started
        assert stopped_after < grace + 3, f"stopping took {stopped_after:.1f}s"
        first_run = list(server.accepted)
        assert len(first_run) < 20, "the flush was not interrupted"
        assert len(first_run) == len(set(first_run))
        rows = outbox_rows(tmp_path)
        assert sum(status == "sent" for _, status, _, _ in rows) == len(first_run)     # nothing sent unrecorded
        pending = [row for row in rows if row[1] == "pending"]
        assert len(pending) == 20 - len(first_run)
        assert all(claimed is None for _, _, _, claimed in pending)                  # no lease left behind

        with Daemon(cli, port) as daemon:
            wait_for(lambda: server.count() >= 20, timeout=60, what="the rest after a restart")
            time.sleep(2)
            assert daemon.stop() == 0
        assert len(server.accepted) == 20 == len(set(server.accepted))
        assert {status for _, status, _, _ in outbox_rows(tmp_path)} == {"sent"}
    finally:
        controller.stop()


def test_delivery_periods_are_read_and_checked():
    import pytest
    from postwatch.config import ConfigError, parse_config

    config = parse_config({"daemon": {"outbox_every": "5s"}, "digest": {"retry_after": "30s"}})
    assert (config.daemon.outbox_every.total_seconds(), config.digest.retry_after.total_seconds()) == (5, 30)
    with pytest.raises(ConfigError) as refused:
        parse_config({"daemon": {"outbox_every": "0.5s"}, "digest": {"retry_after": "2h"}})
    assert sorted(refused.value.problems) == ["config: [daemon] outbox_every must be between 1s and 1d, not 0.5s",
                                              "config: [digest] retry_after must be between 1s and 1h, not 2h"]


def test_a_cli_digest_beside_a_daemon_whose_flush_outlasts_its_lease_sends_nothing_twice(tmp_path, site):
    """Eight messages at 0.5 s each keep the daemon's flush busy for 4 s, four times its 1 s send
    lease. An operator's `postwatch digest` started in the middle must find them still leased."""
    from aiosmtpd.controller import Controller

    server = SlowServer(0.5)
    controller = Controller(server, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        cli, port = delivery_cli(tmp_path, site, controller.port, digest='send_lease = "1s"\n',
                                 smtp="connections = 1\n")
        cli("check", check=True)
        add_daily_readers(tmp_path, 8)
        site.add_post("Eight readers", body_paragraphs=["One slow relay."])
        cli("check", check=True)
        assert len(compose_without_sending(cli.config)) == 8

        with Daemon(cli, port) as daemon:
            wait_for(lambda: server.count() >= 2, timeout=30, what="the daemon's flush to be past its lease")
            assert cli("digest").returncode == 0
            wait_for(lambda: server.count() >= 8, timeout=60, what="every digest")
            time.sleep(2)
            assert daemon.stop() == 0
        assert len(server.accepted) == 8 == len(set(server.accepted)), sorted(server.accepted)
        assert {status for _, status, _, _ in outbox_rows(tmp_path)} == {"sent"}
    finally:
        controller.stop()


def test_a_webhook_answered_500_is_delivered_once_by_the_daemon_after_a_retry(tmp_path, site, smtp):
    from support.webhook_receiver import WebhookReceiver

    secret: dict[str, str] = {}
    with WebhookReceiver(lambda url: secret["value"]) as receiver:
        cli, port = delivery_cli(tmp_path, site, smtp.port)
        cli("check", check=True)
        added = cli("subscribers", "add", receiver.url("/hook"), "--cadence", "immediate", check=True).stdout
        secret["value"] = added.rsplit(": ", 1)[1].strip()
        receiver.answers.append(500)
        with Daemon(cli, port) as daemon:
            site.add_post("Hooked by the daemon", body_paragraphs=["500 first, then 200."])
            cli("check", check=True)       # published by the command line; composed and sent by the daemon
            wait_for(lambda: receiver.accepted, timeout=30, what="the webhook delivery after its 500")
            time.sleep(4)                  # several more outbox periods and retry delays: no second delivery
            _, metrics = get(f"http://127.0.0.1:{port}/metrics")
            assert daemon.stop() == 0
    assert [d.verdict for d in receiver.requests] == ["answered 500", "accepted"]
    assert [e["title"] for e in receiver.accepted[0].json["events"]] == ["Hooked by the daemon"]
    assert smtp.messages == []
    assert 'postwatch_deliveries_total{channel="webhook",result="sent"} 1.0' in metrics
    assert 'postwatch_deliveries_total{channel="webhook",result="retried"} 1.0' in metrics
    assert 'postwatch_outbox_pending{channel="webhook"} 0.0' in metrics
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT channel, status, attempts FROM outbox").fetchall() == [("webhook", "sent", 2)]
