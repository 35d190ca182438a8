"""The `postwatch` command line.

One module per command group, each declaring its commands' parsers (`add_parser`) next to their
handlers; GROUPS below lists them in the order `postwatch --help` shows them. Every command is
bound to its handler with `set_defaults(handler=...)`: a handler takes the parsed arguments and
the config and returns the exit status. Handlers print; errors from the layers below are turned
into one line here and in the handlers, nowhere else.
"""
from __future__ import annotations

import argparse
import os
import sys

from crawler.urls import LINK_BLOG_URL
from digest.errors import TemplateProblem
from postwatch import __version__, preloaded
from postwatch.cli import (check, config_file, demo, digest, dkim, operators, publish, reports, runtime, sources,
                           subscribers, webhook)
from postwatch.cli.common import OneLineErrorParser
from postwatch.cli.logs import setup_logging
from postwatch.config import CONFIG_ENV, LOG_FORMATS, Config, ConfigError, load_config
from state import StorageError, database_error_types, describe_error

__all__ = ["build_parser", "main"]

# The command groups, in the order of `postwatch --help`: each module's add_parser(commands)
# adds its commands.
GROUPS = (check, digest, runtime, subscribers, sources, operators, reports, publish, config_file, webhook, dkim, demo)

DESCRIPTION = f"""\
postwatch watches blogs for new, edited and removed posts and emails subscribers a digest.

With no config file it watches the Liberty in North Korea blog
({LINK_BLOG_URL}), keeps its state in ./postwatch.db (SQLite) and, until an SMTP
server is configured, writes each digest as an .eml file into ./outbox.

Config: --config FILE, else ${CONFIG_ENV}, else ./postwatch.toml if present.
`postwatch config example` prints every setting, commented. `postwatch COMMAND --help` tells
more about each command.
"""

EPILOG = """\
examples:
  postwatch check                      one check of every source; prints what changed
  postwatch subscribers add ada@example.org --cadence daily --at 08:00 --tz Europe/London
  postwatch digest                     compose and send (or write) pending digests now
  postwatch digest preview digest.html write the HTML a subscriber would get
  postwatch run                        the daemon: checks, digests, health on /healthz
  postwatch sources test https://example.org/blog   what postwatch would extract
  postwatch demo                       the whole loop offline, against a local replica
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="postwatch", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", metavar="FILE", help=f"TOML config file (default: ${CONFIG_ENV} or ./postwatch.toml)")
    # No default here: unset, `run` and `worker` take [daemon] log_format, every other command text.
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="log lines as text or JSON lines (default: text; for run and worker, [daemon] log_format)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv for debug, -vvv includes Scrapy)")
    parser.add_argument("--version", action="version", version=f"postwatch {__version__}")
    parser.set_defaults(daemon_logging=False)     # run and worker: True
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    for command_group in GROUPS:
        command_group.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Everything postwatch writes (database, .eml files, previews, the secret, lock files) is
    # private to the account it runs as: 0600 files, 0700 folders.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format or "text", args.verbose)
    try:
        # A quick `check` pass (postwatch.oneshot) of this process may have read it already.
        config = (preloaded.take(args.config) or load_config(args.config)) if args.reads_config else Config()
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    if not args.log_format and args.daemon_logging and config.daemon.log_format != "text":
        # The long-running commands log in the format their log shipper reads; --log-format wins.
        setup_logging(config.daemon.log_format, args.verbose)
    try:
        return args.handler(args, config)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    except TemplateProblem as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 2
    except database_error_types() as exc:
        print(f"postwatch: {_storage_error_line(exc, config)}", file=sys.stderr)
        return 1


def _print_problems(exc: ConfigError) -> None:
    for line in exc.problems:
        print(f"postwatch: {line}", file=sys.stderr)


def _storage_error_line(exc: Exception, config: Config) -> str:
    """One line for a database failure, whichever layer it surfaced from."""
    if isinstance(exc, StorageError):
        return str(exc)
    # e.g. from APScheduler's job store, which talks to the database without the Store
    from state import database_display_name

    return f"database {database_display_name(config.database_url)}: {describe_error(exc)}"

