"""`postwatch check`: one check of every source (or the named ones) now."""
from __future__ import annotations

import argparse
import sys

from postwatch.app import App, describe_summary
from postwatch.cli.common import Commands, command, fail, run_async
from postwatch.config import Config


def add_parser(commands: Commands) -> None:
    check = command(commands, "check", check_sources, "check sources once now and print what changed", """\
Check every source (or the named ones) once and print one line per source, then one line per
change. The first check of a source records a baseline and reports no new posts.

exit status: 0 every source checked; 1 a source failed (one line each on stderr).""", """\
  postwatch check                 every source
  postwatch check link --full     also re-read every known post page of `link` for edits and removals
  postwatch check --digest        and then send the digests that are due
""")
    check.add_argument("sources", nargs="*", metavar="SOURCE", help="source names (default: all)")
    check.add_argument("--full", action="store_true", help="also re-check every known post page (conditional requests) for edits and removals")
    check.add_argument("--digest", action="store_true", help="send pending digests afterwards")


def check_sources(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        app.checker.log_failures = False
        names = args.sources or [s.name for s in app.store.list_sources()]
        unknown = [n for n in names if app.store.get_source(n) is None]
        if unknown:
            return fail(f"no such source: {', '.join(unknown)}")
        progress = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
        summaries = run_async(app.checker.check_many, names, full=True if args.full else None, progress=progress)
        for summary in summaries:
            if summary.ok:
                print(describe_summary(summary))
                for event in summary.events:
                    print(f"  {event.kind:<8} {event.title} <{event.url}>")
            else:
                print(f"postwatch: {summary.error}", file=sys.stderr)
        if args.digest:
            queued, stats = app.mailer.send_digests()
            print(f"digest: {len(queued)} composed, {stats.sent} sent, {stats.retried} waiting for a retry, {stats.failed} failed")
        return 0 if all(s.ok for s in summaries) else 1
