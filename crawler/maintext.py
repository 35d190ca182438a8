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

Precision mode also drops some of the article itself: a paragraph between two it keeps, or the
text of a table cell ahead of the cell's first paragraph. The default mode's reading, taken as
well, gives those back (`_restore_prose`): only prose (whole sentences, a dozen words or more) that
sits inside the region precision kept, never what comes before its first block or after its last,
where bylines, teasers and related posts live. On the build set (bench/bench_corpus.py --set build)
it found the reference's first paragraph on 57 pages of 62 instead of 56 (trafilatura's default
mode: 57) with no more boilerplate snippets.
"""
from __future__ import annotations

import difflib
import logging
import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

import lxml.html
from lxml import etree

log = logging.getLogger(__name__)

# The body this module returns, as one version: bump it whenever a change here (settings,
# _block_list, _restore_prose, a trafilatura upgrade that reads pages differently) changes bodies, so that stored
# bodies read by the old version become the new reference silently instead of "updated" mails.
READER = "trafilatura-2"
MAX_INPUT_CHARS = 3_000_000          # the same cap as crawler.extract.selector_for
MIN_TEXT_CHARS = 1                   # a body whose text is shorter reads as empty
_KEEP = {"p", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "pre", "table", "dl", "figure", "hr"}
_DROP_ATTRIBUTES = ("class", "id", "style", "rend", "target")
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f\u2026]['\"\u201d\u2019\u00bb)]?$")
MIN_RESTORED_WORDS = 12              # less than this is a caption, a byline or a button, not prose


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
    precise = _block_list(_extract(html, url, favor_precision=True))
    if not precise:
        return None
    blocks = _restore_prose(precise, _block_list(_extract(html, url, favor_precision=False)))
    text = "".join(block_text for _, block_text, _ in blocks).strip()
    return "".join(block_html for block_html, _, _ in blocks) if len(text) >= MIN_TEXT_CHARS else None


def _extract(html: str, url: str | None, favor_precision: bool) -> str | None:
    trafilatura = _trafilatura()
    if trafilatura is None:
        return None
    try:
        return trafilatura.extract(
            html[:MAX_INPUT_CHARS], url=url, output_format="html", include_comments=False,
            favor_precision=favor_precision, include_tables=True, include_images=False, include_links=False,
            include_formatting=True, deduplicate=False, with_metadata=False)
    except Exception as exc:  # hostile or odd markup: the heuristics read the page instead
        log.debug("trafilatura failed on %s: %s: %s", url, type(exc).__name__, exc)
        return None


def _block_list(extracted: str | None) -> list[tuple[str, str, str]]:
    """trafilatura's `<html><body>...` as its top-level blocks: (html, text with spaces squashed,
    tag), text outside any block wrapped in `<p>`."""
    try:
        root = lxml.html.document_fromstring(extracted) if extracted else None
    except (etree.ParserError, ValueError):
        return []
    body = root.find("body") if root is not None else None
    if body is None:
        return []
    for element in body.iter():
        for attribute in _DROP_ATTRIBUTES:
            element.attrib.pop(attribute, None)
    blocks = []
    if (body.text or "").strip():
        blocks.append(_loose_text(body.text))
    for child in body:
        if not isinstance(child.tag, str):
            continue
        tail, child.tail = child.tail, None
        if child.tag not in _KEEP:
            child.tag = "p" if child.tag in ("div", "span", "b", "i", "em", "strong", "a", "code") else child.tag
        blocks.append((lxml.html.tostring(child, encoding="unicode", method="html"),
                       " ".join(" ".join(child.itertext()).split()), child.tag))
        if (tail or "").strip():
            blocks.append(_loose_text(tail))
    return blocks


def _loose_text(text: str) -> tuple[str, str, str]:
    return f"<p>{_escape(text.strip())}</p>", " ".join(text.split()), "p"


def _restore_prose(precise: list[tuple[str, str, str]], default: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Precision's blocks, with the prose the default reading has inside the region precision kept:
    whole prose paragraphs between two kept blocks, and a kept block whose default reading is the
    same text with prose sentences added (a table cell's leading text)."""
    matcher = difflib.SequenceMatcher(a=[t for _, t, _ in precise], b=[t for _, t, _ in default], autojunk=False)
    opcodes = matcher.get_opcodes()
    restored = []
    for index, (op, i1, i2, j1, j2) in enumerate(opcodes):
        inside = 0 < index < len(opcodes) - 1
        if op == "insert" and inside and all(_is_prose(block) for block in default[j1:j2]):
            restored += default[j1:j2]
        elif op == "replace" and i2 - i1 == j2 - j1 and all(
                _adds_prose(kept[1], fuller[1]) for kept, fuller in zip(precise[i1:i2], default[j1:j2])):
            restored += default[j1:j2]
        else:
            restored += precise[i1:i2]
    return restored


def _is_prose(block: tuple[str, str, str]) -> bool:
    _, text, tag = block
    return tag == "p" and len(text.split()) >= MIN_RESTORED_WORDS and bool(_SENTENCE_END.search(text))


def _adds_prose(kept: str, fuller: str) -> bool:
    """`fuller` is `kept` with only prose added: every word of `kept` in order, each added run
    whole sentences of a dozen words or more."""
    if kept == fuller:
        return True
    kept_words, fuller_words = kept.split(), fuller.split()
    matcher = difflib.SequenceMatcher(a=kept_words, b=fuller_words, autojunk=False)
    if sum(size for _, _, size in matcher.get_matching_blocks()) != len(kept_words):
        return False
    added = [fuller_words[j1:j2] for op, _, _, j1, j2 in matcher.get_opcodes() if op != "equal"]
    return bool(added) and all(len(run) >= MIN_RESTORED_WORDS and _SENTENCE_END.search(" ".join(run))
                               for run in added)


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
