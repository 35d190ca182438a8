"""Kinds of source, urlwatch-style: one class per kind, registered under its `__kind__`.

A source's `kind` (config `[[sources]] kind = "..."`) names the class that reads its pages: which
entries a listing page holds, a post page's title, date and body, whether a feed it advertises is
looked for and whether its feed alone is the source. The spider asks the registry for the class
and config validation asks it which names exist, so a new kind is one subclass here (or in any
module imported before the config is read) and nothing else.

In every kind the operator's CSS selectors (`[sources.selectors]`) come first; the kind's own
reading fills what they leave open, then what any HTML page offers (JSON-LD, OpenGraph, `<h1>`,
`<time>`, `<article>`). The generic kinds (`html`, `auto`, `feed`) take a post's body from
trafilatura and an otherwise undated page's date from htmldate (crawler.maintext), with the
heuristics as the fallback; `webflow` and `selectors` stay exact.
"""
from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Mapping

from parsel import Selector

from crawler.dates import find_date_in_text
from crawler.maintext import READER as MAIN_TEXT_READER, main_text_html, page_date, url_date
from crawler.extract import (GENERIC_BODY, HEURISTIC_READER, ListingEntry, PostPage, canonical_post_url, clean_title, date_in,
                             generic_listing, generic_published, generic_title, has_webflow_collection,
                             listing_from_selectors, next_page, post_body, structured_data, text_of,
                             unique_entries, webflow_collection)


# A body taken by the operator's `body` selector (with `exclude`): bump when that reading changes.
SELECTORS_READER = "selectors-1"


class UnknownSourceKind(ValueError):
    """No kind of source is registered under this name."""


class SourceKind:
    """How one kind of source is read. Subclasses set `__kind__` (and may keep old names in
    `__aliases__`) and override `listing_entries` and, where the kind knows better than any
    page, `title`, `published`, `published_fallback` and `body_selectors`."""

    __kind__: ClassVar[str] = ""
    __aliases__: ClassVar[tuple[str, ...]] = ()     # old names still accepted, deprecated
    _registry: ClassVar[dict[str, type[SourceKind]]] = {}

    feed_only: ClassVar[bool] = False          # the feed is the source: no listing read after it
    discovers_feeds: ClassVar[bool] = False    # the first listing page's advertised feed is read too
    body_selectors: ClassVar[tuple[str, ...]] = ()   # where this kind keeps a post's body, tried first
    # The reader of a body found by `body_selectors` (bump it when they or their use change):
    # every body carries the reader that produced it (crawler.items.PostItem.reader).
    reader: ClassVar[str] = ""
    # Generic pages: the body is the main text trafilatura finds and an undated page's date is
    # htmldate's (crawler.maintext), the heuristics below are the fallback. Exact kinds keep it off.
    reads_main_text: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__kind__" not in cls.__dict__:
            return
        for name in (cls.__kind__, *cls.__dict__.get("__aliases__", ())):
            taken = SourceKind._registry.get(name)
            if taken is not None and taken.__qualname__ != cls.__qualname__:
                raise ValueError(f"source kind '{name}' is taken by {taken.__module__}.{taken.__qualname__}")
            SourceKind._registry[name] = cls

    @classmethod
    def named(cls, name: str) -> type[SourceKind]:
        """The class registered under `name` (or one of its old names)."""
        try:
            return SourceKind._registry[name]
        except (KeyError, TypeError):
            raise UnknownSourceKind(f"kind '{name}' must be one of {', '.join(SourceKind.names())}") from None

    @classmethod
    def names(cls) -> list[str]:
        """Every registered kind's current name (old names left out)."""
        return sorted({kind.__kind__ for kind in SourceKind._registry.values()})

    @classmethod
    def config_problems(cls, selectors: Mapping[str, str]) -> list[str]:
        """What a source of this kind lacks in its config (one line each)."""
        return []

    def __init__(self, selectors: Mapping[str, str] | None = None):
        self.selectors = dict(selectors or {})

    # -- listing pages -----------------------------------------------------------------------
    def listing(self, sel: Selector, page_url: str, site: str) -> tuple[list[ListingEntry], str | None]:
        """The entries of a listing page (page order, each once) and the next page's URL."""
        own = self.selectors
        try:
            entries = listing_from_selectors(sel, page_url, site, own) if own.get("listing_item") or own.get("post_link") else []
            entries = entries or self.listing_entries(sel, page_url, site)
            following = next_page(sel, page_url, own.get("next_page"))
        except Exception:  # a page lxml or a selector chokes on reads as an empty listing
            return [], None
        entries = unique_entries(entries, page_url, site)
        if self.reads_main_text:
            for entry in entries:       # an entry without a date of its own: its permalink's, if any
                entry.published = entry.published or url_date(entry.url)
        return entries, following

    def listing_entries(self, sel: Selector, page_url: str, site: str) -> list[ListingEntry]:
        """This kind's own reading of a listing page (the operator's selectors found nothing)."""
        raise NotImplementedError

    # -- post pages --------------------------------------------------------------------------
    def post(self, sel: Selector, url: str, site: str) -> PostPage:
        own = self.selectors
        structured = structured_data(sel)
        title = clean_title((own.get("title") and text_of(sel.css(own["title"])[:1]))
                            or self.title(sel) or generic_title(sel, structured))
        published = ((own.get("date") and date_in(sel, own["date"])) or self.published(sel)
                     or generic_published(sel, structured) or self.published_fallback(sel)
                     or (page_date(sel.get(), url) if self.reads_main_text else None))
        body_html, reader = self.body(sel, url, structured)
        return PostPage(url=canonical_post_url(sel, url, site), title=title, published=published,
                        body_html=body_html, reader=reader)

    def body(self, sel: Selector, url: str, structured: dict) -> tuple[str | None, str | None]:
        """The post's body as HTML blocks, and the reader that found it: the operator's `body`
        selector, else trafilatura's main text (generic kinds), else where this kind keeps it,
        else the generic heuristics. (None, None) when none finds a body."""
        own, exclude = self.selectors, self.selectors.get("exclude")
        if own.get("body"):
            found = post_body(sel, [own["body"]], exclude, {})
            if found:
                return found, SELECTORS_READER
        if self.reads_main_text:
            found = main_text_html(_without(sel, exclude), url)
            if found:
                return found, MAIN_TEXT_READER
        if self.body_selectors:
            found = post_body(sel, list(self.body_selectors), exclude, {})
            if found:
                return found, self.reader or HEURISTIC_READER
        found = post_body(sel, list(GENERIC_BODY), exclude, structured)
        return found, HEURISTIC_READER if found else None

    def title(self, sel: Selector) -> str:
        """The title where this kind keeps it, before structured data is asked."""
        return ""

    def published(self, sel: Selector) -> datetime | None:
        """The date where this kind keeps it, before structured data is asked."""
        return None

    def published_fallback(self, sel: Selector) -> datetime | None:
        """A last guess at the date, when neither the kind's place nor structured data had one."""
        return None


def _without(sel: Selector, exclude: str | None) -> str:
    """The page's HTML without what the operator's `exclude` selector names."""
    if not exclude:
        return sel.get()
    copy = Selector(text=sel.get(), type="html")
    try:
        for unwanted in copy.css(exclude):
            unwanted.drop()
    except Exception:  # a bad operator selector must not end the crawl
        pass
    return copy.get()


class WebflowKind(SourceKind):
    """A Webflow site such as the LiNK blog: collection lists (`div.w-dyn-items`) paginated with
    `?<hex>_page=N`, the post in `div.w-richtext`, the date near the title."""

    __kind__ = "webflow"
    __aliases__ = ("link",)    # its name until the kinds had classes, after the LiNK blog
    body_selectors = ("div.w-richtext",)
    reader = "webflow-1"

    def listing_entries(self, sel, page_url, site):
        return webflow_collection(sel, page_url, site)

    def title(self, sel):
        return text_of(sel.css(".blog-post-title, h1")[:1])

    def published(self, sel):
        return find_date_in_text(text_of(sel.css(".blog-post-date")[:1]))

    def published_fallback(self, sel):
        # Webflow templates often show the date as a plain div right after the title.
        return find_date_in_text(" ".join(sel.xpath("//h1/following::*[position()<=3]//text()").getall())[:200])


class HtmlKind(SourceKind):
    """Any blog's HTML: a Webflow collection list if the page has one, else its `<article>`s,
    else its headline links, else the links below the listing's own path."""

    __kind__ = "html"
    reads_main_text = True

    def listing_entries(self, sel, page_url, site):
        entries = webflow_collection(sel, page_url, site) if has_webflow_collection(sel) else []
        return entries or generic_listing(sel, page_url, site)


class AutoKind(HtmlKind):
    """Any blog's HTML, and the feed its first listing page advertises (`<link rel=alternate>`)
    when none is configured."""

    __kind__ = "auto"
    discovers_feeds = True


class FeedKind(HtmlKind):
    """The feed is the source: its listing page is read only when there is no `feed_url`."""

    __kind__ = "feed"
    feed_only = True


class SelectorsKind(SourceKind):
    """Only the operator's selectors find the posts on a listing page (no guessing); post pages
    are read with the selectors first, then what any HTML page offers."""

    __kind__ = "selectors"

    @classmethod
    def config_problems(cls, selectors):
        if selectors.get("listing_item") or selectors.get("post_link"):
            return []
        return ["kind 'selectors' needs selectors.listing_item or selectors.post_link"]

    def listing_entries(self, sel, page_url, site):
        return []
