"""SMTP faults the digest tests do not already cover: a 421 greeting, a stall in DATA."""
from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime, timedelta, timezone

from conftest import free_port
from crawler.items import PostItem
from digest.delivery import make_channel
from digest.sender import compose_and_queue, flush_outbox
from digest.settings import DigestSettings, SmtpSettings
from postwatch.mailcatcher import MailCatcher
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

    def greet_and_hang_up():   # the channel gives up on the batch after one 421: one connection
        connection, _ = listener.accept()
        connection.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
        connection.close()

    thread = threading.Thread(target=greet_and_hang_up, daemon=True)
    thread.start()
    refused = flush(store, port, NOW)
    assert (refused.sent, refused.retried) == (0, 2)
    thread.join(5)
    listener.close()
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
