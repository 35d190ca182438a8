"""A generic post page's body and date through the field's extractors: trafilatura (main text
without boilerplate) and htmldate (publication date from markup, meta, URL and text).

Used by the generic kinds only (`html`, `auto`, `feed` post pages; crawler.kinds): `webflow` and
`selectors` stay exact. Both libraries are imported on first use, inside the crawl, never when
the CLI starts. Neither may end a crawl: any failure reads as "nothing found", and the caller
falls back to the hand-made heuristics of crawler.extract.

Settings measured on bench/corpus (bench/bench_extraction.py): `favor_precision=True` keeps
related-post lists, share bars and footers out of bodies (boilerplate in a body is a false edit
waiting for the next re-style); `deduplicate` stays off, because its cache lives across calls and
a second read of the same page would lose the paragraphs the first one saw.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

import lxml.html
from lxml import etree

log = logging.getLogger(__name__)

# The body this module returns, as one version: bump it whenever a change here (settings,
# _blocks, a trafilatura upgrade that reads pages differently) changes bodies, so that stored
# bodies read by the old version become the new reference silently instead of "updated" mails.
READER = "trafilatura-1"
MAX_INPUT_CHARS = 3_000_000          # the same cap as crawler.extract.selector_for
MIN_TEXT_CHARS = 1                   # a body whose text is shorter reads as empty
_KEEP = {"p", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "pre", "table", "dl", "figure", "hr"}
_DROP_ATTRIBUTES = ("class", "id", "style", "rend", "target")


def _trafilatura():
    try:
        import trafilatura
    except Exception as exc:  # missing, or a broken dependency (lxml_html_clean): heuristics only
        log.warning("trafilatura unavailable (%s: %s): post bodies use the built-in heuristics", type(exc).__name__, exc)
        return None
    return trafilatura


def _htmldate():
    try:
        import htmldate
    except Exception as exc:
        log.warning("htmldate unavailable (%s: %s): undated pages stay undated", type(exc).__name__, exc)
        return None
    return htmldate


def main_text_html(html: str, url: str | None = None) -> str | None:
    """The page's main text as HTML block elements (paragraphs, headings, lists, quotes, tables),
    without navigation, footer, comments or related posts; None when trafilatura finds none."""
    if not html:
        return None
    trafilatura = _trafilatura()
    if trafilatura is None:
        return None
    try:
        extracted = trafilatura.extract(
            html[:MAX_INPUT_CHARS], url=url, output_format="html", include_comments=False,
            favor_precision=True, include_tables=True, include_images=False, include_links=False,
            include_formatting=True, deduplicate=False, with_metadata=False)
    except Exception as exc:  # hostile or odd markup: the heuristics read the page instead
        log.debug("trafilatura failed on %s: %s: %s", url, type(exc).__name__, exc)
        return None
    return _blocks(extracted) if extracted else None


def _blocks(extracted: str) -> str | None:
    """trafilatura's `<html><body>...` as a sequence of block elements, text outside any block
    wrapped in `<p>` (state.normalize splits a body into paragraphs at block elements)."""
    try:
        root = lxml.html.document_fromstring(extracted)
    except (etree.ParserError, ValueError):
        return None
    body = root.find("body")
    if body is None:
        return None
    for element in body.iter():
        for attribute in _DROP_ATTRIBUTES:
            element.attrib.pop(attribute, None)
    parts = []
    if (body.text or "").strip():
        parts.append(f"<p>{_escape(body.text.strip())}</p>")
    for child in body:
        if not isinstance(child.tag, str):
            continue
        tail, child.tail = child.tail, None
        if child.tag not in _KEEP:
            child.tag = "p" if child.tag in ("div", "span", "b", "i", "em", "strong", "a", "code") else child.tag
        parts.append(lxml.html.tostring(child, encoding="unicode", method="html"))
        if (tail or "").strip():
            parts.append(f"<p>{_escape(tail.strip())}</p>")
    html = "".join(parts)
    text = "".join(body.itertext()).strip()
    return html if len(text) >= MIN_TEXT_CHARS else None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def page_date(html: str, url: str | None = None) -> datetime | None:
    """The page's original publication date by htmldate (markup, meta, URL, then text), as
    aware UTC midnight of that day; None when it finds none."""
    if not html:
        return None
    htmldate = _htmldate()
    if htmldate is None:
        return None
    from crawler.dates import parse_date
    # extensive_search hands leftover text to dateparser across all its ~800 locales: its first
    # call in a process compiled regexes for 6.8 s (one 1 KB page) and it dated no more of the
    # corpus (62/62 either way, bench/bench_corpus.py); text dates are crawler.dates' fallback.
    try:
        found = htmldate.find_date(html[:MAX_INPUT_CHARS], url=url, original_date=True, extensive_search=False,
                                   outputformat="%Y-%m-%d")
    except Exception as exc:
        log.debug("htmldate failed on %s: %s: %s", url, type(exc).__name__, exc)
        return None
    return parse_date(found) if found else None


# /2019/05/21/slug, /2019-05-21-slug: a date in a permalink's path, as blog engines write it.
_PATH_DATE = re.compile(r"/((?:19|20)\d\d)[/-](0[1-9]|1[0-2])[/-](0[1-9]|[12]\d|3[01])(?=[/-]|$)")


def url_date(url: str) -> datetime | None:
    """The day a permalink's path names (WordPress, Jekyll, Hugo and Hexo defaults), aware UTC
    midnight; None without one. For listing entries that show no date of their own."""
    match = _PATH_DATE.search(urlsplit(url).path) if url else None
    if not match:
        return None
    from crawler.dates import parse_date
    try:
        return parse_date(datetime(*map(int, match.groups()), tzinfo=timezone.utc))
    except ValueError:      # 2023/02/31
        return None
