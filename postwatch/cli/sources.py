"""`postwatch sources`: add, list, test, release and remove the blogs postwatch watches.

Not imported here: crawler.run (Scrapy and Twisted, 0.5-1.2 s measured on a 2-core machine),
which only `sources test` and `sources add` need, when they run."""
from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from crawler.urls import is_http_url
from postwatch.app import App
from postwatch.cli.common import Commands, command, fail, group, run_async
from postwatch.config import ALL_SOURCES, Config, scrapy_overrides, selector_problem
from state import SourceRecord


def add_parser(commands: Commands) -> None:
    actions = group(commands, "sources", "add, list, test, release or remove sources")
    _add_parser(actions)
    command(actions, "list", list_sources, "list sources: name, kind, URL, feed and where each was added")
    _test_parser(actions)
    release = command(actions, "release", release_source, "publish the changes of a source held as suspect")
    release.add_argument("name")
    remove = command(actions, "remove", remove_source, "remove a source added with 'sources add'")
    remove.add_argument("name")


def _add_parser(actions: Commands) -> None:
    add = command(actions, "add", add_source, "add a blog by URL (feed and sitemap are discovered)", """\
Read the blog's first listing pages (as `sources test` does) and add it when posts were found.
Its first check records a baseline.""", """\
  postwatch sources add https://www.dailynk.com/english/ --name dailynk --title "Daily NK"
  postwatch sources add https://blog.example.org/ --selector listing_item=div.card --selector post_link=a.more
""")
    add.add_argument("url")
    add.add_argument("--name", help="short name (default: from the host name)")
    add.add_argument("--title", help="name shown in digests")
    add.add_argument("--feed", dest="feed_url", help="feed URL, when discovery does not find it")
    add.add_argument("--selector", action="append", default=[], metavar="KEY=CSS",
                     help="CSS selector override: listing_item, post_link, next_page, title, date, body, exclude")
    add.add_argument("--no-test", action="store_true", help="add without fetching the site first")


def add_source(args: argparse.Namespace, config: Config) -> int:
    from crawler.run import test_source

    selectors = {}
    for item in args.selector:
        key, sep, css = item.partition("=")
        if not sep:
            return fail(f"--selector {item!r} must be KEY=CSS")
        selectors[key.strip()] = css.strip()
    if not is_http_url(args.url):
        return fail(f"{args.url!r} is not an http(s) URL")
    name = args.name or urlsplit(args.url).hostname.removeprefix("www.").split(".")[0]
    for key, css in selectors.items():
        problem = selector_problem(key, css)
        if problem:
            return fail(f"source '{name}': --selector {problem}")
    if name == ALL_SOURCES:
        return fail(f"the name '{name}' is reserved for the feed of all sources (use --name)")
    with App.open(config) as app:
        if app.store.get_source(name):
            return fail(f"a source named '{name}' exists already (use --name)")
        record = SourceRecord(name=name, url=args.url, kind="auto", feed_url=args.feed_url, selectors=selectors,
                              title=args.title, origin="cli")
        if not args.no_test:
            report = run_async(test_source, args.url, app.crawl_settings)
            print(report.describe())
            if not report.ok:
                return fail(f"{name}: nothing added (use --no-test to add it anyway)", 1)
            record.kind = report.spec.kind
            record.feed_url = args.feed_url or report.spec.feed_url
            record.sitemap_url = report.spec.sitemap_url
            record.selectors = selectors or dict(report.spec.selectors or {})
        app.store.add_source(record)
        print(f"added source {name}: {args.url}; the first check records a baseline")
        return 0


def list_sources(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        for s in app.store.list_sources():
            extra = f" feed={s.feed_url}" if s.feed_url else ""
            print(f"{s.name:<20} {s.kind:<5} {s.url}{extra}  ({s.origin})")
        return 0


def _test_parser(actions: Commands) -> None:
    test = command(actions, "test", try_source, "show what would be extracted from a URL, storing nothing", """\
Read the blog's first listing pages (and its feed, if one is advertised) and show the feed, the
sitemap and the newest posts found. Nothing is stored and no database is opened.

exit status: 0 posts found; 1 none found or the site could not be read.""", """\
  postwatch sources test https://www.dailynk.com/english/
""")
    test.add_argument("url")


def try_source(args: argparse.Namespace, config: Config) -> int:
    from crawler.run import test_source

    report = run_async(test_source, args.url, scrapy_overrides(config))
    print(report.describe())
    return 0 if report.ok else 1


def release_source(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        if app.store.get_source(args.name) is None:
            return fail(f"no such source: {args.name}")
        count = app.store.release_source(args.name)
        print(f"{args.name}: released {count} held events; they go out with the next digest")
        return 0


def remove_source(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        record = app.store.get_source(args.name)
        if record is None:
            return fail(f"no such source: {args.name}")
        if record.origin == "config":
            return fail(f"source '{args.name}' comes from the config file; remove it there")
        app.store.remove_source(args.name)
        print(f"removed source {args.name}")
        return 0
