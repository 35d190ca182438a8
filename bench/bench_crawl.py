"""Crawl figures against the local replicas (politeness delays off, loopback).

    .venv/bin/python bench/bench_crawl.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.plan import CrawlPlan, SourceSpec  # noqa: E402
from crawler.run import crawl  # noqa: E402
from crawler.runtime import run  # noqa: E402
from postwatch.testing.replica import BlogReplica, WordPressReplica, generate_posts  # noqa: E402

FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False}


def crawled(plan):
    return run(lambda: crawl(plan, FAST))


def after(source, first, **extra):
    return CrawlPlan(source=source, known_urls={p.url for p in first.posts}, validators=first.validators,
                     robots=first.robots, **extra)


def main() -> None:
    with BlogReplica() as site:
        source = SourceSpec(name="link", url=site.blog_url, kind="link")
        first = crawled(CrawlPlan(source=source, baseline=True))
        quiet = crawled(after(source, first))
        print(f"no-change check of the LiNK replica: {quiet.requests} HTTP request(s), {quiet.response_bytes} body bytes "
              f"(target: 1 request, 0 bytes)")
        for n in (1, 5):
            for k in range(n):
                site.add_post(f"Bench new {n}-{k}", body_paragraphs=["Body."])
            report = crawled(after(source, first))
            print(f"{n} new posts on the HTML-only LiNK replica: {report.requests} requests (target <= {1 + n})")
            first = crawled(CrawlPlan(source=source, baseline=True))
    with WordPressReplica() as blog:
        source = SourceSpec(name="wp", url=blog.blog_url, kind="feed", feed_url=f"{blog.base_url}/feed/")
        first = crawled(CrawlPlan(source=source, baseline=True))
        for k in range(3):
            blog.add_post(f"Feed bench {k}", body_paragraphs=["A body long enough to count as full content. " * 10])
        report = crawled(after(source, first))
        print(f"3 new posts on a feed that carries content: {report.requests} request(s) (target 1)")
    with BlogReplica(posts=generate_posts(1000)) as big:
        source = SourceSpec(name="big", url=big.blog_url, kind="link")
        started = time.perf_counter()
        report = crawled(CrawlPlan(source=source, baseline=True))
        seconds = time.perf_counter() - started
        print(f"baseline of a 1000-post HTML-only replica: {len(report.posts)} posts, {report.requests} requests "
              f"(listing pages only: {big.count('/blog/') == 0}), {seconds:.2f} s (target <= 3 s)")
    sweep_of_sources(100)


def sweep_of_sources(count: int) -> None:
    """A no-change check of `count` sources inside one daemon-style process (App.check_many)."""
    from postwatch.config import Config, SourceConfig
    from postwatch.app import App

    sites = [BlogReplica().start() for _ in range(count)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = Config(path=Path(folder) / "postwatch.toml", database="state.db",
                            sources=[SourceConfig(name=f"s{i}", url=s.blog_url, kind="link") for i, s in enumerate(sites)])
            config.crawl.download_delay, config.crawl.autothrottle = 0, False
            app = App.open(config)
            names = [f"s{i}" for i in range(count)]
            run(lambda: app.checker.check_many(names))
            for s in sites:
                s.clear_log()
            started = time.perf_counter()
            summaries = run(lambda: app.checker.check_many(names))
            seconds = time.perf_counter() - started
            requests = sum(len(s.requests) for s in sites)
            assert all(x.ok and x.not_modified for x in summaries)
            app.close()
        print(f"no-change sweep of {count} sources in one process: {seconds:.2f} s wall, {requests} requests "
              f"({config.crawl.parallel_sources} sources in parallel)")
    finally:
        for s in sites:
            s.stop()


if __name__ == "__main__":
    main()
