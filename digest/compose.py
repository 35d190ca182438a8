"""Building the email: stdlib `email`, multipart/alternative, list and unsubscribe headers."""
from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import quote

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


def build_message(subscriber, events, settings: DigestSettings, now: datetime) -> ComposedMessage:
    link = unsubscribe_url(subscriber, settings)
    rendered = render_digest(subscriber, events, settings, now, link)
    message = EmailMessage(policy=SMTP)
    message["Subject"] = _one_line(rendered.subject)
    message["From"] = settings.from_addr
    message["To"] = subscriber.email
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Date"] = format_datetime(now)
    message_id = message_id_for(subscriber, events, settings)
    message["Message-ID"] = message_id
    message["List-Id"] = f"{_one_line(settings.site_name)} <{settings.list_id}>"
    token = link.rsplit("token=", 1)[1]
    message["List-Unsubscribe"] = f"<{link}>, <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe-{token}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return ComposedMessage(message_id=message_id, subject=message["Subject"], to_addr=subscriber.email,
                           raw=message.as_bytes())


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
