"""Freshness figures (issue #16): what the revisit schedule costs the watched site per check, and
how soon edits are seen.

The blogs are served by a separate process on their own loopback addresses (the LiNK replica on
127.0.0.3, a 1,000-post blog on 127.0.0.4, a WordPress-style blog with a full-content feed on
127.0.0.5); the bench edits them through a control path of that process. Checks run in this
process with the application's clock moved forward an hour per check (the daemon's default
interval), so two weeks of checks take a minute, and every request is a real one.

    .venv/bin/python bench/bench_freshness.py [--days 14]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOGS = {"link": "127.0.0.3", "thousand": "127.0.0.4", "wp": "127.0.0.5"}


def serve() -> None:
    """The replica process: three blogs and a control path (/__control?blog=…&do=…&slug=…)."""
    from postwatch.testing.replica import BlogReplica, WordPressReplica, generate_posts

    sites = {"link": BlogReplica(host=BLOGS["link"]),
             "thousand": BlogReplica(generate_posts(1000), host=BLOGS["thousand"], url_variants=False),
             "wp": WordPressReplica(host=BLOGS["wp"])}

    def control(site):
        def handle(request):
            query = dict(p.split("=", 1) for p in request.query.split("&") if "=" in p)
            action = query.get("do")
            if action == "edit":
                post = site.post(query["slug"])
                site.edit_post(post.slug, body_paragraphs=[f"Corrected: {post.title} (figures revised).",
                                                           *post.body_paragraphs[1:]])
            elif action == "add":
                site.add_post(query["title"].replace("+", " "), date=date.today())
            elif action == "count":
                prefix = query.get("prefix", "/")
                return 200, {"Content-Type": "application/json"}, json.dumps(site.count(prefix)).encode()
            elif action == "clear":
                site.clear_log()
            posts = [{"slug": p.slug, "published": p.published.isoformat() if p.published else None} for p in site.posts]
            return 200, {"Content-Type": "application/json"}, json.dumps(posts).encode()
        return handle

    for site in sites.values():
        site.start()
        site.route("/__control", control(site))
    print(json.dumps({name: site.blog_url for name, site in sites.items()}), flush=True)
    sys.stdin.read()
    for site in sites.values():
        site.stop()


def ask(blog_url: str, **query) -> object:
    base = blog_url.split("/", 3)[:3]
    url = "/".join(base) + "/__control?" + "&".join(f"{k}={v}" for k, v in query.items())
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Clock:
    """The application's clock, moved by hand."""

    def __init__(self):
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def open_app(folder: Path, name: str, url: str, kind: str, clock: Clock):
    """The application on a database of its own, its clock set to the real time."""
    from postwatch.app import App
    from postwatch.config import Config, SourceConfig

    clock.now = datetime.now(timezone.utc)
    config = Config(path=folder / f"{name}.toml", database=f"{name}.db",
                    sources=[SourceConfig(name=name, url=url, kind=kind)])
    config.crawl.download_delay, config.crawl.autothrottle = 0, False
    config.crawl.confirm_edits_after = timedelta(0)
    return App.open(config)


def check(app, name: str, *, full=None):
    from crawler.runtime import run

    [summary] = run(lambda: app.checker.check_many([name], full=full))
    assert summary.ok, summary.error
    return summary


def hourly(app, name: str, clock: Clock, hours: int, until=None) -> list:
    summaries = []
    for _ in range(hours):
        clock.now += timedelta(hours=1)
        summaries.append(check(app, name))
        if until and until(summaries[-1]):
            break
    return summaries


def bench(days: int) -> None:
    replica = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        urls = json.loads(replica.stdout.readline())
        clock = Clock()
        with tempfile.TemporaryDirectory() as folder, mock.patch("postwatch.checker.utcnow", clock):
            folder = Path(folder)
            print(f"revisit schedule: under 2 days at every check, under 30 days daily, older weekly, at most 20 a "
                  f"check; {days} days of hourly checks")
            for name, kind in (("link", "webflow"), ("thousand", "webflow")):
                app = open_app(folder, name, urls[name], kind, clock)
                baseline = check(app, name)
                sweep = check(app, name, full=True)
                runs = hourly(app, name, clock, days * 24)
                requests = [s.requests for s in runs]
                week = sum(requests[-7 * 24:])
                print(f"  {name:<9} {baseline.posts_seen:>5} posts: requests per check mean {statistics.mean(requests):.2f}, "
                      f"max {max(requests)}, {sum(s.response_bytes for s in runs)} body bytes in {len(runs)} checks; "
                      f"{week} requests in the last week, against {7 * 24} for hourly listing checks alone plus "
                      f"{7 * (sweep.requests)} for daily full sweeps ({sweep.requests} each)")
                app.close()

            # Edit detection.
            app = open_app(folder, "wp", urls["wp"], "auto", clock)
            check(app, "wp")
            quiet = check(app, "wp")
            slug = ask(urls["wp"])[1]["slug"]
            ask(urls["wp"], do="edit", slug=slug)
            edited = check(app, "wp")
            print(f"  feed with full content: quiet check {quiet.requests} requests; an edit is mailed after 1 check "
                  f"({[e.kind for e in edited.events]}), {edited.requests} requests, no post page")
            app.close()

            app = open_app(folder, "link2", urls["link"], "webflow", clock)
            check(app, "link2")
            check(app, "link2", full=True)
            ask(urls["link"], do="add", title="A+new+rescue")
            check(app, "link2")
            fresh = ask(urls["link"])[0]["slug"]
            ask(urls["link"], do="edit", slug=fresh)
            recent = check(app, "link2")
            print(f"  LiNK replica, post under 2 days old edited: mailed after 1 check ({[e.kind for e in recent.events]}), "
                  f"{recent.requests} requests")
            dated = [p for p in ask(urls["link"]) if p["published"]]
            oldest = min(dated, key=lambda p: p["published"])
            ask(urls["link"], do="edit", slug=oldest["slug"])
            runs = hourly(app, "link2", clock, 9 * 24, until=lambda s: s.events)
            found = runs[-1].events
            print(f"  LiNK replica, post from {oldest['published']} edited: mailed after {len(runs)} hourly checks "
                  f"({len(runs) / 24:.1f} days; its revisit period is 7 days; {[e.kind for e in found]}), "
                  f"{statistics.mean(s.requests for s in runs):.2f} requests per check meanwhile")
            app.close()
    finally:
        replica.stdin.close()
        replica.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
    else:
        bench(args.days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
