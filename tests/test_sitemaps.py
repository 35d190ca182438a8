"""A site's sitemap as a change signal (crawler/sitemaps.py, crawler.plan.sitemap_of): what is
read of it, which sitemap a check asks, and hostile bodies read as errors, never exceptions of
another kind. The CLI behaviour (a changed <lastmod> mailed at the next check) is in
tests/test_listings.py."""
from __future__ import annotations

import gzip
from datetime import datetime, timezone

import pytest

from crawler.plan import CrawlPlan, SourceSpec, sitemap_of
from crawler.sitemaps import MAX_CHILD_SITEMAPS, UnreadableSitemap, parse_sitemap

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def test_a_sitemap_gives_each_page_with_its_lastmod_plain_or_gzip_compressed():
    body = (f'<?xml version="1.0"?><urlset {NS}><url><loc>https://b.example/2024/05/one/</loc>'
            f'<lastmod>2024-05-02T10:00:00+00:00</lastmod></url><url><loc>https://b.example/about/</loc></url></urlset>').encode()
    expected = [("https://b.example/2024/05/one/", "2024-05-02T10:00:00+00:00"), ("https://b.example/about/", None)]
    assert parse_sitemap(body).pages == expected
    assert parse_sitemap(gzip.compress(body)).pages == expected


def test_a_sitemap_index_names_a_few_of_its_sitemaps_those_of_posts_first():
    names = ["page-sitemap.xml", "category-sitemap.xml", "post-sitemap.xml", "author-sitemap.xml", "post-sitemap2.xml"]
    body = f'<sitemapindex {NS}>' + "".join(f"<sitemap><loc>https://b.example/{n}</loc></sitemap>" for n in names) + "</sitemapindex>"
    children = parse_sitemap(body.encode()).children
    assert children[:2] == ["https://b.example/post-sitemap.xml", "https://b.example/post-sitemap2.xml"]
    assert len(children) == MAX_CHILD_SITEMAPS


@pytest.mark.parametrize("body", [b"", b"<html><body>Not found</body></html>", b"\x1f\x8bnot gzip at all",
                                  b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                  b'<urlset><url><loc>&x;</loc></url></urlset>'])
def test_what_is_no_sitemap_reads_as_unreadable_and_no_entity_is_resolved(body):
    try:
        pages = parse_sitemap(body).pages
    except UnreadableSitemap:
        return
    assert all("root:" not in loc for loc, _ in pages)


def test_a_check_asks_the_sources_own_sitemap_else_the_one_its_robots_txt_advertises_never_a_guess():
    robots = {"https://b.example": (b"User-agent: *\nSitemap: /sitemap_index.xml\n", datetime.now(timezone.utc))}
    plan = CrawlPlan(source=SourceSpec(name="b", url="https://b.example/blog/"), robots=robots)
    assert sitemap_of(plan) == "https://b.example/sitemap_index.xml"
    plan.source.sitemap_url = "https://b.example/post-sitemap.xml"
    assert sitemap_of(plan) == "https://b.example/post-sitemap.xml"
    assert sitemap_of(CrawlPlan(source=SourceSpec(name="b", url="https://b.example/blog/"))) is None
    plan.baseline = True
    assert sitemap_of(plan) is None
