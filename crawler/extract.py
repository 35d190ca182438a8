"""Pure extraction from HTML: the pieces each kind of source (crawler.kinds) is read with —
listing entries, a post page's fields and body — and feed and sitemap discovery.

Nothing here raises on broken HTML: a page it cannot read yields empty results.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

from parsel import Selector

from crawler.dates import find_date_in_text, parse_date
from crawler.urls import advertised_sitemaps, canonicalize, is_http_url, same_site

MAX_TITLE = 500
MAX_HTML_CHARS = 3_000_000

# Never part of a post's own content: page chrome, forms, related-post lists, comments.
BOILERPLATE = (
    "script, style, noscript, template, iframe, form, nav, aside, footer, header, "
    ".w-form, .w-dyn-list, .related, .related-posts, [class*='related'], #comments, .comments, .comments-area, "
    ".sharedaddy, .share, .social-share, .newsletter, .subscribe, .sidebar, .widget, .navbar, .w-nav"
)
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json", "application/json", "application/rdf+xml")


@dataclass
class ListingEntry:
    url: str                     # canonical: the identity
    title: str
    published: datetime | None
    summary: str | None
    link: str | None = None      # absolute URL as the page wrote it: what to fetch (no redirect)


@dataclass
class PostPage:
    url: str                     # canonical (rel=canonical when it points into the same site)
    title: str
    published: datetime | None
    body_html: str | None
    reader: str | None = None    # which reader produced body_html (see crawler.items.PostItem.reader)


def selector_for(html: str | bytes, url: str = "") -> Selector:
    if isinstance(html, bytes):
        html = html.decode("utf-8", "replace")
    html = html[:MAX_HTML_CHARS].replace("\x00", "")
    try:
        return Selector(text=html or "<html></html>", type="html", base_url=url)
    except Exception:  # lxml gives up on some inputs; an empty page then
        return Selector(text="<html></html>", type="html")


def text_of(node) -> str:
    return " ".join(" ".join(node.css("::text").getall()).split()) if node else ""


def clean_title(value: str | None) -> str:
    return " ".join((value or "").split())[:MAX_TITLE]


# ------------------------------------------------------------------------------------------
# Listings (crawler.kinds composes these per kind of source)
# ------------------------------------------------------------------------------------------
def unique_entries(entries: list[ListingEntry], page_url: str, site: str) -> list[ListingEntry]:
    """In page order, each post once, the listing page itself left out."""
    seen: set[str] = set()
    unique = []
    for entry in entries:
        if entry.url not in seen and entry.url != canonicalize(page_url, site=site):
            seen.add(entry.url)
            unique.append(entry)
    return unique


def _entry(node, link: str | None, page_url: str, site: str, title: str | None = None) -> ListingEntry | None:
    if not link or link.startswith(("#", "mailto:", "javascript:", "tel:")):
        return None
    url = canonicalize(link, base=page_url, site=site)
    if not is_http_url(url) or not same_site(url, site):
        return None
    title = clean_title(title or text_of(node.css("h1, h2, h3, h4")[:1]) or text_of(node.css("a")[:1]))
    if not title:
        return None
    date_node = node.css("time::attr(datetime)").get()
    published = parse_date(date_node) if date_node else find_date_in_text(text_of(node))
    summary = text_of(node.css("p")[:1]) or None
    return ListingEntry(url=url, title=title, published=published, summary=summary[:400] if summary else None,
                        link=urljoin(page_url, link).split("#", 1)[0])


def webflow_collection(sel: Selector, page_url: str, site: str) -> list[ListingEntry]:
    """The entries of a Webflow collection list (`div.w-dyn-items`)."""
    # The page's main collection list is the first one whose items link into the site; post
    # pages carry more lists (related posts) further down, listing pages do not need them.
    for collection in sel.css("div.w-dyn-items, [role=list]"):
        entries = []
        for item in collection.css("div.w-dyn-item, [role=listitem]"):
            href = item.css("a::attr(href)").get()
            title = text_of(item.css("h1, h2, h3, h4, .blog-title")[:1])
            entry = _entry(item, href, page_url, site, title)
            if entry:
                entries.append(entry)
        if entries:
            return entries
    return []


def has_webflow_collection(sel: Selector) -> bool:
    return bool(sel.css("div.w-dyn-item"))


def listing_from_selectors(sel: Selector, page_url: str, site: str, selectors: dict[str, str]) -> list[ListingEntry]:
    """The entries the operator's `listing_item` / `post_link` selectors find."""
    items = sel.css(selectors["listing_item"]) if selectors.get("listing_item") else [sel]
    entries = []
    for item in items:
        links = item.css(selectors["post_link"]) if selectors.get("post_link") else item.css("a")
        for link in links[:1] if selectors.get("listing_item") else links:
            href = link.attrib.get("href")
            entry = _entry(item if selectors.get("listing_item") else link, href, page_url, site, text_of(link) or None)
            if entry:
                entries.append(entry)
    return entries


def generic_listing(sel: Selector, page_url: str, site: str) -> list[ListingEntry]:
    """Entries of any blog's listing (crawler.listings: marked-up entries, schema.org JSON-LD,
    repeated blocks), else its headline links, else links below the listing's own path outside
    the page chrome."""
    from crawler.listings import detect

    entries = [ListingEntry(url=found.url, title=clean_title(found.title), published=found.published,
                            summary=found.summary, link=found.link)
               for found in detect(sel, page_url, site) if clean_title(found.title)]
    if entries:
        return entries
    for link in sel.css("main h2 a, main h3 a, h2 a, h3 a"):
        entry = _entry(link, link.attrib.get("href"), page_url, site, text_of(link))
        if entry:
            entries.append(entry)
    if entries:
        return entries
    # Last resort: links to pages below the listing's own path, outside the page chrome.
    base_path = urlsplit(canonicalize(page_url, site=site)).path.rstrip("/") + "/"
    for link in sel.xpath("//a[not(ancestor::nav) and not(ancestor::header) and not(ancestor::footer) and not(ancestor::aside)]"):
        href = link.attrib.get("href")
        if not href:
            continue
        url = canonicalize(href, base=page_url, site=site)
        path = urlsplit(url).path
        if path.startswith(base_path) and path != base_path.rstrip("/") and "/page/" not in path and len(text_of(link)) >= 8:
            entry = _entry(link, href, page_url, site, text_of(link))
            if entry:
                entries.append(entry)
    return entries


def next_page(sel: Selector, page_url: str, custom: str | None) -> str | None:
    """The next listing page: the operator's `next_page` selector, else the usual pagination links."""
    candidates = []
    if custom:
        candidates += sel.css(custom).css("::attr(href)").getall() or sel.css(f"{custom}::attr(href)").getall()
    candidates += sel.css("a.w-pagination-next::attr(href), a[rel=next]::attr(href), link[rel=next]::attr(href), "
                          "a.next::attr(href), .nav-previous a::attr(href), a.next-page::attr(href)").getall()
    for href in candidates:
        if href and not href.startswith(("#", "javascript:")):
            url = urljoin(page_url, href)
            if is_http_url(url) and url != page_url:
                return url
    return None


# ------------------------------------------------------------------------------------------
# Post pages (crawler.kinds composes these per kind of source)
# ------------------------------------------------------------------------------------------
# The hand-made body heuristics below (GENERIC_BODY, post_body, _without_boilerplate, JSON-LD's
# articleBody). Whoever changes what they return for a page bumps this: stored bodies read by
# another version are then taken as the new reference, not mailed as edits (state.changes).
HEURISTIC_READER = "heuristic-1"
GENERIC_BODY = ("[itemprop=articleBody]", "article .entry-content", ".entry-content", ".post-content",
                ".article-body", "div.w-richtext", "article", "main", "[role=main]")


def canonical_post_url(sel: Selector, url: str, site: str) -> str:
    """The page's rel=canonical when it points into the same site, else the URL made canonical."""
    canonical = sel.css("link[rel=canonical]::attr(href)").get()
    if canonical:
        candidate = canonicalize(canonical, base=url, site=site)
        if is_http_url(candidate) and same_site(candidate, site):
            return candidate
    return canonicalize(url, site=site)


def generic_title(sel: Selector, structured: dict) -> str:
    return (structured.get("headline") or sel.css("meta[property='og:title']::attr(content)").get()
            or text_of(sel.css("h1")[:1]) or text_of(sel.css("title")[:1]))


def generic_published(sel: Selector, structured: dict) -> datetime | None:
    return (parse_date(structured.get("datePublished"))
            or parse_date(sel.css("meta[property='article:published_time']::attr(content)").get())
            or parse_date(sel.css("article time::attr(datetime), main time::attr(datetime), time::attr(datetime)").get()))


def date_in(sel: Selector, query: str) -> datetime | None:
    """The date in the first node `query` finds: its `datetime` attribute, else its text."""
    node = sel.css(query)[:1]
    return parse_date(node.attrib.get("datetime") if node else None) or find_date_in_text(text_of(node))


def post_body(sel: Selector, queries: list[str], exclude: str | None, structured: dict) -> str | None:
    """The first of `queries` that holds text, without page chrome; else JSON-LD's articleBody."""
    for query in queries:
        try:
            nodes = sel.css(query)
        except Exception:  # a bad operator selector must not end the crawl
            continue
        if nodes:
            cleaned = _without_boilerplate(nodes[0], exclude)
            if cleaned and text_of(Selector(text=cleaned, type="html")):
                return cleaned
    if structured.get("articleBody"):
        return "".join(f"<p>{_escape(p)}</p>" for p in str(structured["articleBody"]).split("\n") if p.strip())
    return None


def _without_boilerplate(node, extra_exclude: str | None) -> str:
    copy = Selector(text=node.get(), type="html")
    drop = BOILERPLATE + (f", {extra_exclude}" if extra_exclude else "")
    for unwanted in copy.css(drop):
        try:
            unwanted.drop()
        except Exception:
            pass
    # The title and date repeat the page's own fields; keep them out of the body's text.
    for unwanted in copy.css("h1, .blog-post-date, .blog-label"):
        try:
            unwanted.drop()
        except Exception:
            pass
    body = copy.css("body > *")
    return "".join(part.get() for part in body) if body else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ARTICLE_TYPES = {"article", "blogposting", "newsarticle", "report", "posting", "socialmediaposting", "webpage"}


def structured_data(sel: Selector) -> dict:
    """The first Article-like object in the page's JSON-LD (also inside @graph)."""
    for raw in sel.css("script[type='application/ld+json']::text").getall():
        try:
            data = json.loads(raw.strip())
        except (ValueError, RecursionError):
            continue
        for obj in _walk_ld(data):
            types = obj.get("@type")
            types = [types] if isinstance(types, str) else (types or [])
            if any(str(t).lower() in _ARTICLE_TYPES for t in types) and obj.get("headline"):
                return {k: v for k, v in obj.items() if isinstance(v, (str, int, float))}
    return {}


def _walk_ld(data, depth: int = 0):
    if depth > 6:
        return
    if isinstance(data, list):
        for item in data:
            yield from _walk_ld(item, depth + 1)
    elif isinstance(data, dict):
        yield data
        if "@graph" in data:
            yield from _walk_ld(data["@graph"], depth + 1)


# ------------------------------------------------------------------------------------------
# Discovery
# ------------------------------------------------------------------------------------------
def discover_feeds(sel: Selector, page_url: str) -> list[str]:
    """Feeds a page advertises with <link rel="alternate">, in page order (comment feeds last)."""
    found = []
    for link in sel.css("link[rel~=alternate], link[rel=alternate]"):
        kind = (link.attrib.get("type") or "").lower().split(";")[0].strip()
        href = link.attrib.get("href")
        if href and kind in FEED_TYPES:
            url = urljoin(page_url, href)
            if is_http_url(url) and url not in found:
                found.append(url)
    return sorted(found, key=lambda u: "comment" in u.lower())


def sitemaps_from_robots(robots_txt: str, base: str) -> list[str]:
    return advertised_sitemaps(robots_txt, base)


def html_to_summary(body_html: str | None, limit: int = 300) -> str | None:
    if not body_html:
        return None
    text = text_of(selector_for(body_html))
    return (text[: limit - 1].rsplit(" ", 1)[0] + "…") if len(text) > limit else (text or None)
