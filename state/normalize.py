"""A post's content as text paragraphs, and its hash: what counts as a change.

Markup, attributes, classes and whitespace never count; the words and their order in each
block do. So a site that re-styles its pages produces no "updated" events.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import lxml.html
from lxml import etree

BLOCK_TAGS = ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "figcaption", "pre", "dt", "dd",
              "td", "th", "tr", "div", "section", "article", "figure", "ul", "ol", "table", "hr", "address")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# What no XML/HTML tree (lxml), database or mail may be handed: C0 and C1 controls but tab, LF
# and CR; the non-characters U+FFFE/U+FFFF; lone surrogates (a JSON feed's "\\ud800" decodes to one).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_SPACE_LIKE = frozenset("\x0b\x0c\x1c\x1d\x1e\x1f\x85")     # separators: a space keeps the words apart


def _replacement(match: re.Match) -> str:
    char = match.group()
    if char in _SPACE_LIKE:
        return " "
    return "\ufffd" if "\ud800" <= char <= "\udfff" else ""


def site_text(text: str) -> str:
    """Text from a site as every later step can take it: the controls no parser, database or
    mail accepts dropped (a form feed or vertical tab becomes a space), a lone surrogate
    replaced by U+FFFD. Applied where text enters (crawler.items.PostItem) and again here, by
    paragraphs_of, so nothing a site sends can crash a check."""
    return _UNSAFE.sub(_replacement, text)


@dataclass(frozen=True)
class NormalizedContent:
    paragraphs: tuple[str, ...]
    content_hash: str

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", site_text(text)).translate(_INVISIBLE)
    return _SPACES.sub(" ", text).strip()


def paragraphs_of(body_html: str | None) -> tuple[str, ...]:
    if not body_html or not body_html.strip():
        return ()
    body_html = site_text(body_html)     # lxml refuses control characters ("must be XML compatible")
    try:
        root = lxml.html.fragment_fromstring(body_html, create_parent="div")
    except (etree.ParserError, ValueError):
        return tuple(p for p in (clean_text(x) for x in re.split(r"\n\s*\n", body_html)) if p)
    for junk in root.xpath("//script|//style|//noscript|//template"):
        junk.drop_tree()
    for element in root.iter(*BLOCK_TAGS):
        element.text = "\n\n" + (element.text or "")
        element.tail = "\n\n" + (element.tail or "")
    for br in root.iter("br"):
        br.tail = "\n" + (br.tail or "")
    text = root.text_content()
    return tuple(p for p in (clean_text(" ".join(chunk.split("\n"))) for chunk in re.split(r"\n\s*\n", text)) if p)


def text_hash(paragraphs: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("\n\n".join(paragraphs).encode("utf-8")).hexdigest()


def normalize(body_html: str | None) -> NormalizedContent:
    paragraphs = paragraphs_of(body_html)
    return NormalizedContent(paragraphs, text_hash(paragraphs))


def split_text(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split("\n\n") if p)
