"""A site's XML sitemap (sitemaps.org) as a change signal: the `<lastmod>` of each known post.

Read only for a source that has a sitemap (crawler.plan.sitemap_of: its `sitemap_url`, configured
or found by `sources add` in robots.txt, or else the first `Sitemap:` line of the robots.txt the
crawl already keeps for the source's origin); never discovered by guessing URLs. A sitemap index is followed to
at most MAX_CHILD_SITEMAPS of its sitemaps, those whose name says posts first (WordPress and
Yoast write post-sitemap.xml, wp-sitemap-posts-post-1.xml).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from lxml import etree


MAX_SITEMAP_BYTES = 20_000_000      # after decompression: a sitemap may hold 50,000 URLs
MAX_CHILD_SITEMAPS = 3
MAX_ENTRIES = 50_000


@dataclass
class Sitemap:
    """What one sitemap file says: its pages with their <lastmod> (None where it gives none), or,
    for a sitemap index, the sitemaps it lists."""
    pages: list[tuple[str, str | None]] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


class UnreadableSitemap(ValueError):
    """The body is no sitemap (not XML, no urlset or sitemapindex, or too large)."""


def parse_sitemap(body: bytes) -> Sitemap:
    """The pages (or child sitemaps) of a sitemap, gzip-compressed or not."""
    if body[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, MAX_SITEMAP_BYTES)
        except zlib.error as exc:
            raise UnreadableSitemap(f"not gzip: {exc}") from exc
        if inflater.unconsumed_tail:
            raise UnreadableSitemap(f"larger than {MAX_SITEMAP_BYTES} bytes")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(body[:MAX_SITEMAP_BYTES], parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise UnreadableSitemap(str(exc)) from exc
    if root is None or not isinstance(root.tag, str):
        raise UnreadableSitemap("not XML")
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise UnreadableSitemap(f"<{kind}> is no sitemap")
    found = Sitemap()
    for item in root.iterchildren():
        if not isinstance(item.tag, str):
            continue
        values = {etree.QName(child).localname: (child.text or "").strip()
                  for child in item.iterchildren() if isinstance(child.tag, str)}
        if not values.get("loc"):
            continue
        if kind == "sitemapindex":
            found.children.append(values["loc"])
        elif len(found.pages) < MAX_ENTRIES:
            found.pages.append((values["loc"], values.get("lastmod") or None))
    found.children.sort(key=lambda url: "post" not in url.rsplit("/", 1)[-1].lower())
    del found.children[MAX_CHILD_SITEMAPS:]
    return found
