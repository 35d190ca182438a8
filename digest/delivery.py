"""Delivery channels: small registered classes; a new channel is one new class.

A channel carries one kind of outbox message (`carries`): "email" for the mail channels (smtp,
folder, or one named in [delivery] channel), or its own kind for a channel that claims some
subscriber addresses (an https:// URL is a webhook's, a service URL such as tgram:// or json://
is Apprise's). Such a channel also composes its messages (`composer`): the outbox stores what
was composed, and the channel sends it as it is."""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import smtplib
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from functools import lru_cache
from email.utils import parseaddr
from pathlib import Path

from digest.deadline import Deadline
from digest.settings import SmtpSettings, wire_address
from state.suppression import enhanced_code

CHANNELS: dict[str, type["Channel"]] = {}


def register(name: str):
    def decorate(cls):
        CHANNELS[name] = cls
        cls.name = name
        return cls
    return decorate


def private_opener(path, flags: int) -> int:
    """For open(..., opener=): a file created (or rewritten) with mode 0600 whatever the umask.
    Anything but a regular file (/dev/stdout, a pipe) is left as it is."""
    fd = os.open(path, flags, 0o600)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, 0o600)
    return fd


def make_channel(name: str, **kwargs) -> "Channel":
    try:
        return CHANNELS[name](**kwargs)
    except KeyError:
        raise ValueError(f"no delivery channel {name!r} (known: {', '.join(sorted(CHANNELS))})") from None


def channel_for_address(address: str) -> "type[Channel] | None":
    """The registered channel that claims a subscriber's address; None for an email address,
    which goes through the mail channel."""
    for cls in CHANNELS.values():
        if cls.claims(address):
            return cls
    return None


def message_kind(address: str) -> str:
    """The kind of outbox message a subscriber's address gets: "email", "webhook", "apprise"."""
    cls = channel_for_address(address)
    return cls.carries if cls is not None else "email"


def shown_address(address: str) -> str:
    """An address as printed and logged: an Apprise URL carries its service's token after the
    scheme, so only the scheme and the last few characters are shown; email addresses and
    webhook URLs are shown whole (a webhook's secret is not in its URL)."""
    if message_kind(address) != "apprise":
        return address
    scheme, _, rest = address.partition("://")
    return f"{scheme}://…{rest[-6:]}" if len(rest) > 12 else address


def address_problem(address: str) -> str | None:
    """Why a non-email subscriber address cannot be delivered to (one line), or None."""
    cls = channel_for_address(address)
    return cls.address_problem(address) if cls is not None else None


@dataclass
class DeliveryResult:
    status: str          # "sent" | "retry" | "failed"
    detail: str = ""
    # The server's answer to a refused message: the SMTP reply code and the RFC 3463 enhanced
    # code ("5.1.1"), so the sender can tell a dead address from a refused message.
    code: int | None = None
    enhanced: str | None = None
    # Seconds the receiver asked to wait before the next attempt (HTTP Retry-After).
    retry_after: float | None = None
    # The address itself is gone (a webhook's 404 or 410): counted like a hard bounce.
    address_gone: bool = False
    # Not tried in this flush: its receiver ran out of time (or was unavailable) earlier in it,
    # so this message waits for its retry instead of waiting out the same deadline again.
    put_off: bool = False

    @classmethod
    def refused(cls, code: int, text: bytes | str) -> "DeliveryResult":
        """A reply that refused the message: permanent for 5xx, a retry for 4xx."""
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        return cls("failed" if code >= 500 else "retry", f"{code} {text}", code, enhanced_code(text))


class Channel:
    name = "channel"
    carries = "email"           # the kind of outbox message this channel delivers

    @classmethod
    def claims(cls, address: str) -> bool:
        """Whether a subscriber's address is this channel's (the mail channels claim none: an
        address that no channel claims is an email address)."""
        return False

    @classmethod
    def address_problem(cls, address: str) -> str | None:
        """Why this channel cannot deliver to `address` (one line), or None."""
        return None

    @classmethod
    def composer(cls, settings, now):
        """A callable (subscriber, events) -> ComposedMessage for this channel's messages."""
        raise NotImplementedError

    @classmethod
    def configured(cls, config) -> "Channel":
        """This channel as the config (postwatch.config.Config) sets it up, for a channel that
        claims addresses; the mail channels are built from [smtp] and [delivery] instead."""
        return cls()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, item) -> DeliveryResult:
        raise NotImplementedError

    def send_many(self, items: Iterable, on_sent: Callable[[object], None] | None = None,
                  wanted: Callable[[object], bool] | None = None) -> Iterator[tuple[object, DeliveryResult]]:
        """Each item with its result. `on_sent(item)` runs the moment a message is accepted, in
        the thread that sent it, before the result is handed back (see state/accepted.py).
        `wanted(item)` is asked right before an item is sent; an item it turns down is dropped
        unsent, without a result (its subscriber was suppressed by an earlier result)."""
        for item in items:
            if wanted is None or wanted(item):
                yield item, self._send_noting(item, on_sent)

    def _send_noting(self, item, on_sent) -> DeliveryResult:
        result = self.send(item)
        if on_sent is not None and result.status == "sent":
            on_sent(item)
        return result

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


@register("folder")
class FolderChannel(Channel):
    """Each message as an .eml file: the embedded default when no SMTP server is configured."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def send(self, item) -> DeliveryResult:
        try:
            # Digests name their subscribers: only the account postwatch runs as may read them.
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{stamp}-{hashlib.sha256(item.message_id.encode()).hexdigest()[:12]}.eml"
            final = self.path / name
            temporary = self.path / f".{name}.tmp"
            with open(temporary, "wb", opener=private_opener) as handle:
                handle.write(item.raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            return DeliveryResult("sent", str(final))
        except OSError as exc:
            return DeliveryResult("retry", f"cannot write to {self.path}: {exc}")


@register("smtp")
class SmtpChannel(Channel):
    """Up to `settings.connections` SMTP connections, each reused for a whole batch. 4xx,
    connection errors, timeouts and TLS failures are temporary (retry later); 5xx is permanent
    for that address. Once the server refuses the connection, says 421 or runs past a message's
    deadline (`settings.timeout` for its whole conversation), the rest of the batch waits for the
    next run instead of hammering it."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.unavailable: str | None = None
        self._sessions: list[SmtpSession] = []
        self._idle: queue.SimpleQueue[SmtpSession] = queue.SimpleQueue()

    def open(self) -> None:
        self.unavailable = None
        self._sessions = [SmtpSession(self.settings, self) for _ in range(max(1, self.settings.connections))]
        self._idle = queue.SimpleQueue()
        for session in self._sessions:
            self._idle.put(session)

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        self._sessions = []

    def send(self, item) -> DeliveryResult:
        if not self._sessions:
            self.open()
        session = self._idle.get()
        try:
            return session.send(item)
        finally:
            self._idle.put(session)

    def send_many(self, items: Iterable, on_sent: Callable[[object], None] | None = None,
                  wanted: Callable[[object], bool] | None = None) -> Iterator[tuple[object, DeliveryResult]]:
        """Each item with its result, as the server answers; at most one message in flight per
        connection, so a crash leaves at most `connections` accepted messages unrecorded."""
        if not self._sessions:
            self.open()
        if len(self._sessions) == 1:
            yield from super().send_many(items, on_sent, wanted)
            return
        with ThreadPoolExecutor(max_workers=len(self._sessions), thread_name_prefix="postwatch-smtp") as pool:
            in_flight: dict = {}

            def finished():
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                return [(in_flight.pop(future), future.result()) for future in done]

            items = iter(items)
            while True:
                # The next item is taken only once a connection is free: a sender told to stop
                # (between items) then has nothing taken and not yet sent.
                while len(in_flight) >= len(self._sessions):
                    yield from finished()
                item = next(items, None)
                if item is None:
                    break
                # Two digests to one address leave in the order they were composed.
                while any(other.to_addr == item.to_addr for other in in_flight.values()):
                    yield from finished()
                # What the results handed back meanwhile said (a bounce that suppressed this
                # address) is asked now, not when the item was taken.
                if wanted is not None and not wanted(item):
                    continue
                in_flight[pool.submit(self._send_noting, item, on_sent)] = item
            for future in as_completed(list(in_flight)):
                yield in_flight.pop(future), future.result()


class _Watched:
    """smtplib's client with its socket under a deadline from the moment it is connected, so
    that a greeting that never ends is cut too (smtplib connects inside its constructor).
    `_get_socket` is the hook smtplib's own SMTP_SSL and LMTP override."""

    def __init__(self, deadline: Deadline, *args, **kwargs):
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        return self.deadline.watch(super()._get_socket(host, port, timeout))


class _WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class _WatchedSMTP_SSL(_Watched, smtplib.SMTP_SSL):  # noqa: N801 - smtplib's name
    pass


class SmtpSession:
    """One SMTP connection and what its answers mean."""

    def __init__(self, settings: SmtpSettings, channel: SmtpChannel):
        self.settings, self.channel = settings, channel
        self.connection: smtplib.SMTP | None = None

    def _connect(self, deadline: Deadline) -> smtplib.SMTP:
        s = self.settings
        context = s.ssl_context or ssl.create_default_context()
        # Each read waits at most what is left of the deadline (the TLS handshake of "ssl", which
        # the watchdog cannot reach before it ends, included).
        timeout = max(0.1, min(s.timeout, deadline.remaining()))
        if s.security == "ssl":
            connection = _WatchedSMTP_SSL(deadline, s.host, s.port, timeout=timeout, context=context)
        else:
            connection = _WatchedSMTP(deadline, s.host, s.port, timeout=timeout)
            connection.ehlo()
            if s.security == "starttls":
                connection.starttls(context=context)
                deadline.watch(connection.sock)      # the TLS socket replaces the one watched
                connection.ehlo()
        if s.username:
            connection.login(s.username, s.password or "")
        return connection

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.quit()
            except (smtplib.SMTPException, OSError):
                self.connection.close()
            self.connection = None

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except OSError:
                pass
        self.connection = None

    def _give_up(self, reason: str) -> DeliveryResult:
        self.channel.unavailable = reason
        return DeliveryResult("retry", reason)

    def send(self, item) -> DeliveryResult:
        """One message, its whole conversation (connecting included) within `settings.timeout`:
        past it the watchdog cuts the connection, and the message and the rest of the batch
        wait for their retry. A message cut after its final dot may have been accepted by the
        server; like a timeout, it is then sent twice (at least once, never lost)."""
        if self.channel.unavailable:
            return DeliveryResult("retry", self.channel.unavailable, put_off=True)
        with Deadline(self.settings.timeout) as deadline:
            if self.connection is not None:
                deadline.watch(self.connection.sock)
            result = self._send(item, deadline)
        if deadline.expired:
            self._drop()          # cut: not to be reused
            if result.status != "sent":
                return self._give_up(f"SMTP server {self.settings.host}:{self.settings.port} did not finish within "
                                     f"the {self.settings.timeout:g}s deadline of a message ([smtp] timeout)")
        return result

    def _send(self, item, deadline: Deadline) -> DeliveryResult:
        raw = self.settings.dkim.sign(item.raw) if self.settings.dkim is not None else item.raw
        for attempt in (1, 2):
            if self.channel.unavailable:
                return DeliveryResult("retry", self.channel.unavailable, put_off=True)
            try:
                if self.connection is None:
                    self.connection = self._connect(deadline)
                try:
                    verp = self.settings.return_path(item) if self.settings.return_path else None
                    sender = verp or (wire_address(self.settings.envelope_from) if self.settings.envelope_from
                                      else envelope_sender(item.raw))
                except ValueError as exc:
                    return DeliveryResult("failed", str(exc))
                options = [] if item.to_addr.isascii() else ["SMTPUTF8"]
                if options:
                    self.connection.ehlo_or_helo_if_needed()
                    if not self.connection.has_extn("smtputf8"):
                        return DeliveryResult("failed", f"{self.settings.host} does not offer SMTPUTF8, which the "
                                                        f"address {item.to_addr} needs (RFC 6531)")
                refused = self.connection.sendmail(sender, [item.to_addr], raw, mail_options=options)
                if refused:
                    return DeliveryResult.refused(*refused[item.to_addr])
                return DeliveryResult("sent", "250")
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 1 and not deadline.expired:
                    continue          # the server closed an idle connection: reconnect once
                return self._give_up(f"SMTP server disconnected: {exc}")
            except smtplib.SMTPRecipientsRefused as exc:
                return DeliveryResult.refused(*next(iter(exc.recipients.values())))
            except smtplib.SMTPResponseException as exc:
                answer = DeliveryResult.refused(exc.smtp_code, exc.smtp_error)
                if exc.smtp_code == 421 or isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPHeloError, smtplib.SMTPAuthenticationError)):
                    self._drop()
                    return self._give_up(f"SMTP server unavailable: {answer.detail}")
                self._reset()
                return answer
            except (ssl.SSLError, smtplib.SMTPNotSupportedError) as exc:
                self._drop()
                return self._give_up(f"TLS with {self.settings.host}:{self.settings.port} failed: {exc}")
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                return self._give_up(f"cannot reach SMTP server {self.settings.host}:{self.settings.port}: {exc or type(exc).__name__}")
        return DeliveryResult("retry", "unreachable")

    def _reset(self) -> None:
        try:
            if self.connection is not None:
                self.connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


def envelope_sender(raw: bytes) -> str:
    """The address in the message's From header, for MAIL FROM: the whole header, unfolded,
    then its address part alone (a long or non-ASCII display name is folded or RFC 2047-encoded,
    so the header's first line need not hold the address), its domain as IDNA. Raises ValueError
    when From holds no usable address: a made-up sender would only be refused further on."""
    header = re.search(rb"^from:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw.split(b"\r\n\r\n", 1)[0],
                       re.IGNORECASE | re.MULTILINE)
    address = _address(header.group(1)) if header else ""
    if not _ADDRESS.fullmatch(address):
        shown = header.group(1).decode("utf-8", "replace").strip()[:80] if header else "none"
        raise ValueError(f"no plain sender address for MAIL FROM in the message's From header ({shown}); "
                         "set [smtp] envelope_from")
    return address


@lru_cache(maxsize=64)
def _address(header_value: bytes) -> str:
    # Every digest carries the same From: parse it once, not 10,000 times.
    # Encoded words (RFC 2047) stay as they are: they are atoms of the display name, and only the
    # address part is wanted.
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", header_value).decode("utf-8", "replace")
    address = parseaddr(unfolded.strip())[1]
    return wire_address(address) if address else ""


# What MAIL FROM can carry without SMTPUTF8. `config check` asks more of a relay's sender
# (digest.settings.plain_address).
_ADDRESS = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+@[A-Za-z0-9.-]+")


# --------------------------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------------------------
# 408 and 429 say "not now"; every other 4xx says the request itself will never be accepted.
RETRIED_CLIENT_ERRORS = {408, 429}
MAX_REDIRECTS = 3
MAX_RETRY_AFTER = 86_400.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """An HTTP Retry-After value (delay-seconds or an HTTP-date) as seconds from `now`, capped at
    a day; None when absent or unreadable."""
    from email.utils import parsedate_to_datetime

    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when - now), MAX_RETRY_AFTER)


@register("webhook")
class WebhookChannel(Channel):
    """A signed JSON POST of the events to a subscriber whose address is an http(s) URL.

    The standard library's http.client, on purpose: the sender runs in a worker thread, where a
    blocking client is the natural fit (aiohttp would need an event loop of its own per flush),
    it adds no dependency, and it never follows a redirect by itself, so a receiver cannot send
    the signed events to another host: a 307/308 to the same scheme, host and port is followed
    (the body and method kept), any other redirect is a permanent failure naming where it
    pointed. One keep-alive connection per receiver for the whole flush.

    `timeout` is the deadline of one whole delivery (connecting, sending, the status line and
    the body, redirects included), not of each read: a receiver that drips its answer is cut
    off when it passes, and its other messages in this flush are put off at once."""

    carries = "webhook"

    def __init__(self, secret: bytes, timeout: float = 10.0, user_agent: str = "postwatch webhook",
                 clock: Callable[[], float] = time.time):
        self.secret, self.timeout, self.user_agent, self.clock = secret, timeout, user_agent, clock
        self._connections: dict[tuple[str, str, int], object] = {}
        self._out_of_time: dict[tuple[str, str, int], str] = {}     # receiver -> why its messages wait

    @classmethod
    def claims(cls, address: str) -> bool:
        return address[:8].lower().startswith(("http://", "https://"))

    @classmethod
    def address_problem(cls, address: str) -> str | None:
        from urllib.parse import urlsplit

        parts = urlsplit(address)
        if not parts.hostname:
            return f"webhook URL {address!r} has no host"
        if parts.username or parts.password:
            return f"webhook URL {address!r} carries a user name or password; receivers check the signature instead"
        if len(address) > 320:
            return f"webhook URL is {len(address)} characters long; at most 320 are kept"
        try:
            parts.port
        except ValueError:
            return f"webhook URL {address!r} has an invalid port"
        return None

    @classmethod
    def composer(cls, settings, now):
        from digest.webhook import delivery_id, payload
        from state import ComposedMessage

        def compose(subscriber, events) -> ComposedMessage:
            delivery = delivery_id(settings.list_id, subscriber.id, [e.seq for e in events if e.seq is not None])
            body = payload(delivery, events, site_name=settings.site_name, source_titles=settings.source_titles,
                           now=now)
            subject = f"{len(events)} change{'s' * (len(events) != 1)}: {' '.join(events[0].title.split())}"[:200]
            return ComposedMessage(message_id=delivery, subject=subject, to_addr=subscriber.email, raw=body,
                                   channel=cls.carries)
        return compose

    @classmethod
    def configured(cls, config) -> "WebhookChannel":
        from postwatch import __version__

        return cls(secret=config.webhook_secret(), timeout=config.webhook.timeout,
                   user_agent=f"postwatch/{__version__} webhook (+{config.crawl.contact_url})")

    def signing_secret(self, url: str) -> str:
        from digest.webhook import endpoint_secret

        return endpoint_secret(self.secret, url)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        self._out_of_time.clear()

    def _connection(self, scheme: str, host: str, port: int, deadline: Deadline):
        import http.client

        key = (scheme, host, port)
        if key not in self._connections:
            if scheme == "https":
                self._connections[key] = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                                     context=ssl.create_default_context())
            else:
                self._connections[key] = http.client.HTTPConnection(host, port, timeout=self.timeout)
        connection = self._connections[key]
        if connection.sock is None:
            # Connected here, not inside request(), so that the socket is under the deadline
            # before the first byte goes out; the connect (and TLS handshake) waits at most
            # what is left of it.
            connection.timeout = max(0.1, min(self.timeout, deadline.remaining()))
            connection.connect()
        deadline.watch(connection.sock)
        return connection

    def _drop(self, key) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    @staticmethod
    def _receiver(url: str) -> tuple[str, str, int]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80)

    def send(self, item) -> DeliveryResult:
        receiver = self._receiver(item.to_addr)
        if receiver in self._out_of_time:
            return DeliveryResult("retry", self._out_of_time[receiver], put_off=True)
        with Deadline(self.timeout) as deadline:
            result = self._post(item, deadline)
        if deadline.expired:
            for key in [k for k in self._connections if k[:2] == receiver[:2]]:
                self._drop(key)            # cut: not to be reused
            if result.status != "sent":
                scheme, host, port = receiver
                reason = (f"{scheme}://{host}:{port} did not answer within the {self.timeout:g}s deadline "
                          "([webhook] timeout)")
                self._out_of_time[receiver] = reason
                return DeliveryResult("retry", reason)
        return result

    def _post(self, item, deadline: Deadline) -> DeliveryResult:
        from digest.webhook import DELIVERY_HEADER, SCHEMA, SCHEMA_HEADER, SIGNATURE_HEADER, sign

        url = item.to_addr
        secret = self.signing_secret(item.to_addr)
        for _ in range(MAX_REDIRECTS + 1):
            # Signed at each attempt: a retry carries a fresh timestamp, so receivers can keep
            # their replay window short.
            headers = {"Content-Type": "application/json", "User-Agent": self.user_agent,
                       SIGNATURE_HEADER: sign(secret, item.raw, int(self.clock())),
                       DELIVERY_HEADER: item.message_id, SCHEMA_HEADER: SCHEMA}
            answer = self._exchange(url, item.raw, headers, deadline)
            if isinstance(answer, DeliveryResult):
                return answer
            result = self._judge_answer(url, answer)
            if isinstance(result, DeliveryResult):
                return result
            url = result
        return DeliveryResult("failed", f"more than {MAX_REDIRECTS} redirects from {item.to_addr}")

    def _exchange(self, url: str, body: bytes, headers: dict[str, str], deadline: Deadline):
        """POST to `url` on a kept connection; the answer (read), or why it could not be had."""
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        key = self._receiver(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            for attempt in (1, 2):
                connection = self._connection(*key, deadline)
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    # The receiver closed a kept-alive connection between two deliveries.
                    self._drop(key)
                    if attempt == 2 or deadline.expired:
                        raise
            # Read to the end (the connection is kept), but not a large answer.
            response.read(65_536)
            if not response.isclosed() or response.will_close:
                self._drop(key)
            return response
        except ssl.SSLError as exc:
            self._drop(key)
            return DeliveryResult("retry", f"TLS with {parts.hostname} failed: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            self._drop(key)
            return DeliveryResult("retry", f"cannot reach {parts.scheme}://{parts.netloc}: "
                                           f"{exc or type(exc).__name__}")

    def _judge_answer(self, url: str, response) -> DeliveryResult | str:
        """What a receiver's answer makes of the delivery, or the URL a redirect on its host sends it to."""
        from urllib.parse import urljoin

        status, reason = response.status, response.reason
        answer = f"HTTP {status} {reason}".strip()
        if 200 <= status < 300:
            return DeliveryResult("sent", answer)
        if status in (307, 308):
            target = urljoin(url, response.getheader("Location") or "")
            if self._receiver(target) != self._receiver(url):
                return DeliveryResult("failed", f"{answer}: redirected to {target}, another host; postwatch "
                                                "follows a webhook's redirects only on the same host (set the "
                                                "subscriber's URL to the final one)")
            return target
        if 300 <= status < 400:
            return DeliveryResult("failed", f"{answer}: a redirect that would turn the POST into a GET "
                                            f"(to {response.getheader('Location')}); set the final URL")
        if status in RETRIED_CLIENT_ERRORS or status >= 500:
            return DeliveryResult("retry", answer,
                                  retry_after=retry_after_seconds(response.getheader("Retry-After"), self.clock()))
        # No receiver at that URL any more: [digest] bounce_limit of these in a row suppress it.
        return DeliveryResult("failed", answer, address_gone=status in (404, 410))


# --------------------------------------------------------------------------------------------
# Apprise: chat and push services (the optional extra postwatch[apprise])
# --------------------------------------------------------------------------------------------
APPRISE_MISSING = "Apprise URLs need the apprise extra: pip install 'postwatch[apprise]'"


def _apprise():
    try:
        import apprise
    except ImportError:
        return None
    return apprise


def _instantiate(apprise, url: str):
    """Apprise's plugin for `url`, or None; Apprise's own log line about a bad URL is dropped
    (the caller says it in one line)."""
    import logging

    logger = logging.getLogger("apprise")
    propagate, logger.propagate = logger.propagate, False
    try:
        with apprise.LogCapture(level=logging.ERROR):
            return apprise.Apprise.instantiate(url)
    finally:
        logger.propagate = propagate


@register("apprise")
class AppriseChannel(Channel):
    """A short text of the digest to a subscriber whose address is an Apprise URL (tgram://,
    slack://, discord://, matrix://, ntfy://, json://...): as many lines as the service's
    limit (its plugin's body_maxlen) takes. Apprise tells only whether a notification went
    out, not why it did not: a failure is retried until [digest] max_attempts.

    `timeout` bounds one notification. Apprise's plugins have timeouts per request only (set
    here to what is left of the deadline), and a plugin call cannot be interrupted: one still
    running at the deadline is left to finish in a daemon thread (it keeps no process alive)
    and reported as a retry, which it may turn out not to need: that notification can then
    arrive twice, never not at all. Until it ends, its URL gets no other call; its other
    messages are put off."""

    carries = "apprise"

    def __init__(self, timeout: float = 10.0):
        self.timeout = timeout
        self._plugins: dict[str, object] = {}
        self._out_of_time: dict[str, str] = {}

    @classmethod
    def configured(cls, config) -> "AppriseChannel":
        return cls(timeout=config.webhook.timeout)

    @classmethod
    def claims(cls, address: str) -> bool:
        scheme, sep, _ = address.partition("://")
        return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and \
            scheme.lower() not in ("http", "https")

    @classmethod
    def address_problem(cls, address: str) -> str | None:
        apprise = _apprise()
        if apprise is None:
            return APPRISE_MISSING
        if len(address) > 320:
            return f"Apprise URL is {len(address)} characters long; at most 320 are kept"
        if _instantiate(apprise, address) is None:
            return f"{address.partition('://')[0]}:// is not a service Apprise knows, or the URL is incomplete"
        return None

    @classmethod
    def composer(cls, settings, now):
        import hashlib

        from digest.notify import notification
        from state import ComposedMessage

        def compose(subscriber, events) -> ComposedMessage:
            seqs = [e.seq for e in events if e.seq is not None]
            key = f"{settings.list_id}|apprise|{subscriber.id}|{min(seqs, default=0)}-{max(seqs, default=0)}|{len(seqs)}"
            raw = notification(events, site_name=settings.site_name, source_titles=settings.source_titles,
                               source_urls=settings.source_urls)
            return ComposedMessage(message_id="ntf_" + hashlib.sha256(key.encode()).hexdigest()[:32],
                                   subject=json.loads(raw)["title"][:200], to_addr=subscriber.email, raw=raw,
                                   channel=cls.carries)
        return compose

    def _plugin(self, url: str):
        if url not in self._plugins:
            self._plugins[url] = _instantiate(_apprise(), url)
        return self._plugins[url]

    def send(self, item) -> DeliveryResult:
        import logging

        from digest.notify import fit

        apprise = _apprise()
        if apprise is None:
            return DeliveryResult("retry", APPRISE_MISSING)
        plugin = self._plugin(item.to_addr)
        if plugin is None:
            return DeliveryResult("failed", f"{item.to_addr.partition('://')[0]}:// is not a service Apprise knows")
        if item.to_addr in self._out_of_time:
            return DeliveryResult("retry", self._out_of_time[item.to_addr], put_off=True)
        running = _ABANDONED.get(item.to_addr)
        if running is not None and running.is_alive():
            return DeliveryResult("retry", f"{type(plugin).__name__}: the notification of an earlier flush is still "
                                           "running", put_off=True)
        title, body = fit(json.loads(item.raw), plugin.body_maxlen, plugin.title_maxlen)
        plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, self.timeout)
        plugin.socket_read_timeout = min(plugin.socket_read_timeout, self.timeout)
        outcome: dict[str, object] = {}

        def notify():
            with apprise.LogCapture(level=logging.WARNING) as captured:
                try:
                    outcome["ok"] = plugin.notify(body=body, title=title)
                except Exception as exc:      # a plugin's bug: this message waits, the flush goes on
                    outcome["said"] = f"{type(exc).__name__}: {exc}"
                    return
            outcome["said"] = captured.getvalue()

        worker = threading.Thread(target=notify, name="postwatch-apprise", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            _ABANDONED[item.to_addr] = worker
            reason = (f"{type(plugin).__name__} to {shown_address(item.to_addr)} did not finish within the "
                      f"{self.timeout:g}s deadline ([webhook] timeout); it may still arrive")
            self._out_of_time[item.to_addr] = reason
            return DeliveryResult("retry", reason)
        ok, said = outcome.get("ok"), [line.strip() for line in str(outcome.get("said", "")).splitlines() if line.strip()]
        if ok:
            return DeliveryResult("sent", f"{type(plugin).__name__}: {len(body)} characters")
        return DeliveryResult("retry", f"{type(plugin).__name__}: " + (said[-1] if said else "not sent"))


# Apprise URL -> a notification left running past its deadline (see AppriseChannel).
_ABANDONED: dict[str, threading.Thread] = {}
