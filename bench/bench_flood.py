"""One check of a listing that suddenly links 10,000 new posts ([crawl] max_post_pages = 50).

    .venv/bin/python bench/bench_flood.py
"""
from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.plan import CrawlPlan, SourceSpec  # noqa: E402
from crawler.run import crawl  # noqa: E402
from crawler.runtime import run  # noqa: E402
from postwatch.testing.replica import BlogReplica, ReplicaPost, generate_posts  # noqa: E402

FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False}


def main() -> None:
    with BlogReplica(posts=generate_posts(40)) as site:
        source = SourceSpec(name="flood", url=site.blog_url, kind="link")
        first = run(lambda: crawl(CrawlPlan(source=source, baseline=True), FAST))
        flood = [ReplicaPost(slug=f"flood-{n}", title=f"Flood {n}", published=date(2030, 1, 1), body_paragraphs=["Short."])
                 for n in range(10_000)]
        with site._lock:
            site._posts[:0] = flood
            site.page_size, site.url_variants = 20_000, False
            site._tick()
        site.clear_log()
        plan = CrawlPlan(source=source, known_urls={p.url for p in first.posts}, validators=first.validators,
                         robots=first.robots)
        started = time.perf_counter()
        report = run(lambda: crawl(plan, FAST))
        seconds = time.perf_counter() - started
        print(f"listing with 10,000 new links: {len(report.posts)} posts reported, {report.requests} requests, "
              f"{site.count('/blog/')} post pages fetched, {seconds:.1f} s without politeness delays "
              f"(target: <= max_post_pages + a few requests); at the default 1 s delay the post pages cost "
              f"about {site.count('/blog/')} s, where fetching all 10,000 would cost about 2.8 h")


if __name__ == "__main__":
    main()
