"""Running one crawl of one source, for the scheduler: plan in, report out."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from scrapy.crawler import AsyncCrawlerRunner
from scrapy.settings import Settings

from crawler.items import PostItem

log = logging.getLogger(__name__)


@dataclass
class SourceSpec:
    name: str
    url: str                          # listing / home page URL
    kind: str = "auto"               # "link" (Webflow preset), "html", "feed", "auto"
    feed_url: str | None = None
    sitemap_url: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)


@dataclass
class CrawlPlan:
    source: SourceSpec
    known_urls: set[str] = field(default_factory=set)
    validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    robots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    baseline: bool = False
    sweep_urls: list[str] = field(default_factory=list)
    # Known posts whose page must be looked at again now (an edit seen once waits for this
    # fetch to confirm it): requested without validators, so the answer is the content itself.
    recheck_urls: list[str] = field(default_factory=list)
    recheck_feed: bool = False        # the same for edits seen once in a feed entry


@dataclass
class CrawlReport:
    source_name: str
    ok: bool = True
    error: str | None = None
    not_modified: bool = False
    listing_complete: bool = False
    posts_by_url: dict[str, PostItem] = field(default_factory=dict)
    unchanged_urls: set[str] = field(default_factory=set)
    gone: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    robots: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    requests: int = 0
    response_bytes: int = 0
    not_modified_count: int = 0
    warnings: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    discovered_feed: str | None = None
    feed_read: bool = False
    listing_entries: int = 0
    empty_listing: bool = False

    @property
    def posts(self) -> list[PostItem]:
        return list(self.posts_by_url.values())

    def fail(self, error: str) -> None:
        if self.ok:
            self.ok, self.error = False, " ".join(error.split())


_active_runners: set[AsyncCrawlerRunner] = set()


def scrapy_settings(overrides: dict | None = None) -> Settings:
    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")
    settings.update(overrides or {}, priority="cmdline")
    return settings


async def crawl(plan: CrawlPlan, settings: dict | None = None) -> CrawlReport:
    """One crawl of one source on the running asyncio reactor. Never raises for site problems:
    a crawl that did not finish, or whose listing/feed could not be read, is `ok=False` with a
    one-line `error` naming the source."""
    from crawler.spiders.blog import BlogSpider

    report = CrawlReport(source_name=plan.source.name)
    runner = AsyncCrawlerRunner(scrapy_settings({"POSTWATCH_SOURCE_URL": plan.source.url, **(settings or {})}))
    crawler = runner.create_crawler(BlogSpider)
    _active_runners.add(runner)
    try:
        await runner.crawl(crawler, plan=plan, report=report)
    except Exception as exc:  # a bug or a crash in Scrapy: the source fails, the process lives
        log.exception("%s: crawl crashed", plan.source.name)
        report.fail(f"{plan.source.name}: crawl crashed: {type(exc).__name__}: {exc}")
    finally:
        _active_runners.discard(runner)
    reason = crawler.stats.get_value("finish_reason") if crawler.stats else None
    if reason != "finished":
        report.fail(f"{plan.source.name}: crawl did not finish ({reason or 'stopped'})")
    for warning in report.warnings:
        log.warning("%s", warning, extra={"source": plan.source.name})
    return report


async def stop_all_crawls() -> None:
    """Stop every running crawl (daemon shutdown); their reports come back not ok."""
    for runner in list(_active_runners):
        await runner.stop()


@dataclass
class DiscoveryReport:
    """What `postwatch sources test URL` shows: what postwatch would extract, nothing stored."""
    url: str
    ok: bool
    error: str | None
    spec: SourceSpec
    posts: list[PostItem]
    requests: int
    title: str | None = None

    def describe(self, shown: int = 5) -> str:
        if not self.ok:
            return f"{self.url}: {self.error}"
        lines = [f"{self.url}",
                 f"  feed:    {self.spec.feed_url or 'none found'}",
                 f"  sitemap: {self.spec.sitemap_url or 'none found'}",
                 f"  posts:   {len(self.posts)} found on the first listing pages ({self.requests} requests)"]
        dated = sorted(self.posts, key=lambda p: p.published.timestamp() if p.published else 0, reverse=True)
        for post in dated[:shown]:
            when = post.published.strftime("%Y-%m-%d") if post.published else "undated   "
            lines.append(f"    {when}  {post.title}")
        return "\n".join(lines)


async def test_source(url: str, settings: dict | None = None) -> DiscoveryReport:
    """Read a blog's first listing pages (and its feed, if one is advertised) without storing."""
    from urllib.parse import urlsplit

    from crawler.extract import sitemaps_from_robots

    name = (urlsplit(url).hostname or "source").removeprefix("www.").split(".")[0]
    spec = SourceSpec(name=name, url=url, kind="auto")
    report = await crawl(CrawlPlan(source=spec, baseline=True), {**(settings or {}), "MAX_LISTING_PAGES": 2})
    spec.feed_url = report.discovered_feed
    for body, _ in report.robots.values():
        sitemaps = sitemaps_from_robots(body.decode("utf-8", "replace"), url)
        if sitemaps:
            spec.sitemap_url = sitemaps[0]
            break
    ok, error = report.ok, report.error
    if ok and not report.posts:
        ok, error = False, (f"{name}: no posts found on {url}; give CSS selectors with --selector "
                            "(listing_item, post_link, title, date, body)")
    return DiscoveryReport(url=url, ok=ok, error=error, spec=spec, posts=report.posts, requests=report.requests)


test_source.__test__ = False   # not a pytest test, despite the name
