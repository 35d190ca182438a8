"""Running crawls for the application: plans in, reports out."""
from __future__ import annotations

import asyncio
import functools
import logging
from urllib.parse import urlsplit

from scrapy.crawler import AsyncCrawlerRunner, Crawler
from scrapy.settings import Settings

from crawler.extract import sitemaps_from_robots
from crawler.plan import CrawlPlan, CrawlReport, DiscoveryReport, SourceSpec, robots_cache
from crawler.reports import ReportCollector
from crawler.runtime import on_reactor
from crawler.spiders.blog import BlogSpider

log = logging.getLogger(__name__)

_active_runners: set[AsyncCrawlerRunner] = set()


def project_settings(overrides: dict | None = None) -> Settings:
    """The Scrapy project's settings (crawler/settings.py) with `overrides` on top."""
    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")
    settings.update(overrides or {}, priority="cmdline")
    return settings


async def crawl(plan: CrawlPlan, settings: dict | None = None) -> CrawlReport:
    """One crawl of one source on the running asyncio reactor. Never raises for site problems:
    a crawl that did not finish, or whose listing/feed could not be read, is `ok=False` with a
    one-line `error` naming the source."""
    reports = await crawl_sources([plan], settings)
    return reports[plan.source.name]


async def crawl_sources(plans: list[CrawlPlan], settings: dict | None = None) -> dict[str, CrawlReport]:
    """One Scrapy crawl for all `plans` (one per source, names unique); a report per source name.
    A crawl that crashed or did not finish fails every source in it. Awaited from any event
    loop: the crawl itself runs on the reactor's."""
    return await on_reactor(functools.partial(_crawl_sources, plans, settings))


async def _crawl_sources(plans: list[CrawlPlan], settings: dict | None) -> dict[str, CrawlReport]:
    runner = AsyncCrawlerRunner(project_settings({**(settings or {}), "POSTWATCH_ROBOTS_CACHE": robots_cache(plans)}))
    crawler = runner.create_crawler(BlogSpider)
    collector = ReportCollector(crawler, plans)
    _active_runners.add(runner)
    try:
        crawling = runner.crawl(crawler, plans=plans, reports=collector.reports)
        try:
            await asyncio.shield(crawling)
        except asyncio.CancelledError:
            # A crawl task cancelled mid-way leaves its downloads to the reactor, and requests
            # would go on leaving after this returned (and after a cluster worker's turn at the
            # host ended). Stopped the way Scrapy stops, it returns once none is in flight.
            await crawler.stop_async()
            await asyncio.wait([crawling])
            raise
    except Exception as exc:  # a bug or a crash in Scrapy: the sources fail, the process lives
        log.exception("%s: crawl crashed", ", ".join(collector.reports))
        for name, report in collector.reports.items():
            report.fail(f"{name}: crawl crashed: {type(exc).__name__}: {exc}")
    finally:
        _active_runners.discard(runner)
    reason = _finish_reason(crawler)
    for name, report in collector.reports.items():
        if reason != "finished":
            report.fail(f"{name}: crawl did not finish ({reason or 'stopped'})")
        for warning in report.warnings:
            log.warning("%s", warning, extra={"source": name})
    return collector.reports


def _finish_reason(crawler: Crawler) -> str | None:
    try:
        return crawler.stats.get_value("finish_reason")
    except RuntimeError:    # the crawl crashed before Scrapy made its stats
        return None


async def stop_all_crawls() -> None:
    """Stop every running crawl (daemon shutdown); their reports come back not ok."""
    for runner in list(_active_runners):
        await runner.stop()


async def test_source(url: str, settings: dict | None = None) -> DiscoveryReport:
    """Read a blog's first listing pages (and its feed, if one is advertised) without storing."""
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
        ok, error = False, no_posts_advice(name, url)
    return DiscoveryReport(url=url, ok=ok, error=error, spec=spec, posts=report.posts, requests=report.requests)


test_source.__test__ = False


def no_posts_advice(name: str, url: str) -> str:
    """What `sources test` says when no post was found: the `selectors` kind, with an example."""
    return (f"{name}: no posts found on {url}.\n"
            "  The page has no entries postwatch recognises (h-entry, <article>, schema.org BlogPosting or\n"
            "  ItemList, repeated blocks each holding one post link; see docs/listings.md). Name them with\n"
            "  the `selectors` kind, one CSS selector for the element of each post and one for its link:\n"
            "\n"
            "    [[sources]]\n"
            f'    name = "{name}"\n'
            f'    url = "{url}"\n'
            '    kind = "selectors"\n'
            "    [sources.selectors]\n"
            '    listing_item = "div.card"       # one element per post\n'
            '    post_link = "a.card-link"       # the post\'s link inside it\n'
            "\n"
            f"  or: postwatch sources add {url} --selector listing_item=div.card --selector post_link=a.card-link")   # not a pytest test, despite the name
