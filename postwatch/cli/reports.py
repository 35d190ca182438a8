"""`postwatch history` and `postwatch status`: what changed lately, and how each source, the
subscribers, the outbox and the cluster's queue stand. Both read the database only."""
from __future__ import annotations

import argparse
import json
from datetime import datetime

from postwatch.app import App
from postwatch.cli.common import Commands, command
from postwatch.config import Config
from postwatch.subscribers import describe_statuses

HISTORY_LIMIT_MAX = 10_000


def add_parser(commands: Commands) -> None:
    history = command(commands, "history", show_history, "recent change events, newest first", examples="""\
  postwatch history
  postwatch history link --limit 100
""")
    history.add_argument("source", nargs="?", help="only this source")
    history.add_argument("--limit", type=history_limit, default=30, help=f"how many events (1 to {HISTORY_LIMIT_MAX:,}; default 30)")

    command(commands, "status", show_status, "per source: posts, last check, last success, last error, degraded")


def history_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= HISTORY_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {HISTORY_LIMIT_MAX:,}")
    return value


def show_history(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        events = app.store.history(args.source, limit=args.limit)
        for e in events:
            state = "" if e.status == "published" else f" [{e.status}]"
            print(f"{e.created_at:%Y-%m-%d %H:%M} {e.source:<12} {e.kind:<8} {e.title} <{e.url}>{state}")
        if not events:
            print("no events yet")
        return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


def show_status(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        for s in app.store.source_status():
            flag = f"DEGRADED ({s.degraded_reason}; {s.held_events} held)" if s.degraded else "ok"
            if s.consecutive_failures:
                flag = f"FAILING ({s.consecutive_failures} check{'' if s.consecutive_failures == 1 else 's'} in a row)" + ("" if flag == "ok" else f", {flag}")
            print(f"{s.name}: {s.url}\n  posts {s.posts}, last check {_when(s.last_check_at)}, last success "
                  f"{_when(s.last_success_at)}, {flag}")
            if s.last_error:
                print(f"  last error: {s.last_error} ({s.consecutive_failures} in a row)")
            if s.volatile_posts:
                print(f"  {s.volatile_posts} volatile post(s) (content changes on every fetch; edits not mailed):")
                for _, url, since in app.store.volatile_posts(s.name):
                    print(f"    {url} (since {_when(since)})")
        counts = app.store.subscriber_counts()
        print(f"subscribers: {sum(counts.values())} ({describe_statuses(counts)})")
        _print_outbox_and_queue(app)
        return 0


def _print_outbox_and_queue(app: App) -> None:
    outbox = app.store.outbox_stats()
    print(f"outbox: {outbox.get('pending', 0)} pending, {outbox.get('sent', 0)} sent, {outbox.get('failed', 0)} failed")
    by_channel = app.store.outbox_stats_by_channel()
    if set(by_channel) - {"email"}:
        for channel, counts in sorted(by_channel.items()):
            print(f"  {channel}: {counts.get('pending', 0)} pending, {counts.get('sent', 0)} sent, "
                  f"{counts.get('failed', 0)} failed")
    queue = None if app.store.is_sqlite else app.store.queue_status()
    if queue is not None:
        print(f"cluster: {queue.workers_alive} workers alive, jobs {queue.todo} waiting, {queue.doing} running, "
              f"{queue.failed} failed")
        for job_id, task, job_args in app.store.failed_jobs(5) if queue.failed else []:
            print(f"  failed job {job_id}: {task.rsplit('.', 1)[-1]} {json.dumps(job_args, sort_keys=True)[:200]}")
