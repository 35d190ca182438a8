"""The `postwatch` command's entry point, and the one-shot `postwatch check` that finds nothing.

A cron job that runs `postwatch check [--digest]` every few minutes mostly learns that nothing
changed: every source's first conditional GET answers 304. Before the full command line
(postwatch.cli: SQLAlchemy alone is 0.1 s and 25 MB of imports here, the app, the metrics) is
loaded, this module looks at the SQLite database with the standard library's sqlite3 and, when
the check can only be those conditional GETs, asks them with the lean client
(crawler.revalidate) and records the quiet checks in one transaction. Anything else goes to the
full command, which does what it always did:

- another command, `--full`, a source not in the database, a PostgreSQL database, a schema
  revision other than the newest, [[routes]] or a DKIM key (the full start-up checks them), a
  config whose [[sources]] differ from the database's (the full start-up syncs them);
- a source whose check must do more than its first GETs: its baseline, a full sweep due, a post
  revisit due, an edit or a removal to confirm, held events, a degraded mark, failed checks
  before this one (the full check tells when a source stops failing), no stored validators or
  robots.txt for its first URLs;
- any answer but 304 (a new post, an error, a timeout): the full check then starts with the
  answers already received (Revalidator.adopt), so no URL is asked twice;
- `--digest` with a digest to compose or a message due: the full digest step runs.

The rules mirror Checker._sweep, postwatch.checker.check_kind and Store.crawl_states; tests/test_oneshot.py
checks that both paths agree.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from postwatch import preloaded

# SQLAlchemy's SQLite DateTime: how the columns below are stored (naive UTC), and compared.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

def main(argv: list[str] | None = None) -> int:
    """`postwatch ...`: a quick no-change `check` when it can be one, else the full command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    request = _check_request(argv)
    if request is not None:
        try:
            status = quick_check(*request)
        except KeyboardInterrupt:
            return 130              # as the full command
        if status is not None:
            preloaded.discard()
            return status
    from postwatch.cli import main as full_main

    return full_main(argv)


def _check_request(argv: list[str]) -> tuple[str | None, list[str], bool] | None:
    """(config file, source names, --digest) of a plain `check` command line; None for any other
    (the full parser deals with it, errors and --help included)."""
    config, args = None, list(argv)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("--config", "-c") and args:
            config = args.pop(0)
        elif option.startswith("--config="):
            config = option.split("=", 1)[1]
        elif option in ("-v", "-vv", "-vvv", "--verbose"):
            continue
        elif option == "--log-format" and args and args[0] in ("text", "json"):
            args.pop(0)
        elif option in ("--log-format=text", "--log-format=json"):
            continue
        else:
            return None
    if not args or args[0] != "check":
        return None
    names, digest = [], False
    for arg in args[1:]:
        if arg == "--digest":
            digest = True
        elif arg.startswith("-") or arg in names:
            return None
        else:
            names.append(arg)
    return config, names, digest


def quick_check(config_path: str | None, names: list[str], digest: bool) -> int | None:
    """The exit status of a check that ended with its first conditional GETs, or None: the full
    command must run (possibly with the answers already received handed to it)."""
    os.umask(0o077)
    from postwatch.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError:
        return None         # the full command prints the problems
    preloaded.keep(config_path, config)     # the full command takes it, if one follows
    path = _sqlite_file(config)
    if path is None or config.routes or (config.smtp.host and config.dkim.selector):
        return None
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        return _quick_check(db, path, config, names, digest)
    except sqlite3.Error:
        return None         # a locked or odd database: the full command says what is wrong
    finally:
        db.close()


def _quick_check(db, path: str, config, names: list[str], digest: bool) -> int | None:
    db.execute("PRAGMA busy_timeout=5000")
    db.row_factory = _dict_row
    if _schema_revision(db) != head_revision() or not _in_step(db, config):
        return None
    rows = {r["name"]: r for r in db.execute("SELECT * FROM sources WHERE enabled = 1 ORDER BY id")}
    names = names or list(rows)
    if not names or any(name not in rows for name in names):
        return None
    now = datetime.now(timezone.utc)
    chosen = [rows[name] for name in names]
    if not _all_plain(db, chosen, config, now):
        return None
    plans = _plans(db, chosen, now)
    if plans is None:
        return None
    from crawler.revalidate import revalidator
    from postwatch.config import scrapy_overrides

    if sys.stderr.isatty():
        for name in names:
            print(f"checking {name} …", file=sys.stderr, flush=True)
    client = revalidator(config.crawl.parallel_sources)
    results = client.revalidate_blocking(plans, scrapy_overrides(config))
    if not all(r.settled for r in results.values()):
        client.adopt(results)       # the full check goes on from these answers
        return None
    try:
        _record_quiet_checks(db, names, [name for name in names if results[name].listing_read], now)
    except Exception:
        client.adopt(results)       # the full command records them (and says why it cannot)
        raise
    for name in names:
        report = results[name].settled_report()
        # describe_summary's line for a check without changes (postwatch.app)
        print(f"{name}: no changes ({report.requests} requests, {report.response_bytes} bytes)")
    if digest:
        if _digest_work(db, path, now):
            from postwatch.app import App

            with App.open(config) as app:
                queued, stats = app.mailer.send_digests()
        else:
            queued, stats = [], None
        print(f"digest: {len(queued)} composed, {stats.sent if stats else 0} sent, "
              f"{stats.retried if stats else 0} waiting for a retry, {stats.failed if stats else 0} failed")
    sys.stdout.flush()
    return 0


def _record_quiet_checks(db, names: list[str], listing_read: list[str], now: datetime) -> None:
    """Store.record_quiet_checks in one transaction: the checks' times (as the sweep began), and
    when the listing was read for those that read it."""
    stamp = _stamp(now)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"UPDATE sources SET last_check_at = ?, last_success_at = ?, last_error = NULL, "
                   f"consecutive_failures = 0 WHERE name IN ({','.join('?' * len(names))})", [stamp, stamp, *names])
        if listing_read:
            db.execute(f"UPDATE sources SET listing_read_at = ? WHERE name IN ({','.join('?' * len(listing_read))})",
                       [stamp, *listing_read])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# --------------------------------------------------------------------------------------------
# What the full start-up would change, and what a check would do beyond its first GETs
# --------------------------------------------------------------------------------------------
def _sqlite_file(config) -> str | None:
    """The SQLite file of the config's database (state.database.database_url's rule), if it is one
    that exists; None for any other database."""
    database = config.database
    if "://" in database:
        if not database.startswith("sqlite:///") or "?" in database:
            return None
        database = database[len("sqlite:///"):]
        file = Path(database)
    else:
        file = (config.base_dir / database).resolve()
    if not file.is_file() or file.stat().st_size == 0:
        return None
    return str(file)


def head_revision() -> str | None:
    """The newest schema revision, from the migration files (state.database.Database.revisions'
    rule), found without importing the `state` package (SQLAlchemy)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("state")
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(list(spec.submodule_search_locations)[0]) / "migrations" / "versions"
    graph: dict[str, set[str]] = {}
    for script in versions.glob("*.py"):
        if script.name.startswith("_"):
            continue
        text = script.read_text(encoding="utf-8")
        revision = re.search(r"^revision(?:\s*:[^=\n]*)?\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        revises = re.search(r"^down_revision(?:\s*:[^=\n]*)?\s*=\s*(.*)$", text, re.MULTILINE)
        if revision is None or revises is None:
            return None
        graph[revision.group(1)] = set(re.findall(r"['\"]([^'\"]+)['\"]", revises.group(1)))
    heads = set(graph) - {parent for parents in graph.values() for parent in parents}
    return heads.pop() if len(heads) == 1 else None


def _schema_revision(db) -> str | None:
    try:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:
        return None
    return row["version_num"] if row else None


def _in_step(db, config) -> bool:
    """Whether the database holds the config's sources and routes as App.open would leave them
    (Store.sync_sources, Store.sync_routes): nothing to write before the check."""
    rows = {r["name"]: r for r in db.execute(
        "SELECT name, url, kind, feed_url, sitemap_url, selectors, title, origin, enabled FROM sources")}
    configured = set()
    for source in config.sources:
        configured.add(source.name)
        row = rows.get(source.name)
        wanted = {"url": source.url, "kind": source.kind, "feed_url": source.feed_url, "sitemap_url": source.sitemap_url,
                  "selectors": json.dumps(dict(source.selectors or {}), sort_keys=True), "title": source.title,
                  "origin": "config", "enabled": 1}
        if row is None or any(row[column] != value for column, value in wanted.items()):
            return False
    if any(row["origin"] == "config" and row["enabled"] and name not in configured for name, row in rows.items()):
        return False
    return db.execute("SELECT 1 FROM subscribers WHERE origin = 'config' LIMIT 1").fetchone() is None


def _all_plain(db, chosen: list[dict], config, now: datetime) -> bool:
    """Whether every chosen source's check is its first conditional GETs and nothing more (the
    lean plan of Checker._sweep): baseline done, no full sweep due, nothing held, pending, due for a
    revisit or a removal to confirm, no failures to tell the end of."""
    crawl = config.crawl
    for row in chosen:
        if not row["baseline_done"] or row["degraded"] or (row["consecutive_failures"] or 0):
            return False
        last = _time(row["last_full_sweep_at"])
        if last is not None and now - last >= crawl.full_sweep_every:
            return False
    ids = [row["id"] for row in chosen]
    marks = ",".join("?" * len(ids))
    if db.execute(f"SELECT 1 FROM events WHERE status = 'held' AND source_id IN ({marks}) LIMIT 1", ids).fetchone():
        return False
    if db.execute(f"SELECT 1 FROM edit_candidates JOIN posts ON posts.id = edit_candidates.post_id "
                  f"WHERE posts.source_id IN ({marks}) AND posts.status != 'removed' AND "
                  f"edit_candidates.content_hash IS NOT NULL AND edit_candidates.volatile_since IS NULL LIMIT 1",
                  ids).fetchone():
        return False
    removal_due = _stamp(now - crawl.removal_confirm_after)
    if db.execute(f"SELECT 1 FROM posts WHERE source_id IN ({marks}) AND status = 'gone_pending' "
                  f"AND gone_since <= ? LIMIT 1", [*ids, removal_due]).fetchone():
        return False
    if crawl.revisits_per_check > 0:        # state.changes.revisit_cutoffs, Store._revisits_due
        recent, month = now - crawl.revisit_every_check_under, now - crawl.revisit_daily_under
        day_ago, older = now - timedelta(days=1), now - crawl.revisit_older_every
        if db.execute(f"SELECT 1 FROM posts WHERE source_id IN ({marks}) AND status != 'removed' AND "
                      "(published_at > ? OR (published_at > ? AND coalesce(page_checked_at, first_seen_at) <= ?) "
                      "OR coalesce(page_checked_at, first_seen_at) <= ?) LIMIT 1",
                      [*ids, _stamp(recent), _stamp(month), _stamp(day_ago), _stamp(older)]).fetchone():
            return False
    return True


def _plans(db, chosen: list[dict], now: datetime):
    """The lean plans of the chosen sources (postwatch.checker.plan_check without posts: none is needed when the
    check is its first GETs), or None when one cannot be asked by the lean client."""
    from crawler.plan import CrawlPlan, SourceSpec, feed_alone, feed_failed_key, kind_traits
    from crawler.revalidate import first_urls

    ids = [row["id"] for row in chosen]
    marks = ",".join("?" * len(ids))
    validators: dict[int, dict] = {i: {} for i in ids}
    for r in db.execute(f"SELECT source_id, url, etag, last_modified FROM http_validators WHERE source_id IN ({marks})",
                        ids):
        validators[r["source_id"]][r["url"]] = (r["etag"], r["last_modified"])
    plans = []
    origins: dict[int, set[str]] = {}
    for row in chosen:
        if kind_traits(row["kind"]) is None:
            return None
        feed = row["feed_url"] or row["discovered_feed_url"]
        plan = CrawlPlan(
            source=SourceSpec(name=row["name"], url=row["url"], kind=row["kind"], feed_url=feed,
                              sitemap_url=row["sitemap_url"], selectors=json.loads(row["selectors"] or "{}"),
                              feed_discovered=not row["feed_url"] and bool(row["discovered_feed_url"])),
            validators={url: v for url, v in validators[row["id"]].items()
                        if url in (row["url"], feed, row["sitemap_url"]) or (feed and url == feed_failed_key(feed))},
            feed_alone=feed_alone(row["kind"], row["feed_url"], row["discovered_feed_url"],
                                  _time(row["listing_read_at"]), now))
        urls = first_urls(plan)
        if not urls:
            return None
        origins[row["id"]] = {_origin(url) for url in (row["url"], feed) if url}
        plans.append(plan)
    wanted = sorted(set().union(*origins.values()))
    robots = {r["origin"]: (bytes(r["body"]), _time(r["fetched_at"])) for r in db.execute(
        f"SELECT origin, body, fetched_at FROM robots_cache WHERE origin IN ({','.join('?' * len(wanted))})", wanted)}
    for plan, row in zip(plans, chosen):
        plan.robots = {o: robots[o] for o in origins[row["id"]] if o in robots}
    return plans


def _digest_work(db, path: str, now: datetime) -> bool:
    """Whether `--digest` has anything to do: a subscriber behind the newest event
    (Store.digests_pending), a message due (Store.due_channels) or accepted mail to reconcile
    (state.accepted)."""
    if db.execute("SELECT 1 FROM subscribers WHERE status = 'active' AND cursor < "
                  "coalesce((SELECT value FROM counters WHERE name = 'event_seq'), 0) LIMIT 1").fetchone():
        return True
    stamp = _stamp(now)
    if db.execute("SELECT 1 FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? AND "
                  "(claimed_until IS NULL OR claimed_until <= ?) LIMIT 1", [stamp, stamp]).fetchone():
        return True
    journal = Path(f"{path}.accepted")
    return journal.exists() or any(journal.parent.glob(f"{journal.name}.*.taken"))


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _dict_row(cursor, row) -> dict:
    return {column[0]: value for column, value in zip(cursor.description, row)}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(tzinfo=None).strftime(SQLITE_TIME)


def _time(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
