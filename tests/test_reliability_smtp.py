"""SMTP faults the digest tests do not already cover: a 421 greeting, a stall in DATA."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

from crawler.items import PostItem
from digest.delivery import make_channel
from digest.sender import compose_and_queue, flush_outbox
from digest.settings import DigestSettings, SmtpSettings
from support.harness import free_port
from postwatch.testing.mailcatcher import MailCatcher, _KeepingHandler
from state import CheckInput, SourceRecord, Store

NOW = datetime(2026, 11, 3, 8, tzinfo=timezone.utc)


def queued_store(tmp_path) -> Store:
    store = Store(str(tmp_path / "state.db"))
    store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog")])
    base = PostItem(url="https://libertyinnorthkorea.org/blog/a", title="A", published=None, body_html="<p>a</p>",
                    summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=[base], baseline=True), NOW)
    store.add_subscriber("ada@example.org")
    store.add_subscriber("kim@example.org")
    fresh = PostItem(url="https://libertyinnorthkorea.org/blog/b", title="B", published=None, body_html="<p>b</p>",
                     summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=[base, fresh]), NOW)
    compose_and_queue(store, DigestSettings(secret=b"k"), NOW)
    return store


def flush(store, port, now, timeout=5):
    channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=timeout))
    with channel:
        return flush_outbox(store, channel, now)


def test_a_421_greeting_then_a_working_server(tmp_path):
    store = queued_store(tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def greet_and_hang_up():   # every connection (the channel may open a few at once) is refused
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:    # the listener is closed
                return
            connection.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
            connection.close()

    thread = threading.Thread(target=greet_and_hang_up, daemon=True)
    thread.start()
    refused = flush(store, port, NOW)
    assert (refused.sent, refused.retried) == (0, 2)
    listener.shutdown(socket.SHUT_RDWR)        # wakes the accept() (close alone does not)
    listener.close()
    thread.join(5)
    assert not thread.is_alive()
    with MailCatcher() as smtp:            # the server is back (a new port: the old one sits in TIME_WAIT)
        assert flush(store, smtp.port, NOW + timedelta(hours=2)).sent == 2
        assert sorted(smtp.message_ids()) == sorted(set(smtp.message_ids()))


class _StallThenRefuse:
    """Stalls longer than the client's timeout in the middle of DATA, then gives up."""

    def __init__(self):
        self.stalled = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        self.stalled += 1
        await asyncio.sleep(3)
        return "451 4.4.2 Timeout"


def test_a_stall_in_data_is_retried_and_delivered_once(tmp_path):
    from aiosmtpd.controller import Controller

    store = queued_store(tmp_path)
    handler = _StallThenRefuse()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        stalled = flush(store, port, NOW, timeout=1)
        assert stalled.sent == 0 and stalled.retried == 2
    finally:
        controller.stop()
    with MailCatcher() as smtp:
        assert flush(store, smtp.port, NOW + timedelta(hours=2)).sent == 2
        assert len(smtp.message_ids()) == 2 == len(set(smtp.message_ids()))


_SENDER_KILLED_BEFORE_ITS_COMMIT = """
import sys, time
from datetime import datetime, timezone
from digest.delivery import make_channel
from digest.sender import flush_outbox
from digest.settings import SmtpSettings
from state import Store

store = Store(sys.argv[1])
store.mark_sent = lambda *args: time.sleep(60)    # the commit waits for a lock, as under a busy daemon
channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=int(sys.argv[2]), security="none",
                                                     connections=1))
with channel:
    flush_outbox(store, channel, datetime.now(timezone.utc))
"""


def test_a_sender_killed_between_the_servers_250_and_its_commit_sends_nothing_twice(tmp_path):
    """The window SMTP leaves open: the server has the message, the outbox row is still pending."""
    import os
    import signal
    import subprocess
    import sys
    import time

    store = queued_store(tmp_path)
    with MailCatcher() as smtp:
        sender = subprocess.Popen([sys.executable, "-c", _SENDER_KILLED_BEFORE_ITS_COMMIT, str(tmp_path / "state.db"),
                                   str(smtp.port)], env={**os.environ})
        # Kill once the sender has read the server's 250 (and written it down). Killing as soon as
        # the server holds the bytes would also hit RFC 1047's window, before the client has seen
        # the 250, where no client can know the message arrived: a copy then is SMTP's, not ours.
        journal = tmp_path / "state.db.accepted"
        deadline = time.monotonic() + 30
        while not (journal.exists() and journal.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert smtp.messages, "the sender never reached the server"
        sender.send_signal(signal.SIGKILL)
        sender.wait()
        accepted = smtp.message_ids()
        # Well past the killed sender's lease: everything pending is due again.
        stats = flush(store, smtp.port, datetime.now(timezone.utc) + timedelta(hours=1))
        ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == 2, ids               # two subscribers, each message once
    assert set(accepted) <= set(ids)
    assert stats.sent == 2 - len(accepted)
    assert store.outbox_stats()["pending"] == 0


class _SlowKeeping(MailCatcher):
    """Takes 0.4 s over each message before keeping it, as a busy relay does."""

    class handler_class(_KeepingHandler):  # noqa: N801 - the attribute MailCatcher builds its handler from
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
            await asyncio.sleep(0.4)
            return await super().handle_DATA(server, session, envelope)


def test_a_flush_slower_than_its_lease_keeps_its_messages_from_a_second_sender(tmp_path):
    """Six messages at 0.4 s each take 2.4 s, over twice the 1 s send lease. A second sender
    starting meanwhile (a CLI `digest` beside the daemon) must find them still leased."""
    store = Store(str(tmp_path / "state.db"), send_lease=timedelta(seconds=1))
    store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog")])
    base = PostItem(url="https://libertyinnorthkorea.org/blog/a", title="A", published=None, body_html="<p>a</p>",
                    summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=[base], baseline=True), NOW)
    for n in range(6):
        store.add_subscriber(f"reader{n}@example.org")
    fresh = PostItem(url="https://libertyinnorthkorea.org/blog/b", title="B", published=None, body_html="<p>b</p>",
                     summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=[base, fresh]), NOW)
    compose_and_queue(store, DigestSettings(secret=b"k"), NOW)
    with _SlowKeeping() as smtp:
        def sender(delay: float, results: list) -> None:
            time.sleep(delay)
            own = Store(str(tmp_path / "state.db"), send_lease=timedelta(seconds=1))
            channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=smtp.port, security="none",
                                                                 connections=1))
            with channel:
                results.append(flush_outbox(own, channel, datetime.now(timezone.utc)))
            own.close()

        results: list = []
        threads = [threading.Thread(target=sender, args=(delay, results)) for delay in (0, 1.5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == 6, sorted(ids)
    assert sorted(r.sent for r in results) == [0, 6]
    assert store.outbox_stats()["pending"] == 0
