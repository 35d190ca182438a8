"""The daemon's inbound mail listener (`[inbound] listen`): aiosmtpd on the daemon's own event
loop, for the mail that comes back to postwatch.

- Asynchronous bounces: every digest leaves with a VERP return path,
  `bounces+<id>.<mac>@<domain>`, so a delivery status notification (RFC 3464) names its
  subscriber; a permanent failure of the address counts as a hard bounce, exactly as a refusal
  at send time does ([digest] bounce_limit in a row suppress).
- Mailed unsubscribes: the List-Unsubscribe mailto of each digest is
  `unsubscribe+<id>.<mac>@<domain>`; any mail to it unsubscribes that subscriber.

A recipient whose token is forged or unknown, or was issued for an earlier subscription or an
erased subscriber (digest/tokens.py), is refused at RCPT TO (550 5.1.1) and changes nothing; so
is any address of another domain (this is no relay). The MX of `[inbound] domain` (or a
forwarding rule of the real mail server) must deliver those addresses here.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from digest.bounces import read_dsn
from digest.tokens import verify_address_token

log = logging.getLogger("postwatch.inbound")

BOUNCE, UNSUBSCRIBE = "bounce", "unsubscribe"
MAX_MESSAGE_BYTES = 1024 * 1024          # a DSN quotes the digest's headers, rarely more
IDLE_TIMEOUT = 60
# A whole session's bound: aiosmtpd's timeout is reset by every line, so a client that sends a
# byte now and then would hold its connection (and a slot of max_connections) for ever. A real
# MTA hands over a DSN or an unsubscribe in well under a second.
SESSION_DEADLINE = 300.0


class InboundHandler:
    """aiosmtpd handler: RCPT TO takes only this domain's signed addresses; DATA acts on them."""

    def __init__(self, app, domain: str, executor: ThreadPoolExecutor):
        self.app, self.domain, self.executor = app, domain.lower(), executor
        self.secret = app.config.unsubscribe_secret()
        self.prefixes = {app.config.inbound.bounce_prefix.lower(): BOUNCE,
                         app.config.inbound.unsubscribe_prefix.lower(): UNSUBSCRIBE}

    def recipient(self, address: str) -> tuple[str, int] | None:
        """(what, subscriber id) of an address we issued for the subscriber's current
        subscription, or None. Reads the subscriber: call it in the executor."""
        local, _, domain = address.strip("<> ").rpartition("@")
        prefix, plus, token = local.partition("+")
        what = self.prefixes.get(prefix.lower())
        if domain.lower().rstrip(".") != self.domain or not plus or what is None:
            return None
        subscriber_id = verify_address_token(token, self.secret, what, self.app.store.get_subscriber)
        return (what, subscriber_id) if subscriber_id is not None else None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.executor, self.recipient, address)
        except Exception as exc:              # the database is away: the sender will try again
            log.warning("inbound: RCPT TO %s not checked: %s", address, exc)
            return "451 4.3.0 try again later"
        if found is None:
            log.debug("inbound: refused RCPT TO %s from %s", address, session.peer)
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        raw = envelope.original_content or envelope.content
        loop = asyncio.get_running_loop()
        for address in envelope.rcpt_tos:
            try:
                await loop.run_in_executor(self.executor, self._act, address, raw)
            except Exception as exc:          # the database is away: the sender will try again
                log.warning("inbound: mail to %s not recorded: %s", address, exc)
                return "451 4.3.0 try again later"
        return "250 2.0.0 OK"

    def _act(self, address: str, raw: bytes) -> None:
        # Checked again: the subscription may have ended between RCPT TO and the end of DATA.
        found = self.recipient(address)
        if found is None:
            log.debug("inbound: %s names no current subscription any more; ignored", address)
            return
        what, subscriber_id = found
        store, now = self.app.store, datetime.now(timezone.utc)
        if what == UNSUBSCRIBE:
            if store.unsubscribe(subscriber_id):
                log.info("inbound: subscriber %d unsubscribed by mail", subscriber_id)
            return
        hard = [r for r in read_dsn(raw) if r.hard_bounce]
        if not hard:
            log.debug("inbound: mail to the return path of subscriber %d is no hard bounce; ignored", subscriber_id)
            return
        suppressed = store.record_bounce(subscriber_id, hard[0].detail, now, self.app.config.digest.bounce_limit)
        log.info("inbound: hard bounce for subscriber %d (%s)%s", subscriber_id, hard[0].detail,
                 f"; suppressed: {suppressed.suppressed_reason}" if suppressed else "")


def deadline_smtp(session_deadline: float):
    """aiosmtpd's SMTP protocol whose connection is aborted `session_deadline` seconds after it
    was made, whatever the client still sends."""
    from aiosmtpd.smtp import SMTP

    class DeadlineSMTP(SMTP):
        _deadline_handle: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if self._deadline_handle is None:          # not again for the TLS transport of STARTTLS
                self._deadline_handle = self.loop.call_later(session_deadline, self._deadline_passed)

        def _deadline_passed(self) -> None:
            log.warning("inbound: session from %s cut off after its %.0fs deadline", self.session.peer, session_deadline)
            if self.transport is not None:
                self.transport.abort()     # not close(): that waits for a client that may not read

        def connection_lost(self, error) -> None:
            if self._deadline_handle is not None:
                self._deadline_handle.cancel()
            super().connection_lost(error)

    return DeadlineSMTP


class InboundListener:
    """Serves InboundHandler on host:port on the running loop; `start` raises OSError when the
    address cannot be used."""

    def __init__(self, app, host: str, port: int, domain: str, session_deadline: float = SESSION_DEADLINE):
        self.host, self.port, self.session_deadline = host, port, session_deadline
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="postwatch-inbound")
        self.handler = InboundHandler(app, domain, self.executor)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        smtp = deadline_smtp(self.session_deadline)
        self.server = await loop.create_server(
            lambda: smtp(self.handler, data_size_limit=MAX_MESSAGE_BYTES, hostname=self.handler.domain,
                         ident="postwatch", loop=loop, timeout=IDLE_TIMEOUT),
            self.host, self.port)

    @property
    def address(self) -> str:
        if self.server and self.server.sockets:
            host, port = self.server.sockets[0].getsockname()[:2]
            return f"{host}:{port}"
        return f"{self.host}:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.executor.shutdown(wait=False, cancel_futures=True)
