"""`postwatch digest`: compose and deliver pending digests; `digest preview`: the HTML one would be.

Not imported here: digest.sender (the rendering stack: Jinja2, css-inline, nh3), which only
`digest preview` needs in this process."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from postwatch.app import App
from postwatch.cli.common import Commands, Replaced, command, fail
from postwatch.config import Config


def add_parser(commands: Commands) -> None:
    digest = command(commands, "digest", send_digests, "compose and send (or write) pending digests", """\
Compose a digest for every subscriber with pending changes and deliver it: through SMTP when
[smtp] host is set, as an .eml file in the outbox folder when not, or through the channel named
by [delivery] channel. Messages that could not be sent stay queued and are retried.

exit status: 0 everything delivered; 1 a message is waiting for a retry or failed.""", """\
  postwatch digest                              every subscriber with pending changes
  postwatch digest --subscriber ada@example.org only her
  postwatch digest preview digest.html          the HTML a subscriber would get, nothing sent
""")
    digest.add_argument("--subscriber", metavar="ADDRESS", help="only this subscriber")
    digest.add_argument("--preview", action=Replaced, instead="postwatch digest preview FILE [--subscriber ADDRESS]")
    _preview_parser(digest.add_subparsers(metavar="ACTION"))


def send_digests(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        ids = None
        if args.subscriber:
            subscriber = app.store.get_subscriber(args.subscriber)
            if subscriber is None:
                return fail(f"no subscriber {args.subscriber}")
            ids = [subscriber.id]
        queued, stats = app.mailer.send_digests(ids)
        print(f"digest: {len(queued)} composed, {stats.sent} delivered {_delivered_via(stats, config)}, "
              f"{stats.retried} waiting for a retry, {stats.failed} failed")
        return 0 if stats.failed == 0 and stats.retried == 0 else 1


def _delivered_via(stats, config: Config) -> str:
    """Where the messages went: "via SMTP host:port", "by webhook", or per channel
    "(1 via SMTP host:port, 2 by webhook)"."""
    kinds = stats.sent_by_channel
    if set(kinds) <= {"email"}:
        return f"via {config.describe_delivery()}"
    parts = [f"{count} via {config.describe_delivery()}" if kind == "email" else f"{count} by {kind}"
             for kind, count in sorted(kinds.items())]
    return parts[0].split(" ", 1)[1] if len(parts) == 1 else f"({', '.join(parts)})"


def _preview_parser(actions: Commands) -> None:
    preview = command(actions, "preview", preview_digest, "write exactly the HTML a subscriber would get, sending nothing", """\
Write the HTML digest a subscriber would get now to FILE (only the account postwatch runs as can
read it). Their pending changes, or the most recent ones when nothing is pending. Reads the
database only: nothing is queued, sent or marked.""", """\
  postwatch digest preview digest.html
  postwatch digest preview --subscriber ada@example.org ada.html
""")
    preview.add_argument("file", metavar="FILE")
    # SUPPRESS: `digest --subscriber A preview F` keeps A instead of this parser's default.
    preview.add_argument("--subscriber", metavar="ADDRESS", default=argparse.SUPPRESS,
                         help="whose digest (default: the first active subscriber)")


def preview_digest(args: argparse.Namespace, config: Config) -> int:
    from digest.sender import preview

    with App.open(config, read_only=True) as app:
        if args.subscriber and app.store.get_subscriber(args.subscriber) is None:
            return fail(f"no subscriber {args.subscriber}")
        path = preview(app.store, app.mailer.digest_settings(), args.subscriber, Path(args.file), datetime.now(timezone.utc),
                       app.sources.filters())
        print(f"preview written to {path}")
        return 0
