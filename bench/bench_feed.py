"""Feed figures: the Atom feed of a source with 10,000 published events (7,000 new posts, 2,500
edits with their diffs, 500 removals), made the way the daemon and `postwatch feed` make it
(App.feed: the store's query, the rendering of each change, the XML).

    .venv/bin/python bench/bench_feed.py [--events 10000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.items import PostItem  # noqa: E402

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
BLOG = "https://libertyinnorthkorea.org/blog"
PARAGRAPHS = ["North Korean refugees who reach safety start new lives with the support of people around the world.",
              "Each rescue is a journey of thousands of miles through China and Southeast Asia, undertaken at great risk.",
              "Your support makes these rescues possible, and helps refugees resettle and pursue their goals."]


def page(n: int, edited: bool = False) -> PostItem:
    first = f"Rescue story number {n}: " + ("a new opening, rewritten by the editors. " if edited else "") + PARAGRAPHS[0]
    body = "".join(f"<p>{text}</p>" for text in [first, *PARAGRAPHS[1:]])
    return PostItem(url=f"{BLOG}/rescue-story-{n}", title=f"Rescue story number {n}", published=NOW, body_html=body,
                    summary=None, origin="page")


def seed(store, events: int) -> None:
    """`events` published events through the store's own rules: new posts (a flood, held, then
    released), edits seen twice (held and released too: more than 30 % of the posts), removals."""
    from state import CheckInput

    new, edits = events * 7 // 10, events // 4
    removals = events - new - edits
    base = [page(n) for n in range(-100, 0)]
    store.apply_check("link", CheckInput(posts=base, baseline=True), NOW)
    posts = base + [page(n) for n in range(new)]
    store.apply_check("link", CheckInput(posts=posts), NOW + timedelta(minutes=1))
    store.release_source("link")
    gone = {f"{BLOG}/rescue-story-{n}": 404 for n in range(new - removals, new)}
    for minutes in (2, 3):          # removed after two 404s
        store.apply_check("link", CheckInput(posts=[], gone=gone), NOW + timedelta(minutes=minutes))
    store.release_source("link")
    # Last, so the newest 50 (the default feed) are edits, the costliest entries to render.
    edited = [page(n, edited=True) for n in range(edits)]
    for minutes in (4, 5):          # an edit is published when a second fetch sees it again
        store.apply_check("link", CheckInput(posts=edited), NOW + timedelta(minutes=minutes))
    store.release_source("link")


def main() -> None:
    import feedparser

    from postwatch.app import App
    from postwatch.config import Config, SourceConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Config(path=Path(folder) / "postwatch.toml", database="bench.db",
                        sources=[SourceConfig(name="link", url=BLOG, kind="link", title="Liberty in North Korea")])
        config.crawl.removal_confirm_after = timedelta(0)
        app = App.open(config)
        started = time.perf_counter()
        seed(app.store, args.events)
        seeded = time.perf_counter() - started
        kinds = {}
        for event in app.store.feed_events("link", args.events + 1):
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
        assert sum(kinds.values()) == args.events, kinds

        config.feeds.entries = args.events
        app.feed("link")                          # warm: templates compiled, first connection made
        started = time.perf_counter()
        events = app.store.feed_events("link", args.events)
        queried = time.perf_counter() - started
        started = time.perf_counter()
        whole = app.feed("link")
        made = time.perf_counter() - started
        parsed = feedparser.parse(whole.body)
        assert parsed.bozo == 0 and len(parsed.entries) == len(events) == args.events, parsed.get("bozo_exception")
        del parsed, events          # millions of objects: every garbage collection would walk them

        config.feeds.entries = 50
        times = []
        for _ in range(20):
            started = time.perf_counter()
            small = app.feed("link")
            times.append(time.perf_counter() - started)
        app.close()
    print(f"{args.events:,} events ({', '.join(f'{n:,} {kind}' for kind, n in sorted(kinds.items()))}; seeded in "
          f"{seeded:.1f} s): a feed of all {whole.entries:,} entries in {made:.2f} s "
          f"(the database query alone {queried:.2f} s), {len(whole.body) / 1e6:.1f} MB, feedparser bozo 0; "
          f"the default feed of the newest 50 (edits with their diffs) from the same database: median {statistics.median(times) * 1000:.1f} ms, "
          f"{len(small.body) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
