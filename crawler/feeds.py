"""RSS/Atom through feedparser, on bytes that Scrapy downloaded (feedparser's own HTTP client
has no timeout, and bytes that look like a path would be opened as a file); JSON Feed through
crawler.jsonfeed."""
from __future__ import annotations

import io
from urllib.parse import urljoin

import feedparser

from crawler.dates import parse_date
from crawler.extract import clean_title, html_to_summary
from crawler.feedresult import FeedResult, entry_fingerprint
from crawler.items import PostItem
from crawler.jsonfeed import looks_like_json, parse_json_feed
from crawler.urls import canonicalize, is_http_url

# The body of an RSS/Atom entry (its longest content): bump when that reading changes.
READER = "feed-1"
# A feed whose entries carry less text than this is a summary feed: post pages are fetched.
FULL_CONTENT_MIN_CHARS = 200


def parse_feed(body: bytes, url: str, headers: dict[str, str] | None = None, site: str | None = None) -> FeedResult:
    if looks_like_json(body):   # JSON Feed (jsonfeed.org): feedparser does not read it
        return parse_json_feed(body, url, site or url, FULL_CONTENT_MIN_CHARS)
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    response_headers.setdefault("content-location", url)
    try:
        parsed = feedparser.parse(io.BytesIO(body or b""), response_headers=response_headers)
    except Exception as exc:  # feedparser is forgiving, but not of everything
        return FeedResult(error=f"feed {url} could not be parsed: {type(exc).__name__}: {exc}")
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception")
        detail = f": {str(reason).splitlines()[0][:160]}" if reason else ""
        return FeedResult(error=f"{url} is not an RSS/Atom feed{detail}")
    result = FeedResult(title=clean_title(parsed.feed.get("title")) or None)
    if parsed.get("bozo"):
        result.warning = f"feed {url} is malformed ({str(parsed.get('bozo_exception')).splitlines()[0][:160]}); read what could be read"
    site = site or url
    seen: set[str] = set()
    for entry in parsed.entries:
        link = entry.get("link") or next((l.get("href") for l in entry.get("links", []) if l.get("href")), None)
        if not link:
            continue
        post_url = canonicalize(link, base=url, site=site)
        if not is_http_url(post_url) or post_url in seen:
            continue
        seen.add(post_url)
        content = _best_content(entry)
        summary_html = entry.get("summary") or ""
        title = clean_title(entry.get("title")) or post_url
        published = parse_date(entry.get("published_parsed") or entry.get("updated_parsed"))
        full = content if content and len(html_to_summary(content, 10**6) or "") >= FULL_CONTENT_MIN_CHARS else None
        result.fingerprints[post_url] = entry_fingerprint(
            title, html_to_summary(summary_html, 10**6), html_to_summary(content, 10**6),
            entry.get("updated") or entry.get("modified"))
        result.entries.append(PostItem(url=post_url, title=title, published=published, body_html=full,
                                       summary=html_to_summary(summary_html or content), origin="feed",
                                       link=urljoin(url, link), reader=READER if full else None))
    if parsed.get("bozo") and not result.entries and parsed.entries:
        # Malformed, and nothing usable in it: an error, neither "no posts" nor a warning nobody reads.
        return FeedResult(error=f"feed {url} is malformed and no entry could be read "
                                f"({str(parsed.get('bozo_exception')).splitlines()[0][:160]})")
    result.has_content = bool(result.entries) and all(e.body_html for e in result.entries)
    return result


def _best_content(entry) -> str | None:
    contents = [c.get("value") for c in entry.get("content", []) if c.get("value")]
    return max(contents, key=len) if contents else None
