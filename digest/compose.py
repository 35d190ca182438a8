"""Building the email: stdlib `email`, multipart/alternative, list and unsubscribe headers."""
from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.generator import BytesGenerator
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from io import BytesIO
from urllib.parse import quote

from markupsafe import escape

from digest.render import render_digest
from digest.settings import DigestSettings
from digest.tokens import make_token
from state import ComposedMessage


def _one_line(value: str) -> str:
    """Header values never carry CR/LF: a title cannot inject a header."""
    return " ".join(str(value).split())


def unsubscribe_url(subscriber, settings: DigestSettings) -> str:
    token = make_token(subscriber.id, subscriber.email, settings.secret)
    separator = "&" if "?" in settings.unsubscribe_base_url else "?"
    return f"{settings.unsubscribe_base_url}{separator}token={quote(token)}"


def message_id_for(subscriber, events, settings: DigestSettings) -> str:
    """The same subscriber and the same events always give the same Message-ID, so a digest
    that is composed twice is recognisably the same message."""
    seqs = [e.seq for e in events if e.seq is not None]
    key = f"{settings.list_id}|{subscriber.id}|{min(seqs, default=0)}-{max(seqs, default=0)}|{len(events)}"
    return f"<digest.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{settings.domain}>"


EMAIL_SLOT, UNSUBSCRIBE_SLOT = "pw-slot-email-8f3a", "https://pw-slot-unsubscribe-8f3a.invalid/"


class _Slotted:
    """A subscriber stand-in whose address and link are slots filled in per recipient."""

    def __init__(self, subscriber):
        self.id, self.email = 0, EMAIL_SLOT
        self.cadence, self.timezone = getattr(subscriber, "cadence", "daily"), getattr(subscriber, "timezone", "UTC")


class DigestComposer:
    """Renders each distinct digest once: subscribers with the same events, time zone and
    cadence share the rendering, and only their address and unsubscribe link differ."""

    def __init__(self, settings: DigestSettings, now: datetime, cache_size: int = 64):
        self.settings, self.now, self.cache_size = settings, now, cache_size
        self._cache: dict[tuple, object] = {}

    def rendered(self, subscriber, events):
        key = (tuple(e.id for e in events), getattr(subscriber, "timezone", "UTC"), getattr(subscriber, "cadence", "daily"))
        if key not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = render_digest(_Slotted(subscriber), events, self.settings, self.now, UNSUBSCRIBE_SLOT)
        return self._cache[key]

    def __call__(self, subscriber, events) -> ComposedMessage:
        return build_message(subscriber, events, self.settings, self.now, rendered=self.rendered(subscriber, events))


def build_message(subscriber, events, settings: DigestSettings, now: datetime, rendered=None) -> ComposedMessage:
    link = unsubscribe_url(subscriber, settings)
    if rendered is None:
        rendered = DigestComposer(settings, now).rendered(subscriber, events)
    html = rendered.html.replace(UNSUBSCRIBE_SLOT, str(escape(link))).replace(EMAIL_SLOT, str(escape(subscriber.email)))
    text = rendered.text.replace(UNSUBSCRIBE_SLOT, link).replace(EMAIL_SLOT, subscriber.email)
    message_id = message_id_for(subscriber, events, settings)
    token = link.rsplit("token=", 1)[1]
    headers = [
        ("Subject", rendered.subject),
        ("From", settings.from_addr),
        ("To", subscriber.email),
        ("Reply-To", settings.reply_to),
        ("Date", format_datetime(now)),
        ("Message-ID", message_id),
        ("List-Id", f"{_one_line(settings.site_name)} <{settings.list_id}>"),
        ("List-Unsubscribe", f"<{link}>, <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe-{token}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Auto-Submitted", "auto-generated"),
        ("Precedence", "bulk"),
    ]
    return ComposedMessage(message_id=message_id, subject=_one_line(rendered.subject), to_addr=subscriber.email,
                           raw=_mime(headers, text, html))


# compat32 with CRLF: the classic email.mime classes build a digest about five times faster than
# EmailMessage with the header registry, and every header value here is already one clean line.
_WIRE = compat32.clone(linesep="\r\n", max_line_length=78)


def _header(name: str, value: str) -> str | Header:
    value = _one_line(value)
    if value.isascii():
        return value
    if name in ("From", "To", "Reply-To"):
        display, address = parseaddr(value)
        return formataddr((display, address), charset="utf-8")
    return Header(value, "utf-8")


def _mime(headers: list[tuple[str, str | None]], text: str, html: str) -> bytes:
    message = MIMEMultipart("alternative")
    for name, value in headers:
        if value:
            message[name] = _header(name, value)
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
    buffer = BytesIO()
    BytesGenerator(buffer, policy=_WIRE).flatten(message)
    return buffer.getvalue()


def build_alert(operator_addr: str, subject: str, lines: list[str], settings: DigestSettings, now: datetime) -> ComposedMessage:
    message = EmailMessage(policy=SMTP)
    message["Subject"] = _one_line(subject)
    message["From"] = settings.from_addr
    message["To"] = operator_addr
    message["Date"] = format_datetime(now)
    day = now.strftime("%Y-%m-%d")
    message_id = f"<alert.{hashlib.sha256(f'{subject}|{day}'.encode()).hexdigest()[:32]}@{settings.domain}>"
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + f"\n\n-- \npostwatch, {format_datetime(now)}\n")
    return ComposedMessage(message_id=message_id, subject=message["Subject"], to_addr=operator_addr, raw=message.as_bytes())
