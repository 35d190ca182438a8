"""What a crawl yields."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class PostItem:
    url: str                    # canonical URL: the post's identity, and still fetchable
    title: str
    published: datetime | None  # timezone-aware UTC
    body_html: str | None       # the post's own content only; None when only seen in a listing
    summary: str | None         # plain-text excerpt from a listing or feed
    origin: str                 # "page" | "feed" | "listing"
    link: str | None = None     # where the site links to it, when that differs from `url`
