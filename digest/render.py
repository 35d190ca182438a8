"""Rendering a digest: Jinja2 templates (overridable), nh3-sanitised source HTML, a size budget,
CSS inlined where it must be and kept in a <style> block where a client can use it."""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import css_inline
import lxml.html
import nh3
from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from digest.errors import TemplateProblem
from digest.i18n import date_text, language, ntr, tr, translations
from digest.settings import DigestSettings
from state import Subscriber

KIND_ORDER = ("new", "updated", "restored", "removed")
# What a subscriber's mail client may see of a watched site's HTML: text structure and links.
ALLOWED_TAGS = {"p", "a", "em", "strong", "b", "i", "br", "ul", "ol", "li", "blockquote", "h3", "h4"}
ALLOWED_ATTRIBUTES = {"a": {"href"}}
# A feed entry also marks an edit's changed words.
FEED_TAGS = ALLOWED_TAGS | {"ins", "del"}
BLOCK_TAGS = ("p", "ul", "ol", "blockquote", "h3", "h4")
# Each text block sets its own direction from its first strong character: a right-to-left
# paragraph reads right to left, a left-to-right one next to it does not.
_DIRECTION = {tag: {"dir": "auto"} for tag in ("p", "li", "blockquote", "h3", "h4")}

# Gmail clips an HTML part over about 102 KB, and what it clips is the end: the footer with the
# unsubscribe link. Every digest's HTML part stays under HTML_BUDGET, whatever the sources send.
HTML_BUDGET = 90 * 1024
# The rendering holds short stand-ins for each recipient's address and links (digest.compose).
SLOT_RESERVE = 2 * 1024
MAX_POSTS = 60               # posts shown in one digest; the rest are counted and linked
LEAD_CHARS = 600             # text of a new post's first paragraphs ([digest] lead = "full")
SHORT_LEAD_CHARS = 250       # two or three lines at desktop width ([digest] lead = "short", the default)
TITLE_CHARS = 200
WORD_CHARS = 80              # longer "words" (a 10,000-character string) are cut
DIFF_CHARS = 1500            # text of an edit's changed paragraphs
DIFF_ENTRIES = 8
PREHEADER_CHARS = 140        # about what Gmail and Apple Mail show of it on a phone
TOP_LINKS_AFTER = 5          # a digest with more posts also has its unsubscribe link at the top
SUMMARY_AFTER = 5            # a digest with more items starts with a summary: counts per source, linked
TEXT_WIDTH = 78
# The web archive shows an edit's whole diff (within reason: a rewritten page is not a diff).
ARCHIVE_DIFF_CHARS = 20_000
ARCHIVE_DIFF_ENTRIES = 200

# Embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069): "Refund\u202efdp.exe"
# would display as "Refundexe.pdf".
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_OTHER_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Where a sentence ends: .!? (and their full-width forms) followed by a space, or 。 (CJK).
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u2019\u201d)]*\s+|(?<=\u3002)")
_URL_LIKE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^\s/@]+@)?((?:[a-z0-9-]+\.)+[a-z]{2,}|\[[0-9a-f:.]+\])"
                       r"(?::\d+)?(?:[/?#]\S*)?$", re.IGNORECASE)
_KEPT_STYLE = re.compile(r'<style data-css-inline="ignore">.*?</style>', re.DOTALL)
_INLINER = css_inline.CSSInliner(keep_style_tags=False)


@dataclass
class RenderedDigest:
    subject: str
    html: str
    text: str
    shown: int = 0           # posts shown in full; the others are counted with a link to their site
    total: int = 0


@dataclass
class Block:
    """One paragraph (or list, quote, heading) of a post: sanitised HTML and its plain text."""
    html: Markup
    text: str


def wrap(text: str, indent: str = "", width: int = TEXT_WIDTH) -> str:
    """Plain text wrapped at `width`; URLs and long words are never broken."""
    return textwrap.fill(" ".join(str(text).split()), width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


@lru_cache(maxsize=16)
def environment(templates_dir: str | None, lang: str = "en") -> SandboxedEnvironment:
    # Sandboxed: an operator's template (templates_dir) may show and format the digest's data,
    # but cannot reach Python internals (__globals__, __subclasses__, os) to run code.
    loaders = [PackageLoader("digest", "templates")]
    if templates_dir:
        loaders.insert(0, FileSystemLoader(templates_dir))
    env = SandboxedEnvironment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html", "j2.html", "html.j2"]),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(lang), newstyle=True)
    env.globals["lang"] = language(lang)
    env.filters["wrap"] = wrap
    return env


def sanitize(html: str | None, tags: set[str] = ALLOWED_TAGS) -> str:
    """Source HTML as it may appear in an email: no script, style, iframe, form, event handler,
    javascript:/data: URL or CSS; links open as plain https/http/mailto."""
    if not html:
        return ""
    return nh3.clean(html, tags=tags, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer", strip_comments=True, set_tag_attribute_values=_DIRECTION)


def clean_text(value: str | None, limit: int | None = None) -> str:
    """Text from a watched site as it may be shown: no bidi or other control characters, one line,
    no word longer than WORD_CHARS, at most `limit` characters (cut at a word, with "…")."""
    text = _OTHER_CONTROLS.sub("", _BIDI_CONTROLS.sub("", value or ""))
    words = [word if len(word) <= WORD_CHARS else word[:WORD_CHARS] + "…" for word in text.split()]
    text = " ".join(words)
    if limit is not None and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.") + "…"
    return text


def _host(value: str) -> str:
    if value.lower().startswith("mailto:"):
        value = "//" + value[7:].split("?", 1)[0]
    host = urlsplit(value if "://" in value or value.startswith("//") else f"//{value}").hostname or ""
    return host.lower().rstrip(".").removeprefix("www.")


def _disguised(link) -> bool:
    """A link whose text looks like an address on another host than the one it opens
    (text "https://www.paypal.com/signin", target elsewhere)."""
    text = "".join(link.itertext()).strip()
    match = _URL_LIKE.match(text)
    return bool(match) and _host(text) != _host(link.get("href") or "")


def _unlink(link) -> None:
    """Replace a link by its text: the words stay, the deceptive target goes."""
    text = "".join(link.itertext()) + (link.tail or "")
    parent, previous = link.getparent(), link.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.remove(link)


def cut_at_sentence(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters; else its sentences that fit, when they make at
    least half of `limit`; else `text` cut at a word, with "…"."""
    if len(text) <= limit:
        return text
    ends = [match.start() for match in _SENTENCE_END.finditer(text, 0, limit + 1) if match.start() <= limit]
    if ends and ends[-1] >= limit // 2:
        return text[:ends[-1]].rstrip()
    return clean_text(text, limit)


def lead_of(body_html: str | None, limit: int = LEAD_CHARS) -> list[Block]:
    """The first paragraphs of a post, sanitised, at most `limit` characters of text. A paragraph
    too long to fit (or holding an overlong word) is shown as its text, cut at a sentence when
    that leaves at least half the room, else at a word."""
    clean = sanitize(body_html)
    if not clean:
        return []
    root = lxml.html.fragment_fromstring(clean, create_parent="div")
    blocks: list[Block] = []
    size = 0
    for node in root:
        if not isinstance(node.tag, str) or node.tag not in BLOCK_TAGS:
            continue
        for element in node.iter():
            element.text = element.text and _BIDI_CONTROLS.sub("", element.text)
            element.tail = element.tail and _BIDI_CONTROLS.sub("", element.tail)
        for link in list(node.iter("a")):
            if _disguised(link):
                _unlink(link)
        raw_text = " ".join(node.text_content().split())
        if not raw_text:
            continue
        room = limit - size
        text = clean_text(raw_text)
        if len(text) <= room and text == raw_text:
            node.tail = None
            html = nh3.clean(lxml.html.tostring(node, encoding="unicode"), tags=ALLOWED_TAGS,
                             attributes=ALLOWED_ATTRIBUTES, link_rel="noopener noreferrer",
                             set_tag_attribute_values=_DIRECTION)
            blocks.append(Block(Markup(html), text))
        else:
            if blocks and room < 80:
                break
            text = cut_at_sentence(text, max(room, 80))
            blocks.append(Block(Markup(f'<p dir="auto">{escape(text)}</p>'), text))
            break                                          # a paragraph cut short ends the lead
        size += len(text)
        if size >= limit:
            break
    return blocks


def excerpt_of(event, limit: int = 300) -> str:
    text = event.summary or ""
    if not text and event.body_html:
        text = lxml.html.fragment_fromstring(sanitize(event.body_html), create_parent="div").text_content()
    return clean_text(text, limit)


CONTEXT_START = 10          # words of a changed paragraph's start kept before its first change
MOVED_CHARS = 120           # a moved paragraph is named by its start
CONTEXT_WORDS = 6           # words kept on each side of a change inside unchanged text


def _context(words: list) -> list:
    """A changed paragraph's word ops with long unchanged runs shortened to their context: the
    paragraph's start, a few words either side of each change, "…" for what is left out."""
    shaped = []
    for index, (op, piece) in enumerate(words):
        if op != "equal":
            shaped.append((op, piece))
            continue
        first, last = index == 0, index == len(words) - 1
        tokens = piece.split(" ")
        head = CONTEXT_START if first else CONTEXT_WORDS
        tail = 0 if last else CONTEXT_WORDS
        if len(tokens) <= head + tail + 3:
            shaped.append((op, piece))
        elif last:
            shaped.append((op, " ".join(tokens[:head]) + " …"))
        else:
            shaped.append((op, " ".join(tokens[:head]) + " … " + " ".join(tokens[-tail:])))
    return shaped


def diff_for_digest(diff: dict | None, chars: int = DIFF_CHARS, most: int = DIFF_ENTRIES) -> dict | None:
    """An edit's diff as the digest shows it: at most `most` paragraphs and `chars` characters of
    text, each cleaned like any text from the site; `truncated` when anything of it is left out
    (the page, and the web archive, have the rest)."""
    if not diff:
        return None
    entries, size, cut = [], 0, False
    for entry in diff.get("paragraphs") or []:
        room = chars - size
        if len(entries) >= most or room < 40:
            cut = True
            break
        if entry.get("op") == "changed":
            words, used = [], 0
            for op, piece in _context(entry.get("words") or []):
                piece = " ".join(w if len(w) <= WORD_CHARS else w[:WORD_CHARS] + "…"
                                 for w in _OTHER_CONTROLS.sub("", _BIDI_CONTROLS.sub("", piece)).split(" "))
                if used + len(piece) > room:
                    words.append((op, piece[:room - used] + "…"))
                    cut = True
                    break
                words.append((op, piece))
                used += len(piece)
            marked = "".join(f"[+{w}+]" if op == "insert" else f"[-{w}-]" if op == "delete" else w for op, w in words)
            entries.append({"op": "changed", "words": words, "text": marked})
            size += used
        elif entry.get("op") == "moved":                 # unchanged words: their start says which
            text = clean_text(entry.get("text"), min(room, MOVED_CHARS))
            entries.append({"op": "moved", "text": text})
            size += len(text)
        else:
            whole = clean_text(entry.get("text"))
            text = clean_text(whole, room)
            cut = text != whole
            entries.append({"op": entry.get("op"), "text": text})
            size += len(text)
        if cut:
            break
    title = diff.get("title")
    if title:
        title = {"old": clean_text(title.get("old"), TITLE_CHARS), "new": clean_text(title.get("new"), TITLE_CHARS)}
    return {"title": title, "paragraphs": entries, "truncated": cut or bool(diff.get("truncated"))}


def _date(value: datetime | None, zone: ZoneInfo, lang: str = "en") -> str:
    if value is None:
        return ""
    return date_text(value.astimezone(zone), lang)


# "5 updated": each kind's count as the subject, the summary and the badges say it.
def _count(kind: str, n: int, lang: str) -> str:
    if kind == "new":
        return ntr(lang, "%(num)d new", "%(num)d new", n)
    if kind == "updated":
        return ntr(lang, "%(num)d updated", "%(num)d updated", n)
    if kind == "removed":
        return ntr(lang, "%(num)d removed", "%(num)d removed", n)
    return ntr(lang, "%(num)d restored", "%(num)d restored", n)


def kind_label(kind: str, lang: str = "en") -> str:
    """The badge of a post: new, updated, removed, restored."""
    return {"new": tr(lang, "new"), "updated": tr(lang, "updated"), "removed": tr(lang, "removed"),
            "restored": tr(lang, "restored")}.get(kind, kind)


def _counts_line(events, kinds, lang: str) -> str:
    counts = {kind: sum(1 for e in events if e.kind == kind) for kind in kinds}
    return tr(lang, ", ").join(_count(kind, n, lang) for kind, n in counts.items() if n)


def subject_for(events, settings: DigestSettings, lang: str = "en") -> str:
    names = []
    for event in events:
        title = clean_text(settings.source_titles.get(event.source, event.source))
        if title not in names:
            names.append(title)
    shown = ", ".join(names[:3]) + (ntr(lang, " and %(num)d more", " and %(num)d more", len(names) - 3)
                                    if len(names) > 3 else "")
    subject = f"{_counts_line(events, KIND_ORDER, lang)} — {shown}"
    return " ".join(subject.split())[:180]


def _cadence_text(subscriber: Subscriber, lang: str = "en") -> str:
    if subscriber.cadence == "immediate":
        return tr(lang, "after each check")
    return tr(lang, "weekly") if subscriber.cadence == "weekly" else tr(lang, "daily")


def _site_of(source: str, events, settings: DigestSettings) -> str:
    if settings.source_urls.get(source):
        return settings.source_urls[source]
    parts = urlsplit(events[0].url)
    return f"{parts.scheme}://{parts.netloc}/"


def _when(event, zone: ZoneInfo, lang: str = "en") -> str:
    """A new post's publication date; for a change, the day it was seen (the post's own date says
    nothing about when it was edited or removed)."""
    if event.kind == "updated":
        return tr(lang, "updated %(date)s", date=_date(event.created_at, zone, lang))
    if event.kind == "removed":
        return tr(lang, "removed %(date)s", date=_date(event.created_at, zone, lang))
    return _date(event.published, zone, lang)


def _read_more(blocks: list[Block], url: str, label: str, title: str = "", link_lang: str = "") -> Markup:
    """The lead's HTML with a "Read more" link at the end of its last paragraph (on a line of its
    own after a list or a quote). Its accessible name says which post it opens ("Read more:
    <title>"; a screen reader's list of links would otherwise be twenty "Read more"): an
    aria-label, not a visually hidden span, as mail clients drop the CSS class that would hide it."""
    html = "".join(block.html for block in blocks)
    named = f' aria-label="{escape(label)}: {escape(title)}"' if title else ""
    # In a post written in another language than the reader's (its lead carries that `lang`),
    # the link's own words are in the reader's.
    own = f' lang="{escape(link_lang)}"' if link_lang else ""
    link = f'<a class="read-more" href="{escape(url)}"{named}{own}>{escape(label)}</a>'
    if html.endswith("</p>"):
        return Markup(f"{html[:-4]} {link}</p>")
    return Markup(f'{html}<p dir="auto">{link}</p>')


def _post(event, zone: ZoneInfo, short: bool = True, lang: str = "en", whole_diff: bool = False,
          kept_url: str = "", text_lang: str = "") -> dict:
    """One post as the digest and the archive show it. `kept_url`: where a removed post's last
    kept version is shown (the archive); its title links there. `text_lang`: the language the
    post is written in, when known ([[sources]] lang); its title and lead carry it where it
    differs from the reader's."""
    text_lang = text_lang if text_lang and text_lang != lang else ""
    lead = lead_of(event.body_html, SHORT_LEAD_CHARS if short else LEAD_CHARS) if event.kind in ("new", "restored") else []
    excerpt = excerpt_of(event, SHORT_LEAD_CHARS if short else 300)
    title = clean_text(event.title, TITLE_CHARS) or event.url
    if short and lead:
        lead_html = _read_more(lead, event.url, tr(lang, "Read more"), title, lang if text_lang else "")
    elif short and excerpt and event.kind != "removed":
        lead_html = _read_more([Block(Markup(f'<p dir="auto">{escape(excerpt)}</p>'), excerpt)], event.url,
                               tr(lang, "Read more"), title, lang if text_lang else "")
    else:
        lead_html = Markup("".join(block.html for block in lead))
    return {
        "kind": event.kind, "title": title, "url": event.url,
        "kept_url": kept_url if event.kind == "removed" else "", "kept": None,
        "date": _when(event, zone, lang), "excerpt": excerpt, "label": kind_label(event.kind, lang),
        "lead": lead, "lead_html": lead_html,
        "diff": (diff_for_digest(event.diff, *((ARCHIVE_DIFF_CHARS, ARCHIVE_DIFF_ENTRIES) if whole_diff else ()))
                 if event.kind == "updated" else None),
        "anchor": f"e{event.seq}" if event.seq is not None else f"i{event.id}",
        "text_lang": text_lang,
    }


def _order(event) -> tuple:
    """A source's changes to known posts first (newest seen first), then its new posts (newest
    published first): when the size budget bites, the cut falls on the oldest new posts, which
    the blog itself lists, never on an edit or a removal, which only the digest shows."""
    if event.kind == "new":
        return (1, -(event.published or event.created_at).timestamp())
    return (0, -event.created_at.timestamp())


def _take(by_source: dict[str, list], limit: int) -> dict[str, int]:
    """How many posts of each source to show in full: in turns, one per source, up to `limit` in
    all; every source's changes before any source's new posts (the lists are in _order)."""
    taken = {source: 0 for source in by_source}
    left = limit
    changes = {source: sum(e.kind != "new" for e in items) for source, items in by_source.items()}
    for caps in (changes, {source: len(items) for source, items in by_source.items()}):
        while left > 0 and any(taken[s] < caps[s] for s in by_source):
            for source in by_source:
                if left and taken[source] < caps[source]:
                    taken[source] += 1
                    left -= 1
    return taken


def _listed(event, lang: str = "en", kept_url: str = "") -> dict:
    """A change past the size budget: one line (kind, title, link) instead of the full entry."""
    return {"kind": event.kind, "label": kind_label(event.kind, lang), "title": clean_text(event.title, TITLE_CHARS) or event.url,
            "url": event.url, "kept_url": kept_url if event.kind == "removed" else ""}


def _brief(event, zone: ZoneInfo, lang: str = "en", kept_url: str = "") -> dict:
    """A post shown past `full_posts`: its title, link and date on one line."""
    return {**_listed(event, lang, kept_url), "date": _when(event, zone, lang)}


def kept_url(event, settings: DigestSettings) -> str:
    """Where the archive shows a removed post's last kept version: the web page of that one
    change (/archive/d/<seq>), when the pages have a public address; else ""."""
    if event.kind != "removed" or event.seq is None or not (settings.archive_url and settings.archive_public):
        return ""
    return f"{settings.archive_url}d/{event.seq}#e{event.seq}"


def kept_version(version: tuple | None, zone: ZoneInfo, lang: str = "en", limit: int = ARCHIVE_DIFF_CHARS) -> dict | None:
    """A removed post's last kept version (title, text, fetched_at; state.kept_versions) as the
    archive shows it: its paragraphs, cut near `limit` characters, and the day it was read."""
    if not version:
        return None
    _, text, fetched = version
    paragraphs, left = [], limit
    for paragraph in (clean_text(p) for p in text.split("\n\n")):
        if not paragraph:
            continue
        if len(paragraph) > left:
            paragraphs.append(cut_at_sentence(paragraph, max(left, 80)))
            break
        paragraphs.append(paragraph)
        left -= len(paragraph)
    return {"date": _date(fetched, zone, lang), "paragraphs": paragraphs} if paragraphs else None


def _counts(items, lang: str = "en") -> str:
    """"5 updated, 1 removed, 165 new": a source's events by kind, changes first as listed."""
    return _counts_line(items, ("updated", "removed", "restored", "new"), lang)


def preheader_of(groups: list[dict], limit: int = PREHEADER_CHARS) -> str:
    """What an inbox shows after the subject: the first titles, changes first (the subject
    already gives the counts). Without it, clients show the page's first words: the site name,
    "Unsubscribe" and the counts again."""
    titles = [post["title"] for group in groups for post in [*group["posts"], *group["brief"], *group["listed"]]]
    text = ""
    for title in titles:
        candidate = f"{text} · {title}" if text else title
        if len(candidate) > limit:
            return text or title[: limit - 1] + "…"
        text = candidate
    return text


def render_digest(subscriber: Subscriber, events, settings: DigestSettings, now: datetime, unsubscribe_url: str,
                  preferences_url: str = "") -> RenderedDigest:
    """The digest's subject, HTML and text. Shows at most `settings.max_posts` posts in full, fewer
    if the HTML part would pass HTML_BUDGET: changes to known posts first. A change that does not
    fit is still listed in one line; only new posts are left out, counted per source with a link
    to it."""
    zone = ZoneInfo(subscriber.timezone or settings.timezone)
    lang = language(getattr(subscriber, "lang", None))
    by_source: dict[str, list] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event)
    for items in by_source.values():
        items.sort(key=_order)
    posts: dict[int, dict] = {}
    subject = clean_text(subject_for(events, settings, lang))
    limit = min(len(events), max(0, settings.max_posts))
    view_url = f"{settings.archive_url}d/{digest_id(events)}" if settings.archive_url and events else ""
    while True:
        groups = _source_groups(by_source, limit, settings, zone, lang, posts)
        context = {
            "subject": subject, "headline": _capitalized(subject.split(" — ")[0]) if events else subject,
            "preheader": preheader_of(groups),
            "groups": groups, "site_name": clean_text(settings.site_name), "generated": _date(now, zone, lang),
            "email": subscriber.email, "unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url,
            "cadence_text": _cadence_text(subscriber, lang),
            # Someone the operator added (CLI, import) did not subscribe themselves: don't say they did.
            "added_by_operator": subscriber.joined_via in ("cli", "import"),
            "organization": clean_text(settings.organization), "postal_address": clean_text(settings.postal_address),
            "top_links": limit > TOP_LINKS_AFTER, "shown": limit, "total": len(events),
            "summary": len(events) > SUMMARY_AFTER,
            # The same items on the web, at an address with nothing of the reader's in it.
            "view_url": view_url, "diff_url": view_url if settings.archive_public else "",
        }
        html = _inline(_render(settings, "digest.html.j2", context, lang))
        size = len(html.encode("utf-8"))
        if size <= HTML_BUDGET - SLOT_RESERVE or limit == 0:
            break
        limit = max(0, min(limit - 1, limit * (HTML_BUDGET - SLOT_RESERVE) // size))
    text = _render(settings, "digest.txt.j2", context, lang)
    return RenderedDigest(subject=subject, html=html, text=text, shown=limit, total=len(events))


def _source_groups(by_source: dict[str, list], limit: int, settings: DigestSettings, zone: ZoneInfo, lang: str,
                   posts: dict[int, dict]) -> list[dict]:
    """Each source's part of a digest showing `limit` posts. `posts`: the posts already rendered
    in full (by event id), kept across the attempts to fit the budget."""
    taken = _take(by_source, limit)
    # The first `full_posts` in full (changes first, as _take shares them out); the others
    # shown are one line each, so a long digest stays short on a phone.
    full = _take(by_source, min(limit, max(0, settings.full_posts)))
    groups = []
    for number, (source, items) in enumerate(by_source.items(), 1):
        shown, brief, rest = items[:full[source]], items[full[source]:taken[source]], items[taken[source]:]
        for event in shown:
            if event.id not in posts:
                posts[event.id] = _post(event, zone, settings.lead != "full", lang, kept_url=kept_url(event, settings),
                                        text_lang=settings.source_langs.get(event.source, ""))
        groups.append({
            "title": clean_text(settings.source_titles.get(source, source)),
            "posts": [posts[e.id] for e in shown],
            "brief": [_brief(e, zone, lang, kept_url(e, settings)) for e in brief],
            "listed": [_listed(e, lang, kept_url(e, settings)) for e in rest if e.kind != "new"],
            "more": sum(e.kind == "new" for e in rest), "site_url": _site_of(source, items, settings),
            # The new posts left out are on the source's archive page when the pages have a
            # public address; else on the blog itself (its index lists them).
            "more_url": (f"{settings.archive_url}{quote(source, safe='')}/" if settings.archive_url and settings.archive_public
                         else _site_of(source, items, settings)),
            "anchor": f"s{number}", "counts": _counts(items, lang),
        })
    return groups


def digest_id(events) -> str:
    """A digest's id on the web archive: the event seqs it tells of, as runs ("120-185",
    "120-125_130_140-185" for a reader who follows some sources or filters by keyword). The same
    events give the same id for every reader, and it names nothing of the reader: no token, no
    address. It is guessable on purpose: the archive shows changes to public blogs, which every
    source's archive page lists anyway."""
    seqs = sorted({e.seq for e in events if e.seq is not None})
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return "_".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


MAX_DIGEST_EVENTS = 5000
_DIGEST_ID = re.compile(r"\d{1,12}(?:-\d{1,12})?(?:_\d{1,12}(?:-\d{1,12})?)*")


def parse_digest_id(value: str) -> list[int] | None:
    """The seqs a digest id names, ascending; None for anything that is not an id digest_id()
    gives (out of order, overlapping, over MAX_DIGEST_EVENTS events)."""
    if len(value) > 8 * 1024 or not _DIGEST_ID.fullmatch(value):
        return None
    seqs: list[int] = []
    for run in value.split("_"):
        first, _, last = run.partition("-")
        a, b = int(first), int(last or first)
        if b < a or (seqs and a <= seqs[-1]) or len(seqs) + b - a + 1 > MAX_DIGEST_EVENTS:
            return None
        seqs.extend(range(a, b + 1))
    return seqs


def archive_groups(events, settings: DigestSettings, lang: str = "en", kept: dict | None = None) -> list[dict]:
    """The web archive's rendering of `events`: grouped by source in the order they first come,
    each source's changes first as in the digest, every item in full (the whole lead, the whole
    diff, a removed post's last kept version from `kept`, by seq), each post shaped by the
    digest's own `_post`."""
    zone = ZoneInfo(settings.timezone)
    by_source: dict[str, list] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event)
    groups = []
    for number, (source, items) in enumerate(by_source.items(), 1):
        items.sort(key=_order)
        groups.append({"source": source, "title": clean_text(settings.source_titles.get(source, source)),
                       "posts": [_archived(e, zone, lang, kept, settings.source_langs.get(source, "")) for e in items],
                       "anchor": f"s{number}", "counts": _counts(items, lang), "site_url": _site_of(source, items, settings)})
    return groups


def _archived(event, zone: ZoneInfo, lang: str, kept: dict | None, text_lang: str = "") -> dict:
    post = _post(event, zone, False, lang, whole_diff=True, text_lang=text_lang)
    if event.kind == "removed" and kept:
        post["kept"] = kept_version(kept.get(event.seq), zone, lang)
    return post


def archive_days(events, settings: DigestSettings, lang: str = "en", kept: dict | None = None) -> list[dict]:
    """A source's changes by the day they were seen (newest first, as `events` come), each item
    shaped by the digest's `_post`, in full (a removed post with its last kept version, from `kept`)."""
    zone = ZoneInfo(settings.timezone)
    days: list[dict] = []
    for event in events:
        day = _date(event.created_at, zone, lang)
        if not days or days[-1]["date"] != day:
            days.append({"date": day, "posts": []})
        days[-1]["posts"].append(_archived(event, zone, lang, kept, settings.source_langs.get(event.source, "")))
    return days


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _inline(page: str) -> str:
    """Inline the template's <style> (clients that drop <style> blocks still get the layout), and
    keep each <style data-css-inline="ignore"> block as it is: per-post classes and the dark-mode
    rules, for the clients that honour them, without repeating them on every post."""
    kept = _KEPT_STYLE.findall(page)
    html = _INLINER.inline(_KEPT_STYLE.sub("", page))
    if kept:
        html = html.replace("</head>", "".join(kept) + "</head>", 1)
    return html


def render_change(event, settings) -> str:
    """One event as the HTML of a feed entry, sanitised like the digest's: an edit's diff, the
    lead of a new or restored post, else its excerpt. `settings` needs only `templates_dir`."""
    lead = Markup("".join(block.html for block in lead_of(event.body_html))) if event.kind in ("new", "restored") else ""
    diff = event.diff if event.kind == "updated" else None
    html = _render(settings, "feed_entry.html.j2", {
        "kind": event.kind, "diff": diff, "lead_html": lead,
        "excerpt": "" if diff or lead else excerpt_of(event),
    })
    return sanitize(html, FEED_TAGS)


def render_site_page(name: str, settings: DigestSettings, lang: str = "en", **context) -> str:
    """A page of the daemon's web surface (subscribe.html.j2, confirm.html.j2, preferences.html.j2,
    message.html.j2), from the same sandboxed, operator-overridable templates as the digest."""
    return _render(settings, name, {"site_name": clean_text(settings.site_name), "organization": clean_text(settings.organization),
                                    "postal_address": clean_text(settings.postal_address),
                                    "home_url": f"{getattr(settings, 'pages_root', '')}/", **context}, lang)


def render_text(name: str, settings: DigestSettings, context: dict, lang: str = "en") -> str:
    return _render(settings, name, context, lang)


def render_page(title: str, message: str, form_token: str | None, settings: DigestSettings, lang: str = "en") -> str:
    """The unsubscribe page (and the try-later page), in the look of every other page. `settings`
    may be a stand-in with only `templates_dir` (the database, and so the full settings, is away)."""
    return _render(settings, "unsubscribe.html.j2", {
        "title": title, "message": message, "form_token": form_token,
        "site_name": clean_text(getattr(settings, "site_name", "") or "postwatch"),
        "organization": clean_text(getattr(settings, "organization", "")),
        "postal_address": clean_text(getattr(settings, "postal_address", "")),
        "home_url": f"{getattr(settings, 'pages_root', '')}/"}, lang)


def _render(settings: DigestSettings, name: str, context: dict, lang: str = "en") -> str:
    env = environment(str(settings.templates_dir) if settings.templates_dir else None, language(lang))
    template = None
    try:
        template = env.get_template(name)
        return template.render(**context)
    except TemplateError as exc:
        where = getattr(exc, "filename", None) or (template.filename if template else None) or name
        line = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateProblem(f"template {where}{line}: {' '.join(str(exc).split())}") from None
