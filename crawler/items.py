"""What a crawl yields."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from state.normalize import site_text


@dataclass
class PostItem:
    url: str                    # canonical URL: the post's identity, and still fetchable
    title: str
    published: datetime | None  # timezone-aware UTC
    body_html: str | None       # the post's own content only; None when only seen in a listing
    summary: str | None         # plain-text excerpt from a listing or feed
    origin: str                 # "page" | "feed" | "listing"
    link: str | None = None     # where the site links to it, when that differs from `url`
    # The reader that produced `body_html` (a constant next to its code, e.g. crawler.maintext.READER):
    # a body read by another reader than the stored one is not compared with it (state.changes).
    reader: str | None = None

    def __post_init__(self) -> None:
        # Every post of every kind of source (page, feed entry, listing card) enters here: what a
        # site sends is made safe once, before any parser, diff, database or mail sees it.
        self.title = site_text(self.title)
        self.body_html = self.body_html and site_text(self.body_html)
        self.summary = self.summary and site_text(self.summary)
