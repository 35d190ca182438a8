"""What reading a feed gives (FeedResult) and the fingerprint of one feed entry: shared by the
RSS/Atom reader (crawler.feeds) and the JSON Feed reader (crawler.jsonfeed)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from crawler.items import PostItem


@dataclass
class FeedResult:
    entries: list[PostItem] = field(default_factory=list)
    title: str | None = None
    warning: str | None = None      # bozo feed that still had entries
    error: str | None = None        # not a feed at all
    has_content: bool = False
    # Per entry URL, what its feed entry says of it (title, summary, content, update time) as a
    # short hash: a known post whose fingerprint changed has its page read in the same check.
    fingerprints: dict[str, str] = field(default_factory=dict)


def entry_fingerprint(*parts: object) -> str:
    """A short hash of a feed entry's title, text and update time; markup and white space aside,
    so that a feed's re-styled HTML alone does not cost page reads."""
    texts = [" ".join(str(part).split()) if part is not None else "" for part in parts]
    return hashlib.sha256("\x1f".join(texts).encode("utf-8", "replace")).hexdigest()[:32]
