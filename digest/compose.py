"""Building the email: stdlib `email`, multipart/alternative, list and unsubscribe headers."""
from __future__ import annotations

import binascii
import hashlib
import re
import secrets
import dataclasses
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.generator import BytesGenerator
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from io import BytesIO
from urllib.parse import quote

from markupsafe import escape

from digest.render import render_digest
from digest.settings import DigestSettings, wire_address
from digest.tokens import make_token
from state import ComposedMessage, Subscriber


def _one_line(value: str) -> str:
    """Header values never carry CR/LF: a title cannot inject a header."""
    return " ".join(str(value).split())


def unsubscribe_url(subscriber: Subscriber, settings: DigestSettings) -> str:
    token = make_token(subscriber, settings.secret)
    separator = "&" if "?" in settings.unsubscribe_base_url else "?"
    return f"{settings.unsubscribe_base_url}{separator}token={quote(token)}"


def preferences_url(subscriber: Subscriber, settings: DigestSettings) -> str:
    """The signed link to the subscriber's preferences page ("" when the daemon serves none)."""
    if not settings.preferences_base_url:
        return ""
    token = make_token(subscriber, settings.secret, purpose="preferences")
    separator = "&" if "?" in settings.preferences_base_url else "?"
    return f"{settings.preferences_base_url}{separator}token={quote(token)}"


def message_id_for(subscriber: Subscriber, events, settings: DigestSettings) -> str:
    """The same subscriber and the same events always give the same Message-ID, so a digest
    that is composed twice is recognisably the same message."""
    seqs = [e.seq for e in events if e.seq is not None]
    key = f"{settings.list_id}|{subscriber.id}|{min(seqs, default=0)}-{max(seqs, default=0)}|{len(events)}"
    return f"<digest.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{settings.domain}>"


EMAIL_SLOT, UNSUBSCRIBE_SLOT = "pw-slot-email-8f3a", "https://pw-slot-unsubscribe-8f3a.invalid/"
PREFERENCES_SLOT = "https://pw-slot-preferences-8f3a.invalid/"


class DigestComposer:
    """Renders each distinct digest once: subscribers with the same events, time zone and
    cadence share the rendering, and only their address and unsubscribe link differ."""

    def __init__(self, settings: DigestSettings, now: datetime, cache_size: int = 64):
        self.settings, self.now, self.cache_size = settings, now, cache_size
        self._cache: dict[tuple, object] = {}

    def _variant(self, subscriber: Subscriber, events):
        key = (tuple(e.id for e in events), subscriber.timezone, subscriber.cadence, getattr(subscriber, "lang", "en"))
        if key not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            # Rendered with slots for the address and the link, filled in per recipient.
            slotted = dataclasses.replace(subscriber, id=0, email=EMAIL_SLOT)
            rendered = render_digest(slotted, events, self.settings, self.now, UNSUBSCRIBE_SLOT,
                                     PREFERENCES_SLOT if self.settings.preferences_base_url else "")
            self._cache[key] = (rendered, MessageShape(rendered, self.settings, self.now))
        return self._cache[key]

    def __call__(self, subscriber: Subscriber, events) -> ComposedMessage:
        rendered, shape = self._variant(subscriber, events)
        settings = self.settings
        link = unsubscribe_url(subscriber, settings)
        preferences = preferences_url(subscriber, settings)
        html = (rendered.html.replace(UNSUBSCRIBE_SLOT, str(escape(link))).replace(PREFERENCES_SLOT, str(escape(preferences)))
                .replace(EMAIL_SLOT, str(escape(subscriber.email))))
        text = rendered.text.replace(UNSUBSCRIBE_SLOT, link).replace(PREFERENCES_SLOT, preferences).replace(EMAIL_SLOT, subscriber.email)
        message_id = message_id_for(subscriber, events, settings)
        token = link.rsplit("token=", 1)[1]
        to_addr = wire_address(subscriber.email)
        # A UTF-8 local part goes into To as raw UTF-8 (RFC 6532): such mail only travels by SMTPUTF8.
        # A mailto is advertised only when something reads it: the inbound listener (a mailbox
        # per subscriber), or a mailbox the operator names ([unsubscribe] mailto). An unsubscribe
        # request that nothing reads is worse than none. The one-click https link is always there.
        unsubscribe = f"<{link}>"
        if settings.inbound_domain:
            from digest.tokens import make_address_token

            mailbox = (f"{settings.inbound_unsubscribe_prefix}+"
                       f"{make_address_token(subscriber, settings.secret, 'unsubscribe')}@{settings.inbound_domain}")
            unsubscribe += f", <mailto:{mailbox}?subject=unsubscribe>"
        elif settings.unsubscribe_mailto:
            unsubscribe += f", <mailto:{wire_address(settings.unsubscribe_mailto)}?subject=unsubscribe-{token}>"
        raw = shape.fill({"To": to_addr, "Message-ID": message_id, "List-Unsubscribe": unsubscribe}, text, html)
        return ComposedMessage(message_id=message_id, subject=_one_line(rendered.subject), to_addr=to_addr, raw=raw)


def build_message(subscriber: Subscriber, events, settings: DigestSettings, now: datetime) -> ComposedMessage:
    """One subscriber's digest (composing many: one DigestComposer shares the rendering)."""
    return DigestComposer(settings, now)(subscriber, events)


# compat32 with CRLF: the classic email.mime classes build a digest about five times faster than
# EmailMessage with the header registry, and every header value here is already one clean line.
_WIRE = compat32.clone(linesep="\r\n", max_line_length=78)


def _header(name: str, value: str) -> str | Header:
    value = _one_line(value)
    if value.isascii():
        return value
    if name in ("From", "To", "Reply-To"):
        display, address = parseaddr(value)
        return formataddr((display, wire_address(address)), charset="utf-8")
    return Header(value, "utf-8")


def _flatten(message) -> bytes:
    buffer = BytesIO()
    BytesGenerator(buffer, policy=_WIRE).flatten(message)
    return buffer.getvalue()


def _base64_lines(value: str) -> bytes:
    # What email.charset does for a utf-8 part: 76-character base64 lines joined by CRLF.
    encoded = binascii.b2a_base64(value.encode("utf-8"), newline=False)
    return b"\r\n".join([encoded[start:start + 76] for start in range(0, len(encoded), 76)])


class MessageShape:
    """One digest's MIME message built once by the `email` package with stand-ins for what
    differs per recipient (To, Message-ID, List-Unsubscribe and the two base64 bodies), so
    10,000 subscribers cost 10,000 byte substitutions instead of 10,000 MIME trees."""

    def __init__(self, rendered, settings: DigestSettings, now: datetime):
        marker = secrets.token_hex(8)
        self._slots = {name: f"pw{marker}{name.replace('-', '')}" for name in ("To", "Message-ID", "List-Unsubscribe", "text", "html")}
        message = MIMEMultipart("alternative")
        headers = [("Subject", rendered.subject), ("From", settings.from_addr), ("To", self._slots["To"]),
                   ("Reply-To", settings.reply_to), ("Date", format_datetime(now)), ("Message-ID", self._slots["Message-ID"]),
                   ("List-Id", f"{_one_line(settings.site_name)} <{settings.list_id}>"),
                   ("List-Unsubscribe", self._slots["List-Unsubscribe"]),
                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                   ("Auto-Submitted", "auto-generated"), ("Precedence", "bulk")]
        for name, value in headers:
            if value:
                message[name] = _header(name, value)
        for subtype in ("plain", "html"):
            part = MIMENonMultipart("text", subtype, charset="utf-8")
            part["Content-Transfer-Encoding"] = "base64"
            part.set_payload(self._slots["text" if subtype == "plain" else "html"])
            message.attach(part)
        self._template = _flatten(message)
        self._pieces = re.split(b"(" + b"|".join(re.escape(s.encode()) for s in self._slots.values()) + b")", self._template)
        self._names = {slot.encode(): name for name, slot in self._slots.items()}

    def fill(self, personal: dict[str, str], text: str, html: str) -> bytes:
        values = {"text": _base64_lines(text), "html": _base64_lines(html),
                  "To": _one_line(personal["To"]).encode(), "Message-ID": personal["Message-ID"].encode(),
                  # Folded after the comma so that each line stays well under the 998-octet limit.
                  "List-Unsubscribe": _one_line(personal["List-Unsubscribe"]).replace(", <mailto:", ",\r\n <mailto:").encode()}
        return b"".join(values[self._names[piece]] if index % 2 else piece for index, piece in enumerate(self._pieces))


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


def build_confirmation(subscriber: Subscriber, confirm_url: str, expires: datetime, schedule: str,
                       settings: DigestSettings, now: datetime, *, reminder: bool = False) -> ComposedMessage:
    """The email that asks an address to confirm its signup (or, once, reminds it). Its
    Message-ID is fixed by the signup it confirms, so queueing it twice queues it once."""
    from digest.i18n import date_text, language, tr
    from digest.render import render_text

    lang = language(getattr(subscriber, "lang", None))
    message = EmailMessage(policy=SMTP)
    subject = (tr(lang, "Reminder: confirm your %(site)s subscription", site=settings.site_name) if reminder
               else tr(lang, "Confirm your %(site)s subscription", site=settings.site_name))
    message["Subject"] = _one_line(subject)
    message["From"] = settings.from_addr
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    to_addr = wire_address(subscriber.email)
    message["To"] = to_addr
    message["Date"] = format_datetime(now)
    asked = subscriber.signup_at.isoformat() if subscriber.signup_at else ""
    key = f"{settings.list_id}|confirm|{subscriber.id}|{asked}|{'reminder' if reminder else 'first'}"
    message_id = f"<confirm.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{settings.domain}>"
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_text("confirmation.txt.j2", settings, {
        "email": subscriber.email, "site_name": settings.site_name, "confirm_url": confirm_url, "schedule": schedule,
        "expires": f"{date_text(expires, lang)} {expires:%H:%M} UTC", "reminder": reminder,
        "organization": settings.organization, "postal_address": settings.postal_address}, lang))
    if lang != "en":
        message["Content-Language"] = lang
    return ComposedMessage(message_id=message_id, subject=message["Subject"], to_addr=to_addr, raw=message.as_bytes())
