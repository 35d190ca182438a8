"""Which posts a blog's listing page (home page, archive, category page) shows, for the generic
kinds (`html`, `auto`, `feed`; crawler.kinds). `webflow` and `selectors` do not use this.

What counts as a listing entry, strongest evidence first (docs/listings.md says the same for
people writing or checking a page):

1. Marked-up entries: microformats `h-entry` (and the older `hentry`), `<article>` elements,
   schema.org microdata `BlogPosting` / `Article` / `NewsArticle`. An element that holds the
   headline links of several posts is a wrapper, not an entry.
2. schema.org JSON-LD: an `ItemList`'s `itemListElement`s, a `Blog`'s `blogPost`s.
3. Repeated blocks: elements with the same place and shape in the page (the same tag path from
   the root, the same classes of their own), each holding exactly one post link: cards, list
   items of an archive (`<ul>` of dated links), the stories of a news index's sections.

   Of blocks of one shape in several lists, the lists whose entries are dated are kept when the
   others are never dated (a home page's recent posts beside its link lists). An entry spread over
   two table rows (a link aggregator's headline row and meta row), or a `<dd>` after its `<dt>`,
   takes its headline and date from the row or `<dt>` beside it.

The page's chrome is never read for entries: `nav`, `aside`, page-level `header`/`footer`,
sidebars, widgets, menus, pagination, carousels/sliders, forms. Neither are links that are not
posts: the home page, tag/category/author/date archives (`/2025/08/19.html` too), pagination,
feeds, comments, files; nor links that name an action or a count ("hide", "login", "43
comments"), a host name, or nothing at all (an icon).

Every entry's URL is a same-site permalink: a link-blog entry whose headline points off-site
takes its on-site permalink (`u-url`, `rel=bookmark`, the one same-site link it holds) and the
headline's text as its title; an entry with no same-site permalink is left out.

Of the three, the reading that finds the most posts is used (ties in the order above); when
none finds any, headline links (`h2 a`, `h3 a`) and then links below the listing's own path.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

from parsel import Selector

from crawler.dates import find_date_in_text, parse_date
from crawler.urls import canonicalize, is_http_url, same_site

MIN_BLOCKS = 3          # repeated blocks: fewer is no list
MAX_LINKS = 5000        # links of a page looked at (a hostile page cannot make it slow)
MAX_TEXT = 400

# Ancestors that make a link page chrome, wherever they are.
_CHROME_TAGS = {"nav", "aside", "form", "menu", "dialog", "noscript", "template", "select"}
_CHROME_ROLES = {"navigation", "complementary", "banner", "contentinfo", "search", "menu", "menubar"}
_CHROME_CLASS = re.compile(
    r"(^|[\s_-])(sidebar|side-bar|widget|widgets|widget-area|menu|navbar|nav|navigation|breadcrumbs?|pagination|"
    r"pager|page-numbers|nav-links|post-navigation|carousel|slider|swiper|slick|ticker|footer|masthead|"
    r"site-header|site-footer|cookie|newsletter|subscribe|tagcloud|tag-cloud)($|[\s_-])", re.I)
# Chrome even inside an entry: its share bar, comments, related posts, a recent-posts widget.
_ENTRY_CHROME_CLASS = re.compile(r"(^|[\s_-])(share|sharing|social|related|comments?|recent[_-]?(posts|entries)|"
                                 r"popular[_-]?posts|widget_archive)($|[\s_-])", re.I)
# Chrome even inside an entry (a page-builder front page is one page entry): a widget or sidebar,
# unless it holds the entries themselves (a post-loop widget).
_WIDGET_CLASS = re.compile(r"(^|[\s_-])(sidebar|widget|widgets|widget-area)($|[\s_-])", re.I)
_HOLDS_ENTRIES = ("boolean(.//article | .//*[contains(concat(' ', normalize-space(@class), ' '), ' h-entry ')"
                  " or contains(concat(' ', normalize-space(@class), ' '), ' hentry ')])")
# Links that are not posts.
_NOT_POST_PATH = re.compile(
    r"(^|/)(tags?|category|categories|topics?|authors?|users?|page|search|feed|rss|atom|comments?|login|"
    r"wp-login\.php|wp-admin|cart|account|subscribe|share|label|labels)(/|$)"
    r"|\.(xml|rss|atom|json|jpe?g|png|gif|webp|svg|ico|pdf|zip|gz|mp3|mp4|css|js)$", re.I)
# A day's, month's or year's archive (/2025/08/, /blog/2025/08/19.html): a date and no slug.
_DATE_ARCHIVE = re.compile(r"^(/[a-z-]+)?/(19|20)\d\d(/\d\d?){0,2}(/|\.html?)?$", re.I)
_NOT_POST_QUERY = re.compile(r"(^|&)(s|q|page|paged|start|offset|replytocom|share|tag|cat|author|lang)=", re.I)
_NOT_POST_REL = {"tag", "category", "author", "next", "prev", "me", "license"}
# Per-item classes that would make every block's shape differ (WordPress's post-123, category-news...).
_VARYING_CLASS = re.compile(r"\d|^(category|tag|format|status|type|post|author|has|wp|aos|id|entry)-|"
                            r"^(sticky|featured|pinned|first|last|odd|even|active|current|new|hidden|visible)$", re.I)
# Link texts that name an action or a count, not a post: a link aggregator's "hide", "past" and
# "43 comments", a log-in link, a share button. Matched on the whole text, digits aside.
_ACTION_TEXT = re.compile(
    r"^[\W\d_]*(hide|unhide|flag|vote|upvote|downvote|past|comments?|discuss|discussion|repl(y|ies)|log ?in|"
    r"log ?out|sign ?in|sign ?up|register|submit|edit|delete|report|save|favou?rite|like|likes|share|tweet|"
    r"print|e-?mail|subscribe|follow|more|next|previous|prev)[\W\d_]*$", re.I)
# A link whose text is a host name ("example.com", "github.com/someone"): a link aggregator's site
# filter, not a post.
_HOST_TEXT = re.compile(r"^\W*[\w-]+(\.[\w-]+)*\.[a-z]{2,}(/[\w.~-]*)*\W*$", re.I)
# Texts that say when, or how many, not what: "2 hours ago", "43 comments", "90 points", "12:03".
_META_TEXT = re.compile(r"^[\W\d_]*((\d+\s*)?(seconds?|minutes?|mins?|hours?|days?|weeks?|months?|years?)\s+ago|"
                        r"yesterday|today|just now|points?|comments?|replies|views?|[\d\s:./-]*)[\W\d_]*$", re.I)
_ISO_DATE = re.compile(r"^\s*(19|20)\d\d-\d\d-\d\d")
_MARKED = ("[class~=h-entry], [class~=hentry], article, [itemtype*='schema.org/BlogPosting'], "
           "[itemtype*='schema.org/Article'], [itemtype*='schema.org/NewsArticle'], [itemtype*='schema.org/Posting']")
# In this order: where an entry keeps its permalink.
_PERMALINK = ("a.u-url", "a[rel~=bookmark]", "a[itemprop=url]",
              "[itemprop=headline] a, .p-name a, .entry-title a, .post-title a, h1 a, h2 a, h3 a, h4 a, .title a")
_HEADING = ("[itemprop=headline], .p-name, .entry-title, .post-title, .article-title, .card-title, h1, h2, h3, h4, "
            ".title")
_HEADED = "boolean(.//h1 | .//h2 | .//h3 | .//h4 | .//*[contains(@class, 'title')])"


class Found:
    """One entry as a detector sees it (crawler.extract.ListingEntry is made from it)."""
    __slots__ = ("url", "link", "title", "published", "summary")

    def __init__(self, url, link, title, published=None, summary=None):
        self.url, self.link, self.title, self.published, self.summary = url, link, title, published, summary


def detect(sel: Selector, page_url: str, site: str) -> list[Found]:
    """The entries of a listing page by the strongest reading that finds any (module docstring)."""
    readings = [_marked(sel, page_url, site), _json_ld(sel, page_url, site), _blocks(sel, page_url, site)]
    best = max(readings, key=len)       # max keeps the first of equal length: the order above
    return best


# ------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------
def post_url(href: str | None, page_url: str, site: str, rel: str = "") -> str | None:
    """The canonical URL of a link to a post of this site, None for anything else."""
    if not href or href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
        return None
    if set(rel.lower().split()) & _NOT_POST_REL:
        return None
    url = canonicalize(href, base=page_url, site=site)
    if not is_http_url(url) or not same_site(url, site):
        return None
    parts = urlsplit(url)
    path = parts.path
    if path in ("", "/") and not parts.query:
        return None
    if url == canonicalize(page_url, site=site) or url == canonicalize(site, site=site):
        return None
    if _NOT_POST_PATH.search(path) or _DATE_ARCHIVE.match(path) or _NOT_POST_QUERY.search(parts.query):
        return None
    return url


def _names_an_action(anchor) -> bool:
    """A link that is not an entry's, whatever it points to: an action or a count ("hide", "43
    comments", "login"), a site filter named by its host, an icon without text, title or image."""
    text = " ".join(" ".join(anchor.itertext()).split())
    if not text:
        return not (anchor.get("title") or anchor.xpath(".//img"))
    return bool(_ACTION_TEXT.match(text) or _HOST_TEXT.match(text))


def _in_chrome(element) -> bool:
    """Inside page chrome: nav, aside, sidebars, menus, pagination, sliders; a header or footer
    counts only when no article or entry encloses it (an entry's own footer holds its permalink)."""
    ancestors = list(element.iterancestors())
    inside_entry = any(a.tag == "article" or _entry_like(a) for a in ancestors)
    for node in (element, *ancestors):
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag in ("body", "html"):     # their classes name the page's layout ("site-navigation-left")
            break
        if tag in _CHROME_TAGS:
            return True
        if tag in ("header", "footer") and not inside_entry:
            return True
        if (node.get("role") or "").lower() in _CHROME_ROLES:
            return True
        marks = f"{node.get('class') or ''} {node.get('id') or ''}"
        if not marks.strip() or _entry_like(node):
            continue
        if _ENTRY_CHROME_CLASS.search(marks) or (not inside_entry and _CHROME_CLASS.search(marks)):
            return True
        if inside_entry and _WIDGET_CLASS.search(marks) and not node.xpath(_HOLDS_ENTRIES):
            return True
    return False


def _entry_like(node) -> bool:
    classes = (node.get("class") or "").split()
    return any(c in ("h-entry", "hentry") for c in classes) or "schema.org/" in (node.get("itemtype") or "")


def _text(node) -> str:
    if node is None:
        return ""
    return " ".join(" ".join(node.itertext()).split()) if hasattr(node, "itertext") else ""


# ------------------------------------------------------------------------------------------
# 1. Marked-up entries
# ------------------------------------------------------------------------------------------
def _marked(sel: Selector, page_url: str, site: str) -> list[Found]:
    found = []
    try:
        items = sel.css(_MARKED)
    except Exception:
        return []
    # A marked element around several entries (a page whose builder holds the latest posts, a
    # list wrapped in one <article>) is a wrapper: the entries are the marked elements inside it.
    wrappers = {id(item.root) for item in items if _wraps_entries(item, page_url, site)}
    entries = {id(item.root) for item in items} - wrappers
    for item in items:
        element = item.root
        # The outermost marked element is the entry (an <article> inside an h-entry is the same one).
        if id(element) in wrappers or any(id(a) in entries for a in element.iterancestors()):
            continue
        if _in_chrome(element):
            continue
        entry = _marked_entry(item, page_url, site)
        if entry:
            found.append(entry)
    return found


def _wraps_entries(item: Selector, page_url: str, site: str) -> bool:
    """Whether a marked element holds the headline links of several posts, or several marked
    elements that each hold a post link of their own."""
    headline_urls = {post_url(a.attrib.get("href"), page_url, site, a.attrib.get("rel", ""))
                     for a in item.css("h1 a, h2 a, h3 a, .entry-title a, .post-title a")}
    headline_urls.discard(None)
    if len(headline_urls) > 2:
        return True
    nested = [n for n in item.css(_MARKED) if n.root is not item.root]
    own = {next((u for u in (post_url(a.attrib.get("href"), page_url, site, a.attrib.get("rel", ""))
                             for a in n.css("a")) if u), None) for n in nested}
    own.discard(None)
    return len(own) >= 2


def _marked_entry(item: Selector, page_url: str, site: str) -> Found | None:
    permalink = None
    for query in _PERMALINK:
        for a in item.css(query):
            url = post_url(a.attrib.get("href"), page_url, site, a.attrib.get("rel", ""))
            if url and not _in_chrome(a.root):
                permalink = (url, a)
                break
        if permalink:
            break
    if permalink is None:       # a link-blog entry or a note: its one same-site link
        own = [(post_url(a.attrib.get("href"), page_url, site, a.attrib.get("rel", "")), a) for a in item.css("a")]
        own = [(u, a) for u, a in own if u and not _in_chrome(a.root)]
        if len({u for u, _ in own}) != 1:
            return None
        permalink = own[0]
    url, anchor = permalink
    title = _title(item, url, page_url, site)
    if not title:
        return None
    return Found(url, urljoin(page_url, anchor.attrib["href"]).split("#", 1)[0], title,
                 _date(item), _summary(item))


def _title(item: Selector, url: str, page_url: str, site: str) -> str:
    return _named_title(item, url, page_url, site) or _note_title(item, url, page_url, site)


def _named_title(item: Selector, url: str, page_url: str, site: str) -> str:
    """The entry's title where the page names one: a heading, a title element, a link's text."""
    def to_post(a) -> bool:
        return post_url(a.attrib.get("href"), page_url, site, a.attrib.get("rel", "")) == url

    # A heading that links to the post, or that the post's link wraps, is its title (a date or a
    # category can be the first heading).
    for heading in item.css("h1, h2, h3, h4, [itemprop=headline], .entry-title, .post-title"):
        if any(to_post(a) for a in heading.css("a")) or any(to_post(a) for a in heading.xpath("ancestor::a[1]")):
            text = _text(heading.root)
            if text:
                return _short(text, 300)
    for query in _HEADING.split(", "):
        node = item.css(query)[:1]
        if node:
            text = _text(node[0].root)
            if text:
                return _short(text, 300)
    # No heading: the longest text of a link to the post that says what, not when or how many; a
    # short one when the rest of the entry is only its date ("2023-09-18: Currently").
    texts = [_text(a.root) or a.attrib.get("title", "") or " ".join(a.css("img::attr(alt)").getall())
             for a in item.css("a") if to_post(a) and not _names_an_action(a.root)]
    longest = max((t for t in texts if not _META_TEXT.match(t)), key=len, default="")
    if len(longest) >= 12:
        return longest
    rest = _text(item.root).replace(longest, "", 1)
    if longest and not re.sub(r"[\W\d_]+", "", rest) or (len(rest) < 40 and find_date_in_text(rest)):
        return longest
    return ""


def _note_title(item: Selector, url: str, page_url: str, site: str) -> str:
    """An entry without a title (a note): the start of its text, else its link's text."""
    content = item.css(".e-content, .p-summary, .entry-content, .entry-summary, p")[:1]
    text = _text(content[0].root) if content else _text(item.root)
    return _short(text) or next((_text(a.root) for a in item.css("a")
                                 if post_url(a.attrib.get("href"), page_url, site) == url and _text(a.root)), "")


def _short(text: str, limit: int = 120) -> str:
    return (text[:limit - 3].rsplit(" ", 1)[0] + "…") if len(text) > limit else text


def _date(item: Selector):
    return _date_of(item.root)


def _date_of(element):
    for value in element.xpath(".//*[contains(concat(' ', normalize-space(@class), ' '), ' dt-published ')]/@datetime"
                               " | .//time[contains(concat(' ', normalize-space(@class), ' '), ' published ')]/@datetime"
                               " | .//*[@itemprop='datePublished']/@content | .//*[@itemprop='datePublished']/@datetime"
                               " | .//time/@datetime"):
        parsed = parse_date(value)
        if parsed:
            return parsed
    # A date written out in a title attribute (an age shown as "2 hours ago", an <abbr>).
    for value in element.xpath(".//*[@title]/@title"):
        if _ISO_DATE.match(value):
            parsed = parse_date(value)
            if parsed:
                return parsed
    return find_date_in_text(_text(element)[:2000])


def _companions(top, urls_under: dict) -> tuple[list, list]:
    """The rows beside an entry that belong to it, before and after: an entry spread over two
    table rows (a link aggregator's headline row and its meta row), a <dd> and its <dt>. A row
    holding a link to another post is another entry's."""
    def alone(node) -> bool:
        return isinstance(node.tag, str) and not urls_under.get(node, set()) - urls_under.get(top, set())

    before, after = [], []
    if top.tag == "tr":
        previous, following = top.getprevious(), top.getnext()
        before = [previous] if previous is not None and previous.tag == "tr" and alone(previous) else []
        after = [following] if following is not None and following.tag == "tr" and alone(following) else []
    elif top.tag == "dd":
        previous = top.getprevious()
        while previous is not None and previous.tag == "dd":
            previous = previous.getprevious()
        before = [previous] if previous is not None and previous.tag == "dt" and alone(previous) else []
    return before, after


def _companion_title(top, urls_under: dict) -> str:
    """The headline in the row before an entry (off-site for a link aggregator's story)."""
    for row in _companions(top, urls_under)[0]:
        texts = [_text(a) for a in row.iter("a") if not _names_an_action(a)]
        longest = max((t for t in texts if not _META_TEXT.match(t)), key=len, default="")
        if longest:
            return _short(longest, 300)
    return ""


def _date_of_companions(top, urls_under: dict):
    before, after = _companions(top, urls_under)
    for row in before + after:
        if len(_text(row)) <= 300:
            parsed = _date_of(row)
            if parsed:
                return parsed
    return None


def _summary(item: Selector) -> str | None:
    node = item.css(".p-summary, .entry-summary, [itemprop=description], p")[:1]
    text = _text(node[0].root) if node else ""
    return text[:MAX_TEXT] or None


# ------------------------------------------------------------------------------------------
# 2. schema.org JSON-LD
# ------------------------------------------------------------------------------------------
def _json_ld(sel: Selector, page_url: str, site: str) -> list[Found]:
    found = []
    for raw in sel.css("script[type='application/ld+json']::text").getall()[:20]:
        try:
            data = json.loads(raw.strip())
        except (ValueError, RecursionError):
            continue
        for node in _walk(data):
            for post in _ld_posts(node):
                entry = _ld_entry(post, page_url, site)
                if entry and all(e.url != entry.url for e in found):
                    found.append(entry)
    return found


def _walk(data, depth: int = 0):
    if depth > 6:
        return
    if isinstance(data, list):
        for item in data[:500]:
            yield from _walk(item, depth + 1)
    elif isinstance(data, dict):
        yield data
        for key in ("@graph", "mainEntity"):
            if key in data:
                yield from _walk(data[key], depth + 1)


def _types(node: dict) -> set[str]:
    types = node.get("@type")
    types = [types] if isinstance(types, str) else (types if isinstance(types, list) else [])
    return {str(t).lower() for t in types}


def _ld_posts(node: dict):
    types = _types(node)
    if "itemlist" in types and isinstance(node.get("itemListElement"), list):
        for element in node["itemListElement"][:500]:
            if isinstance(element, dict):
                inner = element.get("item")
                yield inner if isinstance(inner, dict) else element
            elif isinstance(element, str):
                yield {"url": element}
    if types & {"blog", "collectionpage", "webpage"}:
        posts = node.get("blogPost") or node.get("blogPosts") or node.get("hasPart")
        for post in posts if isinstance(posts, list) else ([posts] if isinstance(posts, dict) else []):
            if isinstance(post, dict):
                yield post


def _ld_entry(post: dict, page_url: str, site: str) -> Found | None:
    candidates = [post.get("url"), post.get("@id")]
    main = post.get("mainEntityOfPage")
    candidates.append(main.get("@id") if isinstance(main, dict) else main)
    for href in candidates:
        if isinstance(href, str):
            url = post_url(href, page_url, site)
            if url:
                title = next((post.get(k) for k in ("headline", "name") if isinstance(post.get(k), str)), "") or url
                published = parse_date(post.get("datePublished")) if isinstance(post.get("datePublished"), str) else None
                summary = post.get("description") if isinstance(post.get("description"), str) else None
                return Found(url, urljoin(page_url, href).split("#", 1)[0], " ".join(title.split()),
                             published, summary[:MAX_TEXT] if summary else None)
    return None


# ------------------------------------------------------------------------------------------
# 3. Repeated blocks
# ------------------------------------------------------------------------------------------
def _blocks(sel: Selector, page_url: str, site: str) -> list[Found]:
    root = sel.root
    if not hasattr(root, "iter"):
        return []
    links = []
    for anchor in root.iter("a"):
        url = post_url(anchor.get("href"), page_url, site, anchor.get("rel") or "")
        if url and not _names_an_action(anchor) and not _in_chrome(anchor):
            links.append((anchor, url))
            if len(links) >= MAX_LINKS:
                break
    urls_under: dict = {}
    for anchor, url in links:
        urls_under.setdefault(anchor, set()).add(url)
        for ancestor in anchor.iterancestors():
            if ancestor.tag in ("body", "html"):
                break
            urls_under.setdefault(ancestor, set()).add(url)
    groups: dict[tuple, list] = {}
    signatures: dict = {}
    for element, urls in urls_under.items():
        if len(urls) == 1 and isinstance(element.tag, str):
            # Blocks of one shape in sections of their own (a news index's topics) are one list:
            # the tag path from the root and the block's own classes, not its sections' classes.
            signature = _signature(element, signatures)
            groups.setdefault((tuple(tag for tag, _ in signature), signature[-1][1]), []).append(element)
    chosen = _best_group(groups, urls_under)
    if not chosen:
        return []
    signature, best = chosen
    best = best + _same_kind_blocks(best, {k: v for k, v in groups.items() if k != signature}, urls_under)
    return _block_entries(best, links, urls_under, page_url, site)


def _best_group(groups: dict, urls_under: dict) -> tuple[tuple, list] | None:
    """The group of blocks that is the listing: the most posts, doubled when most blocks have a
    heading and again when most are dated or have a lead (a list of posts, not a link list), then
    the outermost. A group whose blocks are bare links with the same text in most of them ("hide",
    "2 hours ago") is not a list of posts."""
    signals: dict = {}
    best, best_key = None, None
    for signature, elements in groups.items():
        elements = _dated_sections(elements, urls_under, signals)
        urls = [next(iter(urls_under[e])) for e in elements]
        distinct = len(set(urls))
        if distinct < MIN_BLOCKS or _same_link_texts(elements):
            continue
        headed = sum(1 for e in elements if e.tag in ("h1", "h2", "h3", "h4") or e.xpath(_HEADED))
        told = sum(1 for e in elements if any(_signals(_entry_top(e, urls_under), signals)))
        weight = (2 if headed * 2 >= len(elements) else 1) * (2 if told * 2 >= len(elements) else 1)
        key = (distinct * weight, -len(signature[0]))       # then the outermost
        if best_key is None or key > best_key:
            best, best_key = (signature, elements), key
    return best


def _same_link_texts(elements: list) -> bool:
    if any(e.tag != "a" for e in elements):
        return False
    texts = {"" if _META_TEXT.match(text) else text.lower() for text in map(_text, elements)}
    return len(texts) * 2 < len(elements)


def _entry_top(element, urls_under: dict):
    """The outermost ancestor of a block that holds the same one post link: the entry around it."""
    top = element
    for ancestor in element.iterancestors():
        if urls_under.get(ancestor) != urls_under[element]:
            break
        top = ancestor
    return top


def _signals(top, cache: dict) -> tuple[bool, bool]:
    """Whether an entry shows a date, and whether it has a lead (a paragraph of some length)."""
    if top not in cache:
        dated = bool(top.xpath(".//time | .//*[@datetime]")) or _date_of(top) is not None
        lead = any(len(_text(p)) >= 60 for p in top.iter("p"))
        cache[top] = (dated, lead)
    return cache[top]


def _dated_sections(elements: list, urls_under: dict, cache: dict) -> list:
    """Blocks of one shape in several lists: when the entries of some lists are dated and those of
    others never are, the undated lists are link lists beside the posts (a home page's knowledge
    base, its favourite links), not posts."""
    by_list: dict = {}
    for element in elements:
        top = _entry_top(element, urls_under)
        by_list.setdefault(top.getparent(), []).append((element, _signals(top, cache)[0]))
    if len(by_list) < 2:
        return elements
    dated_lists = [blocks for blocks in by_list.values() if sum(d for _, d in blocks) * 2 >= len(blocks)]
    undated_lists = [blocks for blocks in by_list.values() if not any(d for _, d in blocks)]
    if not dated_lists or not undated_lists:
        return elements
    return [element for blocks in dated_lists for element, _ in blocks]


def _block_entries(best: list, links: list, urls_under: dict, page_url: str, site: str) -> list[Found]:
    found, seen = [], set()
    for element in best:
        url = next(iter(urls_under[element]))
        if url in seen:
            continue
        seen.add(url)
        item = Selector(root=element)
        anchors = [a for a, u in links if u == url and (a is element or element in a.iterancestors())]
        top = _entry_top(element, urls_under)
        title = (_link_title(element, top, urls_under) if element.tag == "a" else
                 _named_title(item, url, page_url, site) or _companion_title(top, urls_under)
                 or _note_title(item, url, page_url, site))
        if not title:
            continue
        published = _date(item) or _date_of_companions(top, urls_under)
        found.append(Found(url, urljoin(page_url, anchors[0].get("href")).split("#", 1)[0] if anchors else url,
                           " ".join(title.split()), published, _summary(item) if element.tag != "a" else None))
    return found


def _link_title(anchor, top, urls_under: dict) -> str:
    text = _text(anchor) or anchor.get("title", "")
    if not text or _META_TEXT.match(text):
        return _companion_title(top, urls_under) or text
    return text


def _same_kind_blocks(best: list, groups: dict, urls_under: dict) -> list:
    """Blocks of other shapes that link to posts of the same kind as the chosen list's (a news
    index's headline bar, its image modules beside the sections' story lists): groups of at least
    MIN_BLOCKS blocks whose links, nearly all new, share the chosen list's permalink pattern."""
    chosen = {next(iter(urls_under[e])) for e in best}
    pattern = _dominant_pattern(chosen)
    if pattern is None:
        return []
    more = []
    for elements in groups.values():
        urls = {next(iter(urls_under[e])) for e in elements}
        new = urls - chosen
        if len(new) >= MIN_BLOCKS and len(new) >= 0.8 * len(urls) and \
                sum(_path_pattern(u) == pattern for u in urls) >= 0.8 * len(urls):
            more.extend(elements)
            chosen |= urls
    return more


def _path_pattern(url: str) -> tuple:
    """The shape of a permalink's path: its first three segments as numbers or words, and its depth."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return tuple("#" if s.isdigit() else "w" for s in segments[:3]) + (len(segments) >= 3,)


def _dominant_pattern(urls: set[str]) -> tuple | None:
    """The permalink pattern of nearly all of a list's posts, when they share one with a date
    in it (/2014/07/24/...: only then is the pattern a post's, not any page's)."""
    patterns = [_path_pattern(u) for u in urls]
    top = max(set(patterns), key=patterns.count, default=None)
    if top is None or patterns.count(top) < 0.8 * len(patterns) or "#" not in top:
        return None
    return top


def _signature(element, cache: dict) -> tuple:
    """The element's tag and class path from the root, without the classes that differ per item."""
    if element in cache:
        return cache[element]
    chain = [element, *element.iterancestors()]
    signature = tuple((node.tag, " ".join(sorted(c for c in (node.get("class") or "").split()
                                                  if not _VARYING_CLASS.search(c))))
                      for node in reversed(chain))
    cache[element] = signature
    return signature
