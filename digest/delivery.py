"""Delivery channels: small registered classes; a new channel is one new class."""
from __future__ import annotations

import hashlib
import os
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from digest.settings import SmtpSettings

CHANNELS: dict[str, type["Channel"]] = {}


def register(name: str):
    def decorate(cls):
        CHANNELS[name] = cls
        cls.name = name
        return cls
    return decorate


def make_channel(name: str, **kwargs) -> "Channel":
    try:
        return CHANNELS[name](**kwargs)
    except KeyError:
        raise ValueError(f"no delivery channel {name!r} (known: {', '.join(sorted(CHANNELS))})") from None


@dataclass
class DeliveryResult:
    status: str          # "sent" | "retry" | "failed"
    detail: str = ""


class Channel:
    name = "channel"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, item) -> DeliveryResult:
        raise NotImplementedError

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
            self.path.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{stamp}-{hashlib.sha256(item.message_id.encode()).hexdigest()[:12]}.eml"
            final = self.path / name
            temporary = self.path / f".{name}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(item.raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            return DeliveryResult("sent", str(final))
        except OSError as exc:
            return DeliveryResult("retry", f"cannot write to {self.path}: {exc}")


@register("smtp")
class SmtpChannel(Channel):
    """One connection reused for a whole batch. 4xx, connection errors, timeouts and TLS
    failures are temporary (retry later); 5xx is permanent for that address."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.connection: smtplib.SMTP | None = None
        self.unavailable: str | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = s.ssl_context or ssl.create_default_context()
        if s.security == "ssl":
            connection = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
        else:
            connection = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            connection.ehlo()
            if s.security == "starttls":
                connection.starttls(context=context)
                connection.ehlo()
        if s.username:
            connection.login(s.username, s.password or "")
        return connection

    def open(self) -> None:
        self.connection, self.unavailable = None, None

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

    def send(self, item) -> DeliveryResult:
        if self.unavailable:
            # The server refused the connection or told us to go away: the rest of the batch
            # waits for the next run instead of hammering it.
            return DeliveryResult("retry", self.unavailable)
        for attempt in (1, 2):
            try:
                if self.connection is None:
                    self.connection = self._connect()
                sender = parseaddr(self._from(item))[1] or "postwatch@localhost"
                refused = self.connection.sendmail(sender, [item.to_addr], item.raw)
                if refused:
                    code, text = refused[item.to_addr]
                    return DeliveryResult("failed" if code >= 500 else "retry", f"{code} {text.decode(errors='replace')}")
                return DeliveryResult("sent", "250")
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 1:
                    continue          # the server closed an idle connection: reconnect once
                self.unavailable = f"SMTP server disconnected: {exc}"
                return DeliveryResult("retry", self.unavailable)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                return DeliveryResult("failed" if code >= 500 else "retry", f"{code} {text.decode(errors='replace')}")
            except smtplib.SMTPResponseException as exc:
                detail = f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
                if exc.smtp_code == 421 or isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPHeloError, smtplib.SMTPAuthenticationError)):
                    self._drop()
                    self.unavailable = f"SMTP server unavailable: {detail}"
                    return DeliveryResult("retry", self.unavailable)
                if exc.smtp_code >= 500:
                    self._reset()
                    return DeliveryResult("failed", detail)
                self._reset()
                return DeliveryResult("retry", detail)
            except (ssl.SSLError, smtplib.SMTPNotSupportedError) as exc:
                self._drop()
                self.unavailable = f"TLS with {self.settings.host}:{self.settings.port} failed: {exc}"
                return DeliveryResult("retry", self.unavailable)
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                self.unavailable = f"cannot reach SMTP server {self.settings.host}:{self.settings.port}: {exc or type(exc).__name__}"
                return DeliveryResult("retry", self.unavailable)
        return DeliveryResult("retry", "unreachable")

    def _reset(self) -> None:
        try:
            if self.connection is not None:
                self.connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    def _from(item) -> str:
        for line in item.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"from:"):
                return line[5:].decode("utf-8", "replace").strip()
        return ""
