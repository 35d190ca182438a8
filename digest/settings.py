"""What the digest needs to know about the sender, the list and the mail server."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import idna

if TYPE_CHECKING:
    from digest.signing import DkimSigner


@dataclass
class DigestSettings:
    from_addr: str = "postwatch <postwatch@localhost>"
    reply_to: str | None = None
    list_id: str = "postwatch.localhost"
    site_name: str = "postwatch"
    unsubscribe_base_url: str = "http://127.0.0.1:8780/unsubscribe"
    # A mailbox that someone or something reads; "" advertises the one-click https link only.
    unsubscribe_mailto: str = ""
    # The inbound listener's domain ("": none runs): each digest's mailto unsubscribe is then
    # unsubscribe+<token>@ this domain, which the listener reads.
    inbound_domain: str = ""
    inbound_unsubscribe_prefix: str = "unsubscribe"
    # Where the signed link in every digest footer opens the subscriber's preferences ("": no link).
    preferences_base_url: str = ""
    secret: bytes = b""
    templates_dir: Path | None = None
    timezone: str = "UTC"
    source_titles: dict[str, str] = field(default_factory=dict)
    source_langs: dict[str, str] = field(default_factory=dict)    # source -> the language its posts are in, when known
    source_urls: dict[str, str] = field(default_factory=dict)     # "and N more posts" links there
    organization: str = ""           # the footer's sender and postal address (CAN-SPAM)
    postal_address: str = ""
    max_posts: int = 60              # posts shown per digest; the size budget may show fewer
    full_posts: int = 20             # of those, shown in full (lead or diff); the others in one line
    lead: str = "short"              # "short": ~250 characters and "Read more"; "full": up to 600
    # The web archive (postwatch/web.py), ending in "/": each digest links to its copy there
    # ("View in browser"; "": no link). `archive_public`: the pages have a public address
    # ([unsubscribe] public_url), so "And N more new posts" links to the source's archive page
    # rather than to the blog.
    archive_url: str = ""
    archive_public: bool = False
    # Where the daemon's pages link to each other: "" (the same host, links from "/"), or the
    # public address of "/" without its trailing slash.
    pages_root: str = ""

    @property
    def domain(self) -> str:
        return self.from_addr.rpartition("@")[2].strip("> ") or "localhost"


@dataclass
class SmtpSettings:
    host: str
    port: int = 587
    security: str = "starttls"       # starttls | ssl | none
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    connections: int = 4             # parallel SMTP sessions; 1 sends strictly one after another
    ssl_context: object | None = None  # tests pass one that trusts their own certificate
    envelope_from: str | None = None   # MAIL FROM; else the address part of each message's From
    # MAIL FROM per message (a VERP address naming the subscriber), or None for the above.
    return_path: "Callable[[object], str | None] | None" = None
    # Signs each message as it is handed to the server, as an outgoing MTA's milter would: the
    # signature's time is the sending time, and the outbox keeps what was composed.
    dkim: "DkimSigner | None" = None


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def plain_address(address: str | None) -> bool:
    """An address a strict relay takes in MAIL FROM without SMTPUTF8: ASCII local part, '@', a
    domain of at least two labels (IDNA for an internationalised one); no display name, no <>."""
    return bool(address) and _PLAIN_ADDRESS.fullmatch(address) is not None


def wire_address(address: str) -> str:
    """The address as it travels: an internationalised domain in its ASCII (IDNA) form, which
    every server accepts. A non-ASCII local part stays UTF-8 and needs SMTPUTF8 (RFC 6531)."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


@dataclass
class FlushStats:
    """What a flush of the outbox did. Kept here, beside the settings, so that a flush with
    nothing due needs none of the rendering and delivery stack (digest.sender)."""
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0        # subscribers suppressed by this flush's hard bounces
    sent_by_channel: dict[str, int] = field(default_factory=dict)    # "email", "webhook"... -> sent

    def add(self, kind: str, other: "FlushStats") -> None:
        for name in ("sent", "retried", "failed", "suppressed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.sent:
            self.sent_by_channel[kind] = self.sent_by_channel.get(kind, 0) + other.sent
