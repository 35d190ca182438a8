"""The one component that turns what a crawl's parts report into one CrawlReport per source.

The downloader middlewares never see a report: they count into `crawler.stats` under
`source/<name>/...` and send postwatch's signals (crawler.signals); posts arrive as scraped
items. ReportCollector listens to all of it, keyed by the source each request carries in
`request.meta["source"]`, so it serves one crawl of one source as well as one crawl of many.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.http import Response

from crawler.signals import exchange_done, robots_txt_fetched, source_stat, validators_received
from crawler.items import PostItem
from crawler.plan import CrawlPlan, CrawlReport, Validators
from state.records import MAX_EXCHANGES, ORIGIN_RANK, Exchange


class ReportCollector:
    """Connected to a crawler before it crawls; fills `reports`, one per source name. Keep a
    reference to it while the crawl runs: Scrapy holds signal receivers weakly."""

    def __init__(self, crawler: Crawler, plans: Iterable[CrawlPlan]):
        self.crawler = crawler
        self.reports = {plan.source.name: CrawlReport(source_name=plan.source.name, baseline=plan.baseline)
                        for plan in plans}
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.validators_received, signal=validators_received)
        crawler.signals.connect(self.robots_txt_fetched, signal=robots_txt_fetched)
        crawler.signals.connect(self.exchange_done, signal=exchange_done)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    def item_scraped(self, item: PostItem, response: Response) -> None:
        """Feed and HTML results for one source merge by canonical URL; the richer origin wins
        and borrows what it lacks (a listing's date, a feed's summary)."""
        report = self.reports.get(response.meta.get("source"))
        if report is None:
            return
        current = report.posts_by_url.get(item.url)
        if current is None:
            report.posts_by_url[item.url] = item
            return
        better, other = (item, current) if ORIGIN_RANK[item.origin] >= ORIGIN_RANK[current.origin] else (current, item)
        better.published = better.published or other.published
        better.summary = better.summary or other.summary
        better.title = better.title or other.title
        report.posts_by_url[item.url] = better

    def validators_received(self, source: str | None, url: str, validators: Validators) -> None:
        report = self.reports.get(source)
        if report is not None:
            report.validators[url] = validators

    def robots_txt_fetched(self, source: str | None, origin: str, body: bytes, fetched_at: datetime) -> None:
        report = self.reports.get(source)
        if report is not None:
            report.robots[origin] = (body, fetched_at)

    def exchange_done(self, source: str | None, exchange: Exchange) -> None:
        report = self.reports.get(source)
        if report is not None and len(report.exchanges) < MAX_EXCHANGES:
            report.exchanges.append(exchange)

    def spider_closed(self) -> None:
        stats = self.crawler.stats
        for name, report in self.reports.items():
            report.requests = stats.get_value(source_stat(name, "request_count"), 0)
            report.response_bytes = stats.get_value(source_stat(name, "response_bytes"), 0)
            report.not_modified_count = stats.get_value(source_stat(name, "status_count/304"), 0)
