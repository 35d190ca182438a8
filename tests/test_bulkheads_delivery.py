"""Bulkheads on the delivery side (issue 29): `postwatch run` as a subprocess against the blog
replica, a real SMTP server and receivers that drip their answer one byte a second
(support.drip), which a timeout per read never ends.

- A dripping webhook receiver costs only its own messages: the email subscriber still gets each
  digest within a check interval and an outbox period, /healthz answers, and the webhook message
  waits for its retry (not lost).
- A dripping SMTP server holds up neither the webhooks nor the daemon.
- SIGTERM ends the process within [daemon] shutdown_grace plus the exchange's deadline, whatever
  the receiver does.
And in-process: a receiver that ran out of time has its other messages of the flush put off (a
webhook, an Apprise URL), an inbound SMTP session ends at its deadline, and /healthz's outbox
condition (App.outbox_health)."""
from __future__ import annotations

import signal
import sqlite3
import time

from digest.delivery import WebhookChannel
from digest.webhook import endpoint_secret
from support.drip import DripServer, wait_open
from support.harness import Cli, Daemon, free_port, get, wait_for, write_config
from support.webhook_receiver import WebhookReceiver
from state import OutboxItem

INTERVAL, OUTBOX_EVERY = 2, 1
# What a loaded 2-core CI machine adds to the bounds: the check's own crawl, composing, Python's
# start of the signal handling and its exit.
SLACK = 4.0
EXIT_SLACK = 1.5


def bulkhead_cli(tmp_path, site, smtp_port: int, *, grace: float = 2, webhook_deadline: float = 3,
                 smtp_deadline: float = 30) -> tuple[Cli, int]:
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp_port, listen_port=port, interval=f"{INTERVAL}s",
                          extra=f'outbox_every = "{OUTBOX_EVERY}s"\nshutdown_grace = "{grace}s"\n\n'
                                f'[webhook]\ntimeout = {webhook_deadline}\n')
    text = config.read_text().replace("[digest]\n", '[digest]\nretry_after = "30s"\n')
    text = text.replace('security = "none"\n', f'security = "none"\ntimeout = {smtp_deadline}\nconnections = 1\n')
    config.write_text(text)
    cli = Cli(config)
    cli("check", check=True)          # the baseline: the daemon's checks find only what is added later
    return cli, port


def subscribe(cli: Cli, address: str) -> str:
    return cli("subscribers", "add", address, "--cadence", "immediate", check=True).stdout


def outbox(tmp_path, channel: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "state.db") as db:
        return db.execute("SELECT status, attempts, last_error FROM outbox WHERE channel = ? ORDER BY id",
                          (channel,)).fetchall()


def text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def stop_timed(daemon: Daemon, bound: float) -> tuple[float, int, str]:
    """SIGTERM; (seconds until the process ended, its exit status, its log)."""
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    try:
        status = daemon.process.wait(timeout=bound + 10)
    except Exception:
        raise AssertionError(f"postwatch run still alive {bound + 10:.0f}s after SIGTERM") from None
    took = time.monotonic() - started
    return took, status, daemon.process.stderr.read()


def test_a_dripping_webhook_receiver_holds_up_neither_email_nor_healthz(tmp_path, site, smtp):
    cli, port = bulkhead_cli(tmp_path, site, smtp.port, grace=2, webhook_deadline=3)
    subscribe(cli, "ada@example.org")
    with DripServer.webhook(every=1) as drip, DripServer.webhook(every=None) as silent:
        subscribe(cli, drip.url("/hook"))
        subscribe(cli, silent.url("/hook"))
        with Daemon(cli, port) as daemon:
            site.add_post("First post", body_paragraphs=["Found by the daemon."])
            wait_for(lambda: smtp.messages, timeout=30, what="the first digest")
            wait_open(drip)                              # a webhook flush is held by the drip
            added = time.monotonic()
            site.add_post("Second post", body_paragraphs=["Found while a receiver drips."])
            wait_for(lambda: len(smtp.messages) >= 2, timeout=INTERVAL + OUTBOX_EVERY + 20, every=0.05,
                     what="the second digest while the webhook drips")
            delay = time.monotonic() - added
            asked = time.monotonic()
            status, _ = get(f"http://127.0.0.1:{port}/healthz")
            answered = time.monotonic() - asked
            # Both receivers' first messages ran out of time and wait for their retry.
            wait_for(lambda: sum(1 for s, attempts, _ in outbox(tmp_path, "webhook") if s == "pending" and attempts)
                     >= 2, timeout=20, what="the webhook messages put off for a retry")
            took, exit_status, log = stop_timed(daemon, 2 + 3)
    print(f"second digest {delay:.2f}s after the post; /healthz {answered:.2f}s; SIGTERM to exit {took:.2f}s")
    assert delay <= INTERVAL + OUTBOX_EVERY + SLACK, f"the email waited {delay:.1f}s behind the webhook"
    assert status == 200 and answered < 2
    assert exit_status == 0 and took <= 2 + 3 + EXIT_SLACK, f"stopping took {took:.1f}s"
    rows = outbox(tmp_path, "webhook")
    assert {s for s, _, _ in rows} == {"pending"}, rows          # retried later, not lost
    assert any("deadline" in (error or "") for _, _, error in rows), rows
    assert "First post" in text(smtp.messages[0]) and "Second post" in text(smtp.messages[1])

    assert f"WARNING webhook to {drip.url('/hook')} put off" in log, log
    assert "INFO    mail: 1 sent" in log, log


def test_sigterm_during_a_dripping_webhook_ends_within_the_grace_and_the_deadline(tmp_path, site, smtp):
    grace, deadline = 1, 4
    cli, port = bulkhead_cli(tmp_path, site, smtp.port, grace=grace, webhook_deadline=deadline)
    with DripServer.webhook(every=1) as drip:
        subscribe(cli, drip.url("/hook"))
        with Daemon(cli, port) as daemon:
            site.add_post("Posted before the stop", body_paragraphs=["The receiver drips."])
            wait_open(drip)
            took, exit_status, log = stop_timed(daemon, grace + deadline)
    print(f"SIGTERM to exit {took:.2f}s (grace {grace}s + deadline {deadline}s)")
    assert exit_status == 0 and took <= grace + deadline + EXIT_SLACK, f"stopping took {took:.1f}s\n{log}"
    [(status, attempts, error)] = outbox(tmp_path, "webhook")
    assert status == "pending", (status, attempts, error)         # sent again by the next daemon


def test_a_dripping_smtp_server_holds_up_neither_webhooks_nor_the_stop(tmp_path, site):
    grace, deadline = 1, 3
    with DripServer.smtp(every=1) as relay:
        cli, port = bulkhead_cli(tmp_path, site, relay.port, grace=grace, smtp_deadline=deadline)
        secret: dict[str, str] = {}
        with WebhookReceiver(lambda url: secret["value"]) as hook:
            subscribe(cli, "ada@example.org")
            secret["value"] = subscribe(cli, hook.url("/hook")).rsplit(": ", 1)[1].strip()
            with Daemon(cli, port) as daemon:
                added = time.monotonic()
                site.add_post("Mailed to a dripping relay", body_paragraphs=["And to a webhook."])
                wait_for(lambda: hook.accepted, timeout=INTERVAL + OUTBOX_EVERY + 20, every=0.05,
                         what="the webhook while the SMTP server drips")
                delay = time.monotonic() - added
                wait_open(relay)                  # the digest's conversation is still held by the drip
                took, exit_status, log = stop_timed(daemon, grace + deadline)
    print(f"webhook {delay:.2f}s after the post; SIGTERM to exit {took:.2f}s")
    assert delay <= INTERVAL + OUTBOX_EVERY + SLACK
    assert exit_status == 0 and took <= grace + deadline + EXIT_SLACK, f"stopping took {took:.1f}s\n{log}"
    [(status, attempts, error)] = outbox(tmp_path, "email")
    assert (status, attempts) == ("pending", 1) and "deadline" in error, (status, attempts, error)   # recorded before the exit
    assert f"127.0.0.1:{relay.port}" in error and f"127.0.0.1:{relay.port} did not finish" in log


def test_one_receiver_that_runs_out_of_time_costs_only_its_own_messages():
    """Two messages to a dripping receiver and one to a working one: the first waits out the
    deadline, the second is put off at once, the third is sent."""
    def item(n: int, url: str) -> OutboxItem:
        return OutboxItem(id=n, subscriber_id=n, to_addr=url, message_id=f"dlv_{n}", raw=b'{"id": "dlv_%d"}' % n,
                          attempts=0, created_at=None, channel="webhook")

    with DripServer.webhook(every=0.5) as drip, WebhookReceiver(lambda url: endpoint_secret(b"k", url)) as good:
        channel = WebhookChannel(secret=b"k", timeout=2)
        started = time.monotonic()
        with channel:
            results = [(i.id, r, time.monotonic() - started) for i, r in
                       channel.send_many([item(1, drip.url()), item(2, drip.url()), item(3, good.url())])]
    [(_, first, first_at), (_, second, second_at), (_, third, _)] = results
    assert first.status == second.status == "retry" and first.put_off is False and second.put_off is True
    assert "deadline" in first.detail and 2 <= first_at < 3 and second_at - first_at < 0.5
    assert third.status == "sent" and [d.verdict for d in good.requests] == ["accepted"]


def test_an_inbound_session_that_drips_is_cut_off_at_its_deadline():
    """aiosmtpd's own timeout is idle time: a byte every 0.3 s kept a session open for ever."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from postwatch.inbound import InboundListener

    config = SimpleNamespace(unsubscribe_secret=lambda: b"k",
                             inbound=SimpleNamespace(bounce_prefix="bounces", unsubscribe_prefix="unsubscribe"))

    async def session_length() -> float:
        listener = InboundListener(SimpleNamespace(config=config), "127.0.0.1", 0, "postwatch.test", session_deadline=1.0)
        await listener.start()
        port = listener.server.sockets[0].getsockname()[1]
        try:
            def drip() -> float:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    started = time.monotonic()
                    client.recv(1024)                          # the greeting
                    try:
                        for byte in b"HELO " + b"x" * 100:
                            client.sendall(bytes([byte]))
                            time.sleep(0.3)
                            client.setblocking(False)
                            try:
                                if client.recv(1024) == b"":
                                    break
                            except BlockingIOError:
                                pass
                            finally:
                                client.setblocking(True)
                    except OSError:
                        pass                                  # reset by the listener's abort
                    return time.monotonic() - started
            return await asyncio.to_thread(drip)
        finally:
            await listener.stop()

    took = asyncio.run(session_length())
    assert 1.0 <= took < 2.0, f"the session lasted {took:.1f}s"


def test_outbox_health_says_unhealthy_when_due_messages_have_not_been_flushed_for_too_long(tmp_path):
    from datetime import datetime, timezone

    from postwatch.app import App
    from postwatch.config import parse_config
    from state import ComposedMessage, Store

    config = parse_config({"daemon": {"outbox_every": "1s"}, "smtp": {"timeout": 2}, "webhook": {"timeout": 1}})
    with App(config, Store(str(tmp_path / "state.db"))) as app:      # allowed: 3 periods + a deadline, 5 s
        now = time.monotonic()
        assert app.mailer.outbox_health() == (True, "outbox flushing")       # nothing due
        app.store.enqueue_message(ComposedMessage(message_id="<m@x>", subject="s", to_addr="ada@example.org",
                                                  raw=b"x", channel="email"), datetime.now(timezone.utc))
        app.mailer.flush_ended["email"] = now - 1
        assert app.mailer.outbox_health()[0]
        app.mailer.flush_ended["email"] = now - 6
        ok, detail = app.mailer.outbox_health()
        assert not ok and detail.startswith("outbox: email messages due and no email flush ended for 6s (limit 5s)")
        assert app.healthy() == (ok, detail)
        app.mailer.flush_began["webhook"] = now - 6          # a flush that hangs holds its messages' leases
        app.mailer.flush_ended["email"] = now
        ok, detail = app.mailer.outbox_health()
        assert not ok and detail.startswith("outbox: a webhook flush has been running for 6s")


def test_an_apprise_notification_that_drips_is_bounded_and_its_urls_other_messages_put_off():
    import json

    from digest.delivery import AppriseChannel

    with DripServer.webhook(every=0.3) as drip:
        url = f"json://127.0.0.1:{drip.port}/notify"
        raw = json.dumps({"title": "t", "lines": ["a"], "more": None, "site": "postwatch"}).encode()
        items = [OutboxItem(id=n, subscriber_id=n, to_addr=url, message_id=f"ntf_{n}", raw=raw, attempts=0,
                            created_at=None, channel="apprise") for n in (1, 2)]
        started = time.monotonic()
        with AppriseChannel(timeout=1) as channel:
            results = [(r, time.monotonic() - started) for _, r in channel.send_many(items)]
    [(first, first_at), (second, second_at)] = results
    assert first.status == "retry" and "deadline" in first.detail and not first.put_off, first
    assert 1 <= first_at < 2 and second.put_off and second_at - first_at < 0.2
