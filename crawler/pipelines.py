"""Item pipeline: the crawl's posts, one per canonical URL, into the crawl report."""
from __future__ import annotations

from crawler.items import PostItem
from crawler.middlewares import CrawlerBound
from state.records import ORIGIN_RANK


class CollectPostsPipeline(CrawlerBound):
    """Feed and HTML results for one source merge by canonical URL; the richer origin wins and
    borrows what it lacks (a listing's date, a feed's summary)."""

    def process_item(self, item: PostItem):
        report = self.crawler.spider.report
        current = report.posts_by_url.get(item.url)
        if current is None:
            report.posts_by_url[item.url] = item
            return item
        better, other = (item, current) if ORIGIN_RANK[item.origin] >= ORIGIN_RANK[current.origin] else (current, item)
        better.published = better.published or other.published
        better.summary = better.summary or other.summary
        better.title = better.title or other.title
        report.posts_by_url[item.url] = better
        return item
