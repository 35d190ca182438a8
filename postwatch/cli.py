"""The `postwatch` command line."""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from postwatch import __version__
from postwatch.config import (ALL_SOURCES, CONFIG_ENV, ConfigError, dkim_name_problems, dkim_report, load_config,
                              relay_problems, selector_problem)

DESCRIPTION = """\
postwatch watches blogs for new, edited and removed posts and emails subscribers a digest.

With no config file it watches the Liberty in North Korea blog
(https://libertyinnorthkorea.org/blog), keeps its state in ./postwatch.db (SQLite) and,
until an SMTP server is configured, writes each digest as an .eml file into ./outbox.

Config: --config FILE, else $POSTWATCH_CONFIG, else ./postwatch.toml if present.
`postwatch config example` prints every setting, commented.
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

log = logging.getLogger("postwatch")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record about a source carries a "source" field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "source", None):
            entry["source"] = record.source
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(fmt: str, verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("postwatch").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    # Scrapy and Twisted are loud at INFO; their problems reach us through the crawl report.
    for noisy in ("scrapy", "twisted", "apscheduler", "filelock", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)
    handler.addFilter(_one_line_database_errors)


def _one_line_database_errors(record: logging.LogRecord) -> bool:
    """APScheduler logs a failed poll of its job store with SQLAlchemy's multi-line message
    (the database may come back; it retries): keep it to one line like every other."""
    if record.name.startswith("apscheduler") and not record.exc_info:
        message = record.getMessage()
        if "\n" in message:
            message = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", message)
            record.msg, record.args = " ".join(line.strip() for line in message.splitlines() if line.strip()), ()
    return True


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line: what is wrong and where the help is (subcommand
    parsers inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


HISTORY_LIMIT_MAX = 10_000


def history_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= HISTORY_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {HISTORY_LIMIT_MAX:,}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="postwatch", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE", help=f"TOML config file (default: ${CONFIG_ENV} or ./postwatch.toml)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text (default) or JSON lines")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv for debug, -vvv includes Scrapy)")
    parser.add_argument("--version", action="version", version=f"postwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser("check", help="check sources once now and print what changed",
                                description="Check every source (or the named ones) once. The first check of a source records "
                                            "a baseline and reports no new posts. Exit status 1 when a source failed.")
    check.add_argument("sources", nargs="*", metavar="SOURCE", help="source names (default: all)")
    check.add_argument("--full", action="store_true", help="also re-check every known post page (conditional requests) for edits and removals")
    check.add_argument("--digest", action="store_true", help="send pending digests afterwards")

    digest = commands.add_parser("digest", help="compose and send (or write) pending digests",
                                 description="Compose a digest for every subscriber with pending events and send it through SMTP, "
                                             "or write it as .eml into the outbox folder when no SMTP host is configured. "
                                             "Messages that could not be sent stay queued and are retried.")
    digest.add_argument("--preview", metavar="FILE", help="write the HTML digest to FILE instead of sending")
    digest.add_argument("--subscriber", metavar="ADDRESS", help="only this subscriber (with --preview: whose digest to show)")
    digest_commands = digest.add_subparsers(dest="digest_command", metavar="ACTION")
    preview = digest_commands.add_parser("preview", help="write exactly the HTML a subscriber would get")
    preview.add_argument("file", metavar="FILE")
    preview.add_argument("--subscriber", dest="preview_subscriber", metavar="ADDRESS")

    run = commands.add_parser("run", help="run the daemon (checks, digests, health and metrics)",
                              description="Run checks on each source's interval and digests on each subscriber's schedule. "
                                          "Serves /healthz, /metrics and /unsubscribe on [daemon] listen. Stops cleanly on "
                                          "SIGTERM or Ctrl-C. One daemon per database.")
    run.add_argument("--once", action="store_true", help="one check of every source and one digest run, then exit")

    subscribers = commands.add_parser("subscribers", help="add, remove, list or import subscribers")
    sub_commands = subscribers.add_subparsers(dest="subscribers_command", metavar="ACTION", required=True)
    add = sub_commands.add_parser("add", help="add (or re-activate) a subscriber; they get posts from now on")
    add.add_argument("email")
    _add_cadence_arguments(add)
    remove = sub_commands.add_parser("remove", help="remove a subscriber")
    remove.add_argument("email")
    sub_commands.add_parser("list", help="list subscribers")
    importer = sub_commands.add_parser("import", help="import subscribers from a CSV file (columns: email[,cadence,at,tz,day,sources])",
                                       description=IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    importer.add_argument("file")
    importer.add_argument("--skip-invalid", action="store_true",
                          help="import the valid rows even when others are refused (they are still listed)")

    sources = commands.add_parser("sources", help="add, list, test, release or remove sources")
    src_commands = sources.add_subparsers(dest="sources_command", metavar="ACTION", required=True)
    src_add = src_commands.add_parser("add", help="add a blog by URL (feed and sitemap are discovered)")
    src_add.add_argument("url")
    src_add.add_argument("--name", help="short name (default: from the host name)")
    src_add.add_argument("--title", help="name shown in digests")
    src_add.add_argument("--feed", dest="feed_url", help="feed URL, when discovery does not find it")
    src_add.add_argument("--selector", action="append", default=[], metavar="KEY=CSS",
                         help="CSS selector override: listing_item, post_link, next_page, title, date, body, exclude")
    src_add.add_argument("--no-test", action="store_true", help="add without fetching the site first")
    src_commands.add_parser("list", help="list sources")
    src_test = src_commands.add_parser("test", help="show what would be extracted from a URL, without storing anything")
    src_test.add_argument("url")
    release = src_commands.add_parser("release", help="publish the changes of a source held as suspect")
    release.add_argument("name")
    src_remove = src_commands.add_parser("remove", help="remove a source added with 'sources add'")
    src_remove.add_argument("name")

    history = commands.add_parser("history", help="recent change events")
    history.add_argument("source", nargs="?")
    history.add_argument("--limit", type=history_limit, default=30, help=f"how many events (1 to {HISTORY_LIMIT_MAX:,}; default 30)")

    commands.add_parser("status", help="per source: posts, last check, last success, last error, degraded")

    feed = commands.add_parser("feed", help="the Atom feed of a source's changes (or of all sources), for static hosting",
                               description="Print (or write to FILE) the Atom feed the daemon serves at "
                                           "/feeds/SOURCE.atom: one entry per new, edited (with the diff), removed or "
                                           "restored post, newest first, at most [feeds] entries. Reads the database only.")
    feed.add_argument("source", metavar="SOURCE", help="a source's name, or 'all' for every source")
    feed.add_argument("-o", "--output", metavar="FILE",
                      help="write FILE (replaced in one step; a new file is readable by all) instead of standard output")

    config = commands.add_parser("config", help="validate the config or print an example")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_commands.add_parser("check", help="validate the config file; one line per problem, exit status 2 on any")
    config_commands.add_parser("example", help="print a commented example config")

    dkim = commands.add_parser("dkim", help="make a DKIM signing key and print the DNS record for it",
                               description="postwatch signs every digest with DKIM when [dkim] selector and key_file are "
                                           "set; the public half is published as a TXT record at "
                                           "SELECTOR._domainkey.DOMAIN.")
    dkim_commands = dkim.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    keygen = dkim_commands.add_parser("keygen", help="write a new 2048-bit RSA key (mode 0600) and print its TXT record")
    keygen.add_argument("--selector", required=True, help="the DKIM selector, e.g. pw2026")
    keygen.add_argument("--domain", help="the signing domain (default: the domain of [digest] from)")
    keygen.add_argument("--key", metavar="FILE", help="where to write the key (default: [dkim] key_file, else "
                                                      "dkim-SELECTOR.pem beside the config file); never overwritten")
    dkim_commands.add_parser("record", help="print the DNS TXT record for the configured [dkim] key")

    demo = commands.add_parser("demo", help="the whole loop offline in one command, against a local replica",
                               description="Starts a local replica of the LiNK blog and a local SMTP server on free loopback "
                                           "ports, runs a baseline check, adds and edits posts, checks again and sends the "
                                           "digest. Touches none of your own config or state.")
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder with the state, emails and preview")
    return parser


def _add_cadence_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cadence", choices=["immediate", "daily", "weekly"], help="how often (default from [digest])")
    parser.add_argument("--at", metavar="HH:MM", help="time of day for daily and weekly digests")
    parser.add_argument("--tz", metavar="ZONE", help="IANA time zone, e.g. Europe/London")
    parser.add_argument("--day", metavar="DAY", help="weekday for weekly digests (mon..sun)")
    parser.add_argument("--source", action="append", dest="sources", metavar="NAME", help="only these sources (repeatable)")


WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CADENCES = ("immediate", "daily", "weekly")


def main(argv: list[str] | None = None) -> int:
    # Everything postwatch writes (database, .eml files, previews, the secret, lock files) is
    # private to the account it runs as: 0600 files, 0700 folders.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.verbose)
    if args.command == "demo":
        from postwatch.demo import run_demo

        return run_demo(keep=args.keep)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"postwatch: {line}", file=sys.stderr)
        return 2
    if args.command == "config":
        return _config_command(args, config)
    if args.command == "dkim":
        return _dkim_command(args, config)
    handler = {
        "check": cmd_check, "digest": cmd_digest, "run": cmd_run, "subscribers": cmd_subscribers,
        "sources": cmd_sources, "history": cmd_history, "status": cmd_status, "feed": cmd_feed,
    }[args.command]
    try:
        return handler(args, config)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        for line in exc.problems:
            print(f"postwatch: {line}", file=sys.stderr)
        return 1
    except Exception as exc:
        line = _storage_error_line(exc, config)
        if line is None:
            raise
        print(f"postwatch: {line}", file=sys.stderr)
        return 1


def _storage_error_line(exc: Exception, config) -> str | None:
    """One line for a database failure, whichever layer it surfaced from; None for anything else."""
    from sqlalchemy.exc import SQLAlchemyError

    from state.store import StorageError, database_display_name, describe_error

    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):     # e.g. from APScheduler's job store
        return f"database {database_display_name(config.database_url)}: {describe_error(exc)}"
    return None


READ_ONLY_COMMANDS = {("status", None), ("history", None), ("subscribers", "list"), ("sources", "list"),
                      ("digest", "preview"), ("feed", None)}


def _app(config, args=None):
    """Commands that only read open the database without migrating or syncing the config's sources."""
    from postwatch.app import App

    action = None
    if args is not None:
        action = getattr(args, "subscribers_command", None) or getattr(args, "sources_command", None) \
            or getattr(args, "digest_command", None) or ("preview" if getattr(args, "preview", None) else None)
    read_only = args is not None and (args.command, action) in READ_ONLY_COMMANDS
    return App(config, read_only=read_only)


def _run_async(fn, *args, **kwargs):
    import functools

    from crawler.runtime import run

    return run(functools.partial(fn, *args, **kwargs))


def cmd_check(args, config) -> int:
    from digest.render import TemplateProblem
    from postwatch.app import describe_summary

    app = _app(config)
    app.log_failures = False
    try:
        names = args.sources or [s.name for s in app.store.list_sources()]
        unknown = [n for n in names if app.store.get_source(n) is None]
        if unknown:
            print(f"postwatch: no such source: {', '.join(unknown)}", file=sys.stderr)
            return 2
        progress = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
        summaries = _run_async(app.check_many, names, full=True if args.full else None, progress=progress)
        for summary in summaries:
            if summary.ok:
                print(describe_summary(summary))
                for event in summary.events:
                    print(f"  {event.kind:<8} {event.title} <{event.url}>")
            else:
                print(f"postwatch: {summary.error}", file=sys.stderr)
        if args.digest:
            queued, stats = app.send_digests()
            print(f"digest: {len(queued)} composed, {stats.sent} sent, {stats.retried} waiting for a retry, {stats.failed} failed")
        return 0 if all(s.ok for s in summaries) else 1
    except TemplateProblem as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()


def cmd_digest(args, config) -> int:
    from digest.render import TemplateProblem

    app = _app(config, args)
    try:
        preview_file = args.file if args.digest_command == "preview" else args.preview
        if preview_file:
            from digest.sender import preview

            who = getattr(args, "preview_subscriber", None) or args.subscriber
            path = preview(app.store, app.digest_settings(), who, Path(preview_file), datetime.now(timezone.utc))
            print(f"preview written to {path}")
            return 0
        ids = None
        if args.subscriber:
            subscriber = app.store.get_subscriber(args.subscriber)
            if subscriber is None:
                print(f"postwatch: no subscriber {args.subscriber}", file=sys.stderr)
                return 2
            ids = [subscriber.id]
        queued, stats = app.send_digests(ids)
        where = f"SMTP {config.smtp.host}:{config.smtp.effective_port}" if config.smtp.host else f"outbox folder {config.outbox_path}"
        print(f"digest: {len(queued)} composed, {stats.sent} delivered via {where}, "
              f"{stats.retried} waiting for a retry, {stats.failed} failed")
        return 0 if stats.failed == 0 and stats.retried == 0 else 1
    except TemplateProblem as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()


def cmd_run(args, config) -> int:
    from scheduler import run_daemon

    return run_daemon(config, once=args.once)


def _subscriber_options(config, cadence, at, tz, day, sources) -> dict:
    from zoneinfo import ZoneInfo

    options = {
        "cadence": cadence or config.digest.default_cadence,
        "send_time": at or config.digest.default_time,
        "timezone": tz or config.digest.default_timezone,
        "sources": sources or None,
    }
    if options["cadence"] not in CADENCES:
        raise ValueError(f"cadence {options['cadence']!r} must be one of {', '.join(CADENCES)}")
    try:
        ZoneInfo(options["timezone"])
    except (ValueError, KeyError):          # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"time zone {options['timezone']!r} is not an IANA time zone (e.g. Europe/London)") from None
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", options["send_time"]):
        raise ValueError(f"time {options['send_time']!r} must be HH:MM")
    if options["cadence"] == "weekly":
        day = (day or WEEKDAYS[config.digest.default_weekday]).lower()[:3]
        if day not in WEEKDAYS:
            raise ValueError(f"day {day!r} must be one of {', '.join(WEEKDAYS)}")
        options["weekday"] = WEEKDAYS.index(day)
    return options


# email_validator spends most of its time on the domain (UTS-46, IDNA), and a list of 20,000
# subscribers has a few hundred domains: each is validated once, and the part before the @ is
# validated beside a short domain known to be good. Long addresses take the whole check, so the
# length limits stay the library's.
_PROBE_DOMAIN = "a.co"


@functools.lru_cache(maxsize=8192)
def _checked_domain(domain: str) -> tuple[str, str]:
    from email_validator import validate_email

    checked = validate_email(f"postmaster@{domain}", check_deliverability=False)
    return checked.domain, checked.ascii_domain


def _validate_email(address: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        local, at, domain = address.rpartition("@")
        if at and local and len(local) <= 64:
            domain, ascii_domain = _checked_domain(domain)
            if len(local.encode()) + 1 + len(ascii_domain) <= 200:
                local = validate_email(f"{local}@{_PROBE_DOMAIN}", check_deliverability=False).local_part
                return f"{local}@{domain}"
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not a valid email address: {exc}") from None


def cmd_subscribers(args, config) -> int:
    app = _app(config, args)
    store = app.store
    try:
        if args.subscribers_command == "add":
            try:
                email = _validate_email(args.email)
                options = _subscriber_options(config, args.cadence, args.at, args.tz, args.day, args.sources)
                _check_source_names(store, options["sources"])
            except Exception as exc:
                print(f"postwatch: {exc}", file=sys.stderr)
                return 2
            subscriber = store.add_subscriber(email, **options)
            print(f"subscribed {subscriber.email} ({_describe_cadence(subscriber)}); they get changes from now on")
            return 0
        if args.subscribers_command == "remove":
            if store.remove_subscriber(args.email.strip()):
                print(f"removed {args.email}")
                return 0
            print(f"postwatch: no subscriber {args.email}", file=sys.stderr)
            return 1
        if args.subscribers_command == "list":
            rows = store.list_subscribers()
            for s in rows:
                sources = ",".join(s.sources) if s.sources else "all sources"
                print(f"{s.email:<40} {s.status:<13} {_describe_cadence(s):<32} {sources}")
            print(f"{len(rows)} subscribers ({sum(1 for s in rows if s.status == 'active')} active)")
            return 0
        if args.subscribers_command == "import":
            return _import_subscribers(store, config, Path(args.file), args.skip_invalid)
    finally:
        app.close()
    return 2


def _check_source_names(store, names) -> None:
    for name in names or []:
        if store.get_source(name) is None:
            raise ValueError(f"no such source: {name}")


IMPORT_COLUMNS = ("email", "cadence", "at", "tz", "day", "sources")
IMPORT_HELP = """\
Import subscribers from a UTF-8 CSV file with the columns email[,cadence,at,tz,day,sources]:
either a header row naming them (any order), or no header and that order. Empty cells take
the [digest] defaults; sources are names separated by ';'.

Every row is checked first. Refused rows are listed one per line (FILE:LINE: reason), and if
any row is refused nothing is imported, unless --skip-invalid is given. An address that
unsubscribed is refused: an import never subscribes them again (only they can). An address
already subscribed is updated to the row's settings, or counted as a duplicate when nothing
changes; so is an address listed twice with the same settings.

exit status: 0 every row imported or already there; 1 rows refused (nothing imported without
--skip-invalid); 2 the file could not be read (nothing imported).
"""


class ImportFileError(ValueError):
    """The file as a whole cannot be read as a subscriber list; str() is one line."""


def _read_subscriber_rows(path: Path) -> list[tuple[int, dict[str, str] | None]]:
    """(line number, {column: cell}) for every non-empty record; None for a record with more
    cells than columns. Raises ImportFileError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    records, columns, line = [], None, 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                if not records and columns is None and any(cell.strip().lower() == "email" for cell in cells):
                    columns = [cell.strip().lower() for cell in cells]
                    unknown = [c for c in columns if c not in IMPORT_COLUMNS]
                    if unknown:
                        raise ImportFileError(f"{path}:{line}: unknown column {unknown[0]!r} "
                                              f"(columns: {', '.join(IMPORT_COLUMNS)})")
                else:
                    names = columns or IMPORT_COLUMNS
                    records.append((line, dict(zip(names, cells)) if len(cells) <= len(names) else None))
            line = reader.line_num + 1
    except csv.Error as exc:
        reason = (f"a field is longer than {csv.field_size_limit() // 1024} KiB" if "field larger" in str(exc)
                  else f"not readable as CSV: {exc}")
        raise ImportFileError(f"{path}:{line}: {reason}") from None
    return records


def _import_subscribers(store, config, path: Path, skip_invalid: bool = False) -> int:
    try:
        records = _read_subscriber_rows(path)
    except ImportFileError as exc:
        print(f"postwatch: {exc}; nothing imported", file=sys.stderr)
        return 2
    known_sources = {s.name for s in store.list_sources()}
    entries, lines, refused, duplicates = [], [], {}, 0
    first_seen: dict[str, int] = {}          # address -> index into entries
    for line, row in records:
        try:
            if row is None:
                raise ValueError(f"more cells than columns ({', '.join(IMPORT_COLUMNS)})")
            address = (row.get("email") or "").strip()
            if not address:
                raise ValueError("no email address")
            email = _validate_email(address)
            sources = [s.strip() for s in (row.get("sources") or "").replace(";", ",").split(",") if s.strip()] or None
            options = _subscriber_options(config, *((row.get(key) or "").strip() or None for key in ("cadence", "at", "tz", "day")),
                                          sources)
            unknown = [name for name in sources or () if name not in known_sources]
            if unknown:
                raise ValueError(f"no such source: {', '.join(unknown)}")
        except ValueError as exc:
            refused[line] = str(exc)
            continue
        earlier = first_seen.get(email.lower())
        if earlier is not None:
            if {k: v for k, v in entries[earlier].items() if k != "email"} == options:
                duplicates += 1
            else:
                refused[line] = f"{email} is also on line {lines[earlier]} with other settings"
            continue
        first_seen[email.lower()] = len(entries)
        entries.append({"email": email, **options})
        lines.append(line)
    result = store.import_subscribers(entries, commit=skip_invalid or not refused, skip_refused=skip_invalid)
    refused.update({lines[index]: reason for index, reason in result.refused.items()})
    duplicates += result.unchanged
    for line in sorted(refused):
        print(f"postwatch: {path}:{line}: {refused[line]}", file=sys.stderr)
    counts = (f"{result.added} new, {result.updated} updated, {duplicates} duplicate{'s' * (duplicates != 1)}, "
              f"{len(refused)} refused")
    if result.committed:
        print(f"imported {path}: {counts}")
        return 1 if refused else 0
    print(f"postwatch: {path}: nothing imported: {len(refused)} row{'s' * (len(refused) != 1)} refused; the others "
          f"would be {result.added} new, {result.updated} updated, {duplicates} duplicate{'s' * (duplicates != 1)} — "
          f"correct the refused rows, or import the others with --skip-invalid", file=sys.stderr)
    return 1


def _describe_cadence(s) -> str:
    if s.cadence == "immediate":
        return "after each check"
    if s.cadence == "weekly":
        return f"weekly, {WEEKDAYS[s.weekday or 0]} {s.send_time} {s.timezone}"
    return f"daily {s.send_time} {s.timezone}"


def cmd_sources(args, config) -> int:
    app = _app(config, args)
    store = app.store
    try:
        action = args.sources_command
        if action == "list":
            for s in store.list_sources():
                extra = f" feed={s.feed_url}" if s.feed_url else ""
                print(f"{s.name:<20} {s.kind:<9} {s.url}{extra}  ({s.origin})")
            return 0
        if action == "test":
            from crawler.run import test_source

            report = _run_async(test_source, args.url, app.crawl_settings)
            print(report.describe())
            return 0 if report.ok else 1
        if action == "add":
            return _add_source(args, app)
        if action == "release":
            if store.get_source(args.name) is None:
                print(f"postwatch: no such source: {args.name}", file=sys.stderr)
                return 2
            count = store.release_source(args.name)
            print(f"{args.name}: released {count} held events; they go out with the next digest")
            return 0
        if action == "remove":
            record = store.get_source(args.name)
            if record is None:
                print(f"postwatch: no such source: {args.name}", file=sys.stderr)
                return 2
            if record.origin == "config":
                print(f"postwatch: source '{args.name}' comes from the config file; remove it there", file=sys.stderr)
                return 2
            store.remove_source(args.name)
            print(f"removed source {args.name}")
            return 0
    finally:
        app.close()
    return 2


def _add_source(args, app) -> int:
    from urllib.parse import urlsplit

    from state import SourceRecord

    selectors = {}
    for item in args.selector:
        key, sep, css = item.partition("=")
        if not sep:
            print(f"postwatch: --selector {item!r} must be KEY=CSS", file=sys.stderr)
            return 2
        selectors[key.strip()] = css.strip()
    try:
        parts = urlsplit(args.url)
    except ValueError:          # e.g. "http://[::1/"
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(f"postwatch: {args.url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    name = args.name or parts.hostname.removeprefix("www.").split(".")[0]
    for key, css in selectors.items():
        problem = selector_problem(key, css)
        if problem:
            print(f"postwatch: source '{name}': --selector {problem}", file=sys.stderr)
            return 2
    if name == ALL_SOURCES:
        print(f"postwatch: the name '{name}' is reserved for the feed of all sources (use --name)", file=sys.stderr)
        return 2
    if app.store.get_source(name):
        print(f"postwatch: a source named '{name}' exists already (use --name)", file=sys.stderr)
        return 2
    record = SourceRecord(name=name, url=args.url, kind="auto", feed_url=args.feed_url, selectors=selectors,
                          title=args.title, origin="cli")
    if not args.no_test:
        from crawler.run import test_source

        report = _run_async(test_source, args.url, app.crawl_settings)
        print(report.describe())
        if not report.ok:
            print(f"postwatch: {name}: nothing added (use --no-test to add it anyway)", file=sys.stderr)
            return 1
        record.kind = report.spec.kind
        record.feed_url = args.feed_url or report.spec.feed_url
        record.sitemap_url = report.spec.sitemap_url
        record.selectors = selectors or dict(report.spec.selectors)
    app.store.add_source(record)
    print(f"added source {name}: {args.url}; the first check records a baseline")
    return 0


def cmd_history(args, config) -> int:
    app = _app(config, args)
    try:
        events = app.store.history(args.source, limit=args.limit)
        for e in events:
            state = "" if e.status == "published" else f" [{e.status}]"
            print(f"{e.created_at:%Y-%m-%d %H:%M} {e.source:<12} {e.kind:<8} {e.title} <{e.url}>{state}")
        if not events:
            print("no events yet")
        return 0
    finally:
        app.close()


def cmd_feed(args, config) -> int:
    from digest.feed import UnknownFeed, write_feed
    from digest.render import TemplateProblem

    app = _app(config, args)
    try:
        atom = app.feed(args.source)
    except UnknownFeed as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 1
    except TemplateProblem as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()
    if not args.output:
        sys.stdout.buffer.write(atom.body)
        sys.stdout.flush()
        return 0
    try:
        write_feed(Path(args.output), atom.body)
    except OSError as exc:
        print(f"postwatch: {args.output}: cannot write the feed: {exc.strerror or exc}", file=sys.stderr)
        return 1
    newest = f", the newest from {atom.updated:%Y-%m-%d %H:%M} UTC" if atom.updated else ""
    print(f"{args.output}: {args.source} feed written, {atom.entries} entries{newest}")
    return 0


def cmd_status(args, config) -> int:
    app = _app(config, args)
    try:
        def when(value):
            return value.strftime("%Y-%m-%d %H:%M") if value else "never"

        for s in app.store.source_status():
            flag = f"DEGRADED ({s.degraded_reason}; {s.held_events} held)" if s.degraded else "ok"
            print(f"{s.name}: {s.url}\n  posts {s.posts}, last check {when(s.last_check_at)}, last success "
                  f"{when(s.last_success_at)}, {flag}")
            if s.last_error:
                print(f"  last error: {s.last_error} ({s.consecutive_failures} in a row)")
            if s.volatile_posts:
                print(f"  {s.volatile_posts} volatile post(s) (content changes on every fetch; edits not mailed):")
                for _, url, since in app.store.volatile_posts(s.name):
                    print(f"    {url} (since {when(since)})")
        outbox = app.store.outbox_stats()
        print(f"outbox: {outbox.get('pending', 0)} pending, {outbox.get('sent', 0)} sent, {outbox.get('failed', 0)} failed")
        return 0
    finally:
        app.close()


def _config_command(args, config) -> int:
    if args.config_command == "example":
        print((Path(__file__).parent / "examples" / "postwatch.toml").read_text(encoding="utf-8"), end="")
        return 0
    where = config.path or "built-in defaults (no config file)"
    dkim_line, problems = dkim_report(config, str(where))
    problems = relay_problems(config, str(where)) + problems
    for line in problems:
        print(f"postwatch: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"{where}: ok — {len(config.sources)} sources, database {config.database}, "
          + (f"SMTP {config.smtp.host}:{config.smtp.effective_port}, MAIL FROM {config.envelope_sender}, "
             f"unsubscribe {config.unsubscribe_url}, {dkim_line}" if config.smtp.host
             else f"outbox folder {config.outbox_path}"))
    return 0


def _dkim_command(args, config) -> int:
    from digest.signing import DkimProblem, DkimSigner, generate_key

    try:
        if args.dkim_command == "record":
            signer = config.dkim_signer()
            if signer is None:
                print("postwatch: [dkim] selector and key_file are not set; make a key with: postwatch dkim keygen "
                      "--selector NAME", file=sys.stderr)
                return 2
            print(signer.zone_line())
            return 0
        domain = args.domain or config.from_domain
        problems = dkim_name_problems(args.selector, domain)
        if problems:
            raise ConfigError([f"dkim keygen: {problem}" for problem in problems])
        key_path = Path(args.key) if args.key else (config.base_dir / (config.dkim.key_file or f"dkim-{args.selector}.pem"))
        signer = DkimSigner(domain, args.selector, generate_key(key_path), key_path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"postwatch: {line}", file=sys.stderr)
        return 1
    except DkimProblem as exc:
        print(f"postwatch: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {key_path} (mode 0600: only this account may read it)\n"
          f"Publish this TXT record in the DNS of {signer.domain}:\n{signer.zone_line()}\n"
          f"then add to {config.path or 'the config file'}:\n[dkim]\nselector = \"{signer.selector}\"\n"
          f"domain = \"{signer.domain}\"\nkey_file = \"{key_path.resolve()}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
