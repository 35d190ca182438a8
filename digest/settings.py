"""What the digest needs to know about the sender, the list and the mail server."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DigestSettings:
    from_addr: str = "postwatch <postwatch@localhost>"
    reply_to: str | None = None
    list_id: str = "postwatch.localhost"
    site_name: str = "postwatch"
    unsubscribe_base_url: str = "http://127.0.0.1:8780/unsubscribe"
    unsubscribe_mailto: str = "unsubscribe@localhost"
    secret: bytes = b""
    templates_dir: Path | None = None
    timezone: str = "UTC"
    source_titles: dict[str, str] = field(default_factory=dict)

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
