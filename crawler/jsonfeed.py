"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), read with the standard library's json
(feedparser does not read it), into the same post items as RSS and Atom entries (crawler.feeds).

Defensive against hostile input: every field is type-checked (a wrong type reads as missing),
strings and the number of items are capped, and no input can raise out of `parse_json_feed`.
"""
from __future__ import annotations

import json
from urllib.parse import urljoin

from crawler.dates import parse_date
from crawler.extract import clean_title, html_to_summary
from crawler.feedresult import FeedResult, entry_fingerprint
from crawler.items import PostItem
from crawler.urls import canonicalize, is_http_url

# The body of a JSON Feed item (content_html, else content_text as paragraphs): bump when it changes.
READER = "jsonfeed-1"
MAX_ITEMS = 1000                 # more than any feed carries; the rest is ignored
MAX_URL_CHARS = 2048
MAX_DATE_CHARS = 64
MAX_CONTENT_CHARS = 1_000_000    # one item's content_html / content_text
MAX_SUMMARY_CHARS = 20_000
JSON_FEED_VERSIONS = ("https://jsonfeed.org/version/1", "http://jsonfeed.org/version/1")


def looks_like_json(body: bytes) -> bool:
    """The body starts with `{` (after a BOM and white space): a JSON document, not XML."""
    return (body or b"")[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def parse_json_feed(body: bytes, url: str, site: str, full_content_min_chars: int):
    """A crawler.feeds.FeedResult for a JSON Feed document."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return FeedResult(error=f"{url} is not an RSS/Atom/JSON feed: invalid JSON ({type(exc).__name__})")
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(version, str) or not version.startswith(JSON_FEED_VERSIONS):
        return FeedResult(error=f"{url} is not an RSS/Atom/JSON feed: JSON without a jsonfeed.org version")
    items = document.get("items")
    result = FeedResult(title=clean_title(_text(document.get("title"), 2000)) or None)
    if not isinstance(items, list):
        result.warning = f"feed {url} is malformed (JSON Feed without an items list); read what could be read"
        return result
    seen: set[str] = set()
    skipped = 0
    for item in items[:MAX_ITEMS]:
        post = _item(item, url, site, full_content_min_chars) if isinstance(item, dict) else None
        if post is None or post.url in seen:
            skipped += post is None
            continue
        seen.add(post.url)
        result.entries.append(post)
        result.fingerprints[post.url] = _fingerprint(item)
    if skipped and not result.entries:
        return FeedResult(error=f"feed {url} is malformed and no entry could be read ({skipped} items without a usable url)")
    if skipped:
        result.warning = f"feed {url} is malformed ({skipped} items without a usable url); read what could be read"
    result.has_content = bool(result.entries) and all(e.body_html for e in result.entries)
    return result


def _item(item: dict, url: str, site: str, full_content_min_chars: int) -> PostItem | None:
    # `url` is the item's permalink; `id` may be one too (many generators use the URL as id).
    link = _text(item.get("url"), MAX_URL_CHARS + 1) or _text(item.get("id"), MAX_URL_CHARS + 1)
    if not link or len(link) > MAX_URL_CHARS:     # cut short, it would be another address
        return None
    absolute = urljoin(url, link.strip())
    post_url = canonicalize(absolute, base=url, site=site)
    if not is_http_url(post_url):
        return None
    content_html = _text(item.get("content_html"), MAX_CONTENT_CHARS)
    content_text = _text(item.get("content_text"), MAX_CONTENT_CHARS)
    content = content_html or _paragraphs(content_text)
    summary = _text(item.get("summary"), MAX_SUMMARY_CHARS)
    full = content if content and len(html_to_summary(content, 10**6) or "") >= full_content_min_chars else None
    published = (parse_date(_text(item.get("date_published"), MAX_DATE_CHARS))
                 or parse_date(_text(item.get("date_modified"), MAX_DATE_CHARS)))
    return PostItem(url=post_url, title=clean_title(_text(item.get("title"), 2000) or post_url), published=published,
                    body_html=full, summary=html_to_summary(_escape(summary) if summary else content),
                    origin="feed", link=absolute, reader=READER if full else None)


def _fingerprint(item: dict) -> str:
    return entry_fingerprint(_text(item.get("title"), 2000), _text(item.get("summary"), MAX_SUMMARY_CHARS),
                             html_to_summary(_text(item.get("content_html"), MAX_CONTENT_CHARS), 10**6),
                             _text(item.get("content_text"), MAX_CONTENT_CHARS),
                             _text(item.get("date_modified"), MAX_DATE_CHARS))


def _text(value, limit: int) -> str | None:
    """A string field, capped; anything else (numbers, lists, objects, null) reads as missing."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value[:limit]


def _paragraphs(text: str | None) -> str | None:
    if not text:
        return None
    blocks = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return "".join(f"<p>{_escape(block)}</p>" for block in blocks if block) or None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
