"""`postwatch feed` and `postwatch archive`: what the daemon serves (the Atom feeds of changes and
the web archive) written as static files, for a web server to serve. Both read the database only."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from postwatch.app import App
from postwatch.cli.common import Commands, command, fail
from postwatch.config import Config


def add_parser(commands: Commands) -> None:
    _feed_parser(commands)
    _archive_parser(commands)


def _feed_parser(commands: Commands) -> None:
    feed = command(commands, "feed", write_feed_command,
                   "the Atom feed of a source's changes (or of all sources), for static hosting", """\
Print (or write to FILE) the Atom feed the daemon serves at /feeds/SOURCE.atom: one entry per
new, edited (with the diff), removed or restored post, newest first, at most [feeds] entries.
Reads the database only.""", examples="""\
  postwatch feed link                         the LiNK blog's feed on standard output
  postwatch feed all -o /var/www/changes.atom every source's changes, for a web server to serve
""")
    feed.add_argument("source", metavar="SOURCE", help="a source's name, or 'all' for every source")
    feed.add_argument("-o", "--output", metavar="FILE",
                      help="write FILE (replaced in one step; a new file is readable by all) instead of standard output")


def write_feed_command(args: argparse.Namespace, config: Config) -> int:
    from digest.feed import UnknownFeed, write_feed

    with App.open(config, read_only=True) as app:
        try:
            atom = app.feed(args.source)
        except UnknownFeed as exc:
            return fail(str(exc), 1)
    if not args.output:
        sys.stdout.buffer.write(atom.body)
        sys.stdout.flush()
        return 0
    try:
        write_feed(Path(args.output), atom.body)
    except OSError as exc:
        return fail(f"{args.output}: cannot write the feed: {exc.strerror or exc}", 1)
    newest = f", the newest from {atom.updated:%Y-%m-%d %H:%M} UTC" if atom.updated else ""
    print(f"{args.output}: {args.source} feed written, {atom.entries} entries{newest}")
    return 0


def _archive_parser(commands: Commands) -> None:
    archive = command(commands, "archive", write_archive_command,
                      "write the web archive of changes as static files, for a web server to serve", """\
Write the archive the daemon serves at /archive/ into FOLDER: index.html, a page per source
and its older pages (SOURCE/index.html, SOURCE/before-SEQ/index.html), each day's edition
(d/ID/index.html) and the feed of editions (editions.atom). Serve FOLDER as /archive/ of the
site named by [unsubscribe] public_url (the pages link there, as the daemon's do). Files are
replaced one at a time, each in one step; a new file is readable by all. Reads the database only.""",
                      examples="""\
  postwatch archive -o /var/www/html/archive            the archive, in English
  postwatch archive -o /var/www/html/ko/archive --lang ko
""")
    archive.add_argument("-o", "--output", metavar="FOLDER", required=True, help="the folder to write (created if missing)")
    archive.add_argument("--lang", choices=("en", "ko"), default="en", help="the pages' language (default en)")


def write_archive_command(args: argparse.Namespace, config: Config) -> int:
    from digest.archive import write_static

    with App.open(config, read_only=True) as app:
        try:
            written = write_static(app.store, app.mailer.digest_settings(), Path(args.output), args.lang)
        except OSError as exc:
            return fail(f"{args.output}: cannot write the archive: {exc.strerror or exc}", 1)
    print(f"{args.output}: archive written, {written.pages} pages ({written.sources} sources, "
          f"{written.editions} editions)")
    return 0
