"""The `postwatch` command line.

One parser; every command is bound to its handler with `set_defaults(handler=...)`, and a
handler takes the parsed arguments and the config and returns the exit status. Handlers print;
errors from the layers below are turned into one line here and nowhere else.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from crawler.urls import LINK_BLOG_URL, is_http_url
from digest.errors import TemplateProblem
from postwatch import __version__
from postwatch.app import App, describe_summary
from postwatch.config import (ALL_SOURCES, CADENCES, CONFIG_ENV, LOG_FORMATS, Config, ConfigError, dkim_name_problems, load_config,
                              scrapy_overrides, selector_problem)
from postwatch.relay import dkim_report, relay_problems
from postwatch.subscribers import (ImportFileError, Record, check_rows, consent_lines, describe_cadence,
                                   describe_filters, describe_statuses, export_row, export_text, filter_options, lang_option,
                                   normalized_address, normalized_email, read_subscriber_rows,
                                   schedule_options)
from state import NeedsConsent, SourceRecord, StorageError, database_error_types, describe_error

# Not imported here: crawler.run (Scrapy and Twisted, 0.5-1.2 s measured on this 2-core machine)
# for `sources test` and `sources add`, scheduler (APScheduler) for `run`, and digest.sender (the
# rendering stack: Jinja2, css-inline, nh3) for `digest preview`: commands that neither crawl,
# run the daemon nor render should not wait for them (nor for postwatch.demo, which needs both).

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

log = logging.getLogger("postwatch")

Handler = Callable[[argparse.Namespace, Config], int]


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record about a source carries a "source" field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "source", None):         # set through `extra=` by log calls about a source
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


# --------------------------------------------------------------------------------------------
# The parser: every command, its help and its handler
# --------------------------------------------------------------------------------------------
class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line: what is wrong and where the help is (subcommand
    parsers inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class Replaced(argparse.Action):
    """An option that became a command: using it is an error that names the command."""

    def __init__(self, option_strings, dest, *, instead: str, **kwargs):
        self.instead = instead
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is gone; use: {self.instead}")


HISTORY_LIMIT_MAX = 10_000


def history_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= HISTORY_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {HISTORY_LIMIT_MAX:,}")
    return value


def _command(commands, name: str, handler: Handler, summary: str, description: str = "", examples: str = "",
             *, reads_config: bool = True) -> argparse.ArgumentParser:
    """A subcommand whose --help reads like documentation: what it does, then examples."""
    parser = commands.add_parser(name, help=summary, description=description or summary,
                                 epilog=f"examples:\n{examples}" if examples else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler, reads_config=reads_config)
    return parser


def _group(commands, name: str, summary: str):
    """A command made of actions (`postwatch subscribers add ...`); the subparsers to add them to."""
    parser = commands.add_parser(name, help=summary, description=summary)
    return parser.add_subparsers(metavar="ACTION", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="postwatch", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", metavar="FILE", help=f"TOML config file (default: ${CONFIG_ENV} or ./postwatch.toml)")
    # No default here: unset, `run` and `worker` take [daemon] log_format, every other command text.
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="log lines as text or JSON lines (default: text; for run and worker, [daemon] log_format)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv for debug, -vvv includes Scrapy)")
    parser.add_argument("--version", action="version", version=f"postwatch {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    check = _command(commands, "check", check_sources, "check sources once now and print what changed", """\
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

    digest = _command(commands, "digest", send_digests, "compose and send (or write) pending digests", """\
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
    preview_command = _command(digest.add_subparsers(metavar="ACTION"), "preview", preview_digest,
                               "write exactly the HTML a subscriber would get, sending nothing", """\
Write the HTML digest a subscriber would get now to FILE (only the account postwatch runs as can
read it). Their pending changes, or the most recent ones when nothing is pending. Reads the
database only: nothing is queued, sent or marked.""", """\
  postwatch digest preview digest.html
  postwatch digest preview --subscriber ada@example.org ada.html
""")
    preview_command.add_argument("file", metavar="FILE")
    # SUPPRESS: `digest --subscriber A preview F` keeps A instead of this parser's default.
    preview_command.add_argument("--subscriber", metavar="ADDRESS", default=argparse.SUPPRESS,
                                 help="whose digest (default: the first active subscriber)")

    run_command = _command(commands, "run", run_daemon, "run the daemon (checks, digests, health and metrics)", """\
Run checks on each source's interval and digests on each subscriber's schedule. Serves /healthz,
/metrics, /unsubscribe, the readers' /subscribe, /confirm and /preferences pages and the Atom
feeds on [daemon] listen, and reads bounces and mailed unsubscribes on [inbound] listen when it
is set. Stops cleanly on SIGTERM or Ctrl-C. One daemon per database.""", """\
  postwatch run                   until SIGTERM
  postwatch run --once            one check of every source and one digest run, then exit
""")
    run_command.add_argument("--once", action="store_true", help="one check of every source and one digest run, then exit")
    run_command.set_defaults(daemon_logging=True)

    worker = _command(commands, "worker", run_worker, "run a cluster worker: one of several processes sharing the work "
                      "through PostgreSQL", """\
Run one worker of a cluster: any number of `postwatch worker` processes, on one machine or many,
with the same config and one PostgreSQL database, share the checks and the mail through a
procrastinate job queue kept in that database (installed by the first worker). Every few seconds
one of them plans: the due sources, in batches of one host each, and no two workers ever crawl
one host at once, so [crawl] download_delay holds across the cluster. Digests are planned on each
subscriber's schedule; the outbox makes sure no message is sent twice. A worker crawls a host in
its turn, a PostgreSQL lock that lives as long as its process: a worker that is killed is noticed
by the others after --stalled-after seconds without its heartbeat, its check is marked failed
(the sources it had not recorded are checked at the next planning) and its mail jobs run again; one that is only
silent (paused) keeps its host until it resumes, and no one crawls beside it. Needs
postwatch[cluster] and a PostgreSQL `database`. SIGTERM or Ctrl-C stops it cleanly: no new jobs,
running ones finish within [daemon] shutdown_grace (a check cut off then leaves the sources it had
not recorded due at once); a second one ends it at once.
`postwatch status` shows the queue: jobs waiting, running and failed, workers alive.

Workers serve no pages (no /subscribe, feeds or inbound mail; --metrics serves Prometheus
metrics), and `postwatch run` must not run beside them on the same database: it would check the
sources too.

exit status: 0 stopped; 1 a `postwatch run` daemon holds the database; 2 the database is not
PostgreSQL, or procrastinate is not installed.""", """\
  postwatch worker                        one worker; start as many as there are machines or cores
  postwatch worker --concurrency 8        more hosts crawled at once by this worker
  systemctl start postwatch-worker@{1..3} three workers (deploy/postwatch-worker@.service)
""")
    worker.set_defaults(daemon_logging=True)
    worker.add_argument("--concurrency", type=functools.partial(_bounded_int, low=1, high=64), default=4,
                        help="jobs this worker runs at once: checks of different hosts, mail (default 4); all "
                             "workers' together should cover the hosts with a source due in one --plan-every, "
                             "plus one each for mail, or batches wait for a slot and checks run late")
    worker.add_argument("--plan-every", type=functools.partial(_bounded_int, low=1, high=60), default=5, metavar="SECONDS",
                        help="how often the cluster plans due sources; divides 60 (default 5; same on every worker)")
    worker.add_argument("--batch", type=functools.partial(_bounded_int, low=1, high=500), default=50, metavar="N",
                        help="sources per check job, all of one host (default 50)")
    worker.add_argument("--heartbeat", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between this worker's heartbeats (default 10)")
    worker.add_argument("--stalled-after", type=float, default=30.0, metavar="SECONDS",
                        help="a worker silent this long is taken for dead and its jobs are recovered (default 30)")
    worker.add_argument("--name", help="this worker's name in the logs (default host:pid)")
    worker.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus /metrics here: this worker's checks and deliveries, and the cluster's "
                             "queue (jobs by task and state, workers alive)")

    subscribers = _group(commands, "subscribers", "add, remove, list, show, import, export or forget subscribers")
    add = _command(subscribers, "add", add_subscriber, "add a subscriber (or change one's settings); they get changes from now on",
                   ADD_HELP, examples="""\
  postwatch subscribers add ada@example.org
  postwatch subscribers add kim@example.org --cadence weekly --day fri --at 09:00 --tz Asia/Seoul
  postwatch subscribers add lee@example.org --cadence immediate --source link
  postwatch subscribers add bo@example.org --resubscribe     she asked to get digests again
  postwatch subscribers add kim@example.org --include visa --include "/refugees?/" --exclude podcast
  postwatch subscribers add https://hooks.example.org/postwatch --cadence immediate   a signed JSON POST
  postwatch subscribers add 'tgram://BOT_TOKEN/CHAT_ID' --cadence immediate           a Telegram chat
""")
    add.add_argument("email", metavar="ADDRESS", help="an email address, a webhook URL (https://...) or an Apprise URL "
                                                     "(tgram://..., slack://..., ntfy://...; needs postwatch[apprise])")
    add.add_argument("--include", action="append", metavar="TERM",
                     help="only changes whose title or text has this word, or matches this /regular expression/ "
                          "(repeatable: any of them)")
    add.add_argument("--exclude", action="append", metavar="TERM",
                     help="never changes whose title or text has this word or matches this /regular expression/ "
                          "(repeatable)")
    add.add_argument("--cadence", choices=CADENCES, help="how often (default from [digest])")
    add.add_argument("--at", metavar="HH:MM", help="time of day for daily and weekly digests")
    add.add_argument("--tz", metavar="ZONE", help="IANA time zone, e.g. Europe/London")
    add.add_argument("--day", metavar="DAY", help="weekday for weekly digests (mon..sun)")
    add.add_argument("--lang", choices=("en", "ko"), help="language of their digests and pages: en (default) or ko")
    add.add_argument("--source", action="append", dest="sources", metavar="NAME", help="only these sources (repeatable)")
    add.add_argument("--resubscribe", action="store_true",
                     help="subscribe again an address that unsubscribed or was suppressed: only with the person's "
                          "new consent")
    remove = _command(subscribers, "remove", remove_subscriber, "remove a subscriber")
    remove.add_argument("email")
    listing = _command(subscribers, "list", list_subscribers, "list subscribers: address, status, schedule, sources",
                       examples="""\
  postwatch subscribers list
  postwatch subscribers list --status pending     signups waiting for their confirmation link
""")
    listing.add_argument("--status", choices=STATUSES, help="only subscribers with this status")
    show = _command(subscribers, "show", show_subscriber, "one subscriber's settings and consent record", """\
Print a subscriber's settings and consent record: how they joined (page, cli, import), when,
when the confirmation link was followed and the IP address and user agent of that request, a
re-consent after unsubscribing, and a suppression's reason.

exit status: 0 shown; 1 no such subscriber.""", """\
  postwatch subscribers show ada@example.org
""")
    show.add_argument("email")
    export = _command(subscribers, "export", export_subscribers, "every subscriber and consent record, as CSV or JSON", """\
Write every subscriber with their settings and consent record to standard output (or FILE, made
readable by this account only): for a data-protection request, or a move to another list.""", """\
  postwatch subscribers export --format csv > subscribers.csv
  postwatch subscribers export --format json -o subscribers.json
""")
    export.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    export.add_argument("-o", "--output", metavar="FILE", help="write FILE (mode 0600) instead of standard output")
    forget = _command(subscribers, "forget", forget_subscriber, "erase an address on request, keeping only its hash", """\
Erase everything stored for the address: its subscriber row and consent record, and the messages
queued or kept for it. Only the sha256 of the normalised address is kept, on the suppression
list: `subscribers add` and `import` refuse it, and a signup on the page needs its confirmation
link (the person's new consent) before anything is sent again.

exit status: 0 erased (or nothing was stored; the hash is kept either way); 2 not an address.""", """\
  postwatch subscribers forget ada@example.org
""")
    forget.add_argument("email")
    importer = _command(subscribers, "import", import_subscribers,
                        "import subscribers from a CSV file (columns: email[,cadence,at,tz,day,sources,include,exclude,lang])",
                        IMPORT_HELP,
                        """\
  postwatch subscribers import people.csv
  postwatch subscribers import people.csv --skip-invalid
""")
    importer.add_argument("file")
    importer.add_argument("--skip-invalid", action="store_true",
                          help="import the valid rows even when others are refused (they are still listed)")

    sources = _group(commands, "sources", "add, list, test, release or remove sources")
    src_add = _command(sources, "add", add_source, "add a blog by URL (feed and sitemap are discovered)", """\
Read the blog's first listing pages (as `sources test` does) and add it when posts were found.
Its first check records a baseline.""", """\
  postwatch sources add https://www.dailynk.com/english/ --name dailynk --title "Daily NK"
  postwatch sources add https://blog.example.org/ --selector listing_item=div.card --selector post_link=a.more
""")
    src_add.add_argument("url")
    src_add.add_argument("--name", help="short name (default: from the host name)")
    src_add.add_argument("--title", help="name shown in digests")
    src_add.add_argument("--feed", dest="feed_url", help="feed URL, when discovery does not find it")
    src_add.add_argument("--selector", action="append", default=[], metavar="KEY=CSS",
                         help="CSS selector override: listing_item, post_link, next_page, title, date, body, exclude")
    src_add.add_argument("--no-test", action="store_true", help="add without fetching the site first")
    _command(sources, "list", list_sources, "list sources: name, kind, URL, feed and where each was added")
    src_test = _command(sources, "test", try_source, "show what would be extracted from a URL, storing nothing", """\
Read the blog's first listing pages (and its feed, if one is advertised) and show the feed, the
sitemap and the newest posts found. Nothing is stored and no database is opened.

exit status: 0 posts found; 1 none found or the site could not be read.""", """\
  postwatch sources test https://www.dailynk.com/english/
""")
    src_test.add_argument("url")
    release = _command(sources, "release", release_source, "publish the changes of a source held as suspect")
    release.add_argument("name")
    src_remove = _command(sources, "remove", remove_source, "remove a source added with 'sources add'")
    src_remove.add_argument("name")

    operators = _group(commands, "operators", "the console's operator accounts: add, list, remove, passwd")
    op_add = _command(operators, "add", add_operator, "add an operator who may sign in to the console", OPERATORS_HELP, """\
  postwatch operators add ada --role admin              asks for the password twice
  printf '%s\\n' "$PASSWORD" | postwatch operators add ci --role viewer   a script: the password on standard input
""")
    op_add.add_argument("name", metavar="NAME", help="the sign-in name: letters, digits, '.', '_', '-', '@' (at most 100)")
    op_add.add_argument("--role", choices=ROLES, required=True,
                        help="admin: sees and changes everything; viewer: sees everything, changes nothing")
    _command(operators, "list", list_operators, "list operators: name, role, created, last sign-in")
    op_remove = _command(operators, "remove", remove_operator, "remove an operator; their sessions end at once", """\
Remove the account. Every session it has ends at once (its next request goes to the sign-in
page); the audit log keeps what it did.

exit status: 0 removed; 1 no such operator.""")
    op_remove.add_argument("name", metavar="NAME")
    op_passwd = _command(operators, "passwd", operator_password, "set an operator's password; their sessions end", """\
Set a new password (read as for `operators add`). Every session of that operator ends: they sign
in again with the new one.

exit status: 0 changed; 1 no such operator; 2 an unusable password.""", """\
  postwatch operators passwd ada
""")
    op_passwd.add_argument("name", metavar="NAME")

    history = _command(commands, "history", show_history, "recent change events, newest first", examples="""\
  postwatch history
  postwatch history link --limit 100
""")
    history.add_argument("source", nargs="?", help="only this source")
    history.add_argument("--limit", type=history_limit, default=30, help=f"how many events (1 to {HISTORY_LIMIT_MAX:,}; default 30)")

    _command(commands, "status", show_status, "per source: posts, last check, last success, last error, degraded")

    feed = _command(commands, "feed", write_feed_command,
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

    archive = _command(commands, "archive", write_archive_command,
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

    config = _group(commands, "config", "validate the config or print an example")
    _command(config, "check", check_config, "validate the config file; one line per problem, exit status 2 on any")
    _command(config, "example", print_example_config, "print a commented example config", reads_config=False)

    webhook = _group(commands, "webhook", "webhook signing secrets, and checking a delivery's signature")
    secret = _command(webhook, "secret", webhook_secret_command, "print the signing secret of one webhook receiver", """\
Each webhook receiver has its own signing secret, derived from $POSTWATCH_WEBHOOK_SECRET (the
[webhook] secret_env), else from the unsubscribe secret: nothing to store, and the same URL
always has the same secret. Give it to whoever runs the receiver.""", examples="""\
  postwatch webhook secret https://hooks.example.org/postwatch
""")
    secret.add_argument("url", metavar="URL")
    verify = _command(webhook, "verify", webhook_verify_command,
                      "check a delivery's Postwatch-Signature header against its body, as a receiver does", """\
A delivery is a POST whose body is JSON of the schema postwatch.events/1, with the header
  Postwatch-Signature: t=TIMESTAMP,v1=HEX
where HEX is the HMAC-SHA256 of TIMESTAMP + "." + body keyed with the receiver's secret. This
command checks one: the signature must match and the timestamp be within --tolerance seconds of
now (an older one is a replay). Receivers also drop a delivery id (the body's "id", the header
Postwatch-Delivery) that they have seen before. The receiver's secret is read from the
environment, never from the command line.

exit status: 0 valid; 1 refused (one line saying why); 2 no secret or no body.""", examples="""\
  POSTWATCH_WEBHOOK_RECEIVER_SECRET=whsec_... postwatch webhook verify body.json --signature "t=...,v1=..."
""", reads_config=False)
    verify.add_argument("file", metavar="FILE", help="the request body exactly as received ('-': standard input)")
    verify.add_argument("--signature", required=True, metavar="HEADER", help="the Postwatch-Signature header's value")
    verify.add_argument("--secret-env", default="POSTWATCH_WEBHOOK_RECEIVER_SECRET", metavar="NAME",
                        help="the variable holding the receiver's secret (default: POSTWATCH_WEBHOOK_RECEIVER_SECRET)")
    verify.add_argument("--tolerance", type=float, default=300, metavar="SECONDS",
                        help="how old (or early) a signature may be (default: 300)")

    dkim = _group(commands, "dkim", "make a DKIM signing key and print the DNS record for it")
    keygen = _command(dkim, "keygen", dkim_keygen, "write a new 2048-bit RSA key (mode 0600) and print its TXT record", """\
postwatch signs every digest with DKIM when [dkim] selector and key_file are set; the public
half is published as a TXT record at SELECTOR._domainkey.DOMAIN.""", examples="""\
  postwatch dkim keygen --selector pw2026 --domain example.org --key dkim-pw2026.pem
""")
    keygen.add_argument("--selector", required=True, help="the DKIM selector, e.g. pw2026")
    keygen.add_argument("--domain", help="the signing domain (default: the domain of [digest] from)")
    keygen.add_argument("--key", metavar="FILE", help="where to write the key (default: [dkim] key_file, else "
                                                      "dkim-SELECTOR.pem beside the config file); never overwritten")
    _command(dkim, "record", dkim_record, "print the DNS TXT record for the configured [dkim] key")

    demo = _command(commands, "demo", demo_command, "the whole loop offline in one command, against a local replica", """\
Start a local replica of the LiNK blog and a local SMTP server on free loopback ports, run a
baseline check, add and edit posts, check again and send the digest. Touches none of your own
config or state.""", reads_config=False)
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder with the state, emails and preview")
    return parser


# --------------------------------------------------------------------------------------------
# Running a command
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    # Everything postwatch writes (database, .eml files, previews, the secret, lock files) is
    # private to the account it runs as: 0600 files, 0700 folders.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format or "text", args.verbose)
    try:
        if args.reads_config:
            from postwatch.oneshot import preloaded_config      # read by a quick `check` pass already?

            config = preloaded_config(args.config) or load_config(args.config)
        else:
            config = Config()
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    if not args.log_format and getattr(args, "daemon_logging", False) and config.daemon.log_format != "text":
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


def _fail(message: str, status: int = 2) -> int:
    print(f"postwatch: {message}", file=sys.stderr)
    return status


def _run_async(fn, *args, **kwargs):
    from crawler.runtime import run_here

    return run_here(functools.partial(fn, *args, **kwargs))


# --------------------------------------------------------------------------------------------
# check, digest, run
# --------------------------------------------------------------------------------------------
def check_sources(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        app.log_failures = False
        names = args.sources or [s.name for s in app.store.list_sources()]
        unknown = [n for n in names if app.store.get_source(n) is None]
        if unknown:
            return _fail(f"no such source: {', '.join(unknown)}")
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


def send_digests(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        ids = None
        if args.subscriber:
            subscriber = app.store.get_subscriber(args.subscriber)
            if subscriber is None:
                return _fail(f"no subscriber {args.subscriber}")
            ids = [subscriber.id]
        queued, stats = app.send_digests(ids)
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


def preview_digest(args: argparse.Namespace, config: Config) -> int:
    from digest.sender import preview

    with App.open(config, read_only=True) as app:
        if args.subscriber and app.store.get_subscriber(args.subscriber) is None:
            return _fail(f"no subscriber {args.subscriber}")
        path = preview(app.store, app.digest_settings(), args.subscriber, Path(args.file), datetime.now(timezone.utc),
                       app.source_filters())
        print(f"preview written to {path}")
        return 0


def run_daemon(args: argparse.Namespace, config: Config) -> int:
    import scheduler

    return scheduler.run_daemon(config, once=args.once)


def _bounded_int(text: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
    return value


def run_worker(args: argparse.Namespace, config: Config) -> int:
    from postwatch.cluster import WorkerSettings, require_postgresql, run_worker as run
    from state.cluster import NotPostgreSQL

    try:
        require_postgresql(config)
    except NotPostgreSQL as exc:
        return _fail(str(exc))
    try:
        import procrastinate  # noqa: F401 - the optional extra: said in one line when it is missing
    except ImportError as exc:
        return _fail(f"postwatch worker needs procrastinate: pip install 'postwatch[cluster]' ({exc.name} is missing)")
    if 60 % args.plan_every:
        return _fail(f"--plan-every must divide 60 seconds, not {args.plan_every}")
    from state import AlreadyRunning

    try:
        return run(config, WorkerSettings(plan_every=args.plan_every, batch_size=args.batch, concurrency=args.concurrency,
                                          heartbeat_every=args.heartbeat, stalled_after=args.stalled_after, name=args.name,
                                          metrics=args.metrics))
    except AlreadyRunning as exc:
        return _fail(str(exc), 1)


def demo_command(args: argparse.Namespace, config: Config) -> int:
    from postwatch.demo import run_demo

    return run_demo(keep=args.keep)


# --------------------------------------------------------------------------------------------
# subscribers
# --------------------------------------------------------------------------------------------
ADD_HELP = """\
ADDRESS is where their digests go: an email address; an http(s) URL, which gets each digest as
a signed JSON POST (see `postwatch webhook --help`); or an Apprise URL (tgram://, slack://,
discord://, ntfy://, json://... with the postwatch[apprise] extra), which gets a short text.

--include and --exclude are keyword filters on each change's title and text: a word or phrase
(whole words, any case) or a /regular expression/ in RE2's syntax (linear-time matching: no
lookaround or backreference). With --include terms a change must match one of them; a change
that matches an --exclude term is left out. A change left out for one subscriber still reaches
the others. `add` for an address already subscribed sets all of its settings anew, filters
included (none given: no filter).

An address that unsubscribed, was erased (subscribers forget) or was suppressed after hard
bounces ([digest] bounce_limit refusals like 550 5.1.1 in a row) is refused: only the person's
new consent subscribes them again, and the operator says so with --resubscribe (recorded in
their consent record: subscribers show). Readers can also sign up themselves on the daemon's
/subscribe page, confirming by the link emailed to them.

exit status: 0 subscribed or updated; 1 refused (unsubscribed, erased or suppressed); 2 a wrong value.
"""


def add_subscriber(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        try:
            email = normalized_address(args.email)
            options = schedule_options(config, args.cadence, args.at, args.tz, args.day, args.sources)
            options.update(filter_options(args.include, args.exclude))
            options["lang"] = lang_option(args.lang)
            unknown = [name for name in options["sources"] or () if app.store.get_source(name) is None]
            if unknown:
                raise ValueError(f"no such source: {', '.join(unknown)}")
        except ValueError as exc:
            return _fail(str(exc))
        existing = app.store.get_subscriber(email)
        if existing is not None and existing.origin == "config":
            return _fail(f"{_shown(email)} is a route of the config file ([[routes]]); change it there")
        try:
            subscriber = app.store.add_subscriber(email, resubscribe=args.resubscribe, **options)
        except NeedsConsent as exc:
            return _fail(f"{exc} (with their new consent: --resubscribe)", 1)
        filters = describe_filters(subscriber)
        print(f"subscribed {subscriber.email} ({describe_cadence(subscriber)}{'; ' + filters if filters else ''}); "
              f"they get changes from now on")
        from digest.delivery import message_kind

        if message_kind(subscriber.email) == "webhook":
            from digest.webhook import endpoint_secret

            print(f"webhook signing secret (give it to the receiver): {endpoint_secret(config.webhook_secret(), subscriber.email)}")
        return 0


def _shown(address: str) -> str:
    from digest.delivery import shown_address

    return shown_address(address)


def remove_subscriber(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        existing = app.store.get_subscriber(args.email.strip())
        if existing is not None and existing.origin == "config":
            return _fail(f"{_shown(existing.email)} is a route of the config file ([[routes]]); remove it there")
        if not app.store.remove_subscriber(args.email.strip()):
            return _fail(f"no subscriber {args.email}", 1)
        print(f"removed {args.email}")
        return 0


STATUSES = ("active", "pending", "unsubscribed", "suppressed")


def list_subscribers(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        rows = app.store.list_subscribers(status=args.status)
        for s in rows:
            sources = ",".join(s.sources) if s.sources else "all sources"
            filters = describe_filters(s)
            route = "  (route in the config)" if s.origin == "config" else ""
            print(f"{_shown(s.email):<40} {s.status:<13} {describe_cadence(s):<32} {sources}"
                  f"{'  ' + filters if filters else ''}{route}")
            if s.status == "suppressed":
                print(f"  suppressed {s.suppressed_at:%Y-%m-%d %H:%M}: {s.suppressed_reason}")
        print(f"{len(rows)} subscribers ({describe_statuses(Counter(s.status for s in rows))})")
        return 0


def show_subscriber(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        subscriber = app.store.get_subscriber(args.email.strip())
        if subscriber is None:
            return _fail(f"no subscriber {args.email}", 1)
        for label, value in consent_lines(subscriber):
            print(f"{label + ':':<22}{value}")
        return 0


def export_subscribers(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        rows = [export_row(s) for s in app.store.list_subscribers()]
    text = export_text(rows, args.format)
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="",
                  opener=lambda path, flags: os.open(path, flags, 0o600)) as handle:   # addresses: this account only
            handle.write(text)
    except OSError as exc:
        return _fail(f"{args.output}: cannot write: {exc.strerror or exc}", 1)
    print(f"{args.output}: {len(rows)} subscribers written ({args.format})")
    return 0


def forget_subscriber(args: argparse.Namespace, config: Config) -> int:
    try:
        email = normalized_email(args.email.strip())
    except ValueError as exc:
        return _fail(str(exc))
    with App.open(config) as app:
        erased = app.store.forget_subscriber(email)
    what = "erased" if erased else "nothing was stored for"
    print(f"{what} {email}; only its hash is kept, so it is not subscribed again without their consent")
    return 0


IMPORT_HELP = """\
Import subscribers from a UTF-8 CSV file with the columns
email[,cadence,at,tz,day,sources,include,exclude,lang]: either a header row naming them (any order),
or no header and that order. Empty cells take the [digest] defaults; sources are names
separated by ';', include and exclude are keyword filters: words or /regular expressions/
separated by ';', lang is en (default) or ko. The email column may hold a webhook or an Apprise URL instead.

Every row is checked first. Refused rows are listed one per line (FILE:LINE: reason), and if
any row is refused nothing is imported, unless --skip-invalid is given. An address that
unsubscribed or was suppressed (hard bounces) is refused: an import never subscribes them again
(only they can, and `subscribers add --resubscribe` records it). An address
already subscribed is updated to the row's settings, or counted as a duplicate when nothing
changes; so is an address listed twice with the same settings.

exit status: 0 every row imported or already there; 1 rows refused (nothing imported without
--skip-invalid); 2 the file could not be read (nothing imported).
"""


def import_subscribers(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    try:
        records = read_subscriber_rows(path)
    except ImportFileError as exc:
        return _fail(f"{exc}; nothing imported")
    with App.open(config) as app:
        return _import_rows(app, path, records, args.skip_invalid)


def _import_rows(app: App, path: Path, records: list[Record], skip_invalid: bool) -> int:
    checked = check_rows(app.config, records, {s.name for s in app.store.list_sources()})
    result = app.store.import_subscribers(checked.entries, commit=skip_invalid or not checked.refused,
                                          skip_refused=skip_invalid)
    refused = {**checked.refused, **{checked.lines[index]: reason for index, reason in result.refused.items()}}
    duplicates = checked.duplicates + result.unchanged
    for line in sorted(refused):
        print(f"postwatch: {path}:{line}: {refused[line]}", file=sys.stderr)
    counts = (f"{result.added} new, {result.updated} updated, {duplicates} duplicate{'s' * (duplicates != 1)}, "
              f"{len(refused)} refused")
    if result.committed:
        print(f"imported {path}: {counts}")
        return 1 if refused else 0
    return _fail(f"{path}: nothing imported: {len(refused)} row{'s' * (len(refused) != 1)} refused; the others "
                 f"would be {result.added} new, {result.updated} updated, {duplicates} duplicate{'s' * (duplicates != 1)} — "
                 f"correct the refused rows, or import the others with --skip-invalid", 1)


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def list_sources(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        for s in app.store.list_sources():
            extra = f" feed={s.feed_url}" if s.feed_url else ""
            print(f"{s.name:<20} {s.kind:<5} {s.url}{extra}  ({s.origin})")
        return 0


def try_source(args: argparse.Namespace, config: Config) -> int:
    from crawler.run import test_source

    report = _run_async(test_source, args.url, scrapy_overrides(config))
    print(report.describe())
    return 0 if report.ok else 1


def add_source(args: argparse.Namespace, config: Config) -> int:
    from crawler.run import test_source

    selectors = {}
    for item in args.selector:
        key, sep, css = item.partition("=")
        if not sep:
            return _fail(f"--selector {item!r} must be KEY=CSS")
        selectors[key.strip()] = css.strip()
    if not is_http_url(args.url):
        return _fail(f"{args.url!r} is not an http(s) URL")
    name = args.name or urlsplit(args.url).hostname.removeprefix("www.").split(".")[0]
    for key, css in selectors.items():
        problem = selector_problem(key, css)
        if problem:
            return _fail(f"source '{name}': --selector {problem}")
    if name == ALL_SOURCES:
        return _fail(f"the name '{name}' is reserved for the feed of all sources (use --name)")
    with App.open(config) as app:
        if app.store.get_source(name):
            return _fail(f"a source named '{name}' exists already (use --name)")
        record = SourceRecord(name=name, url=args.url, kind="auto", feed_url=args.feed_url, selectors=selectors,
                              title=args.title, origin="cli")
        if not args.no_test:
            report = _run_async(test_source, args.url, app.crawl_settings)
            print(report.describe())
            if not report.ok:
                return _fail(f"{name}: nothing added (use --no-test to add it anyway)", 1)
            record.kind = report.spec.kind
            record.feed_url = args.feed_url or report.spec.feed_url
            record.sitemap_url = report.spec.sitemap_url
            record.selectors = selectors or dict(report.spec.selectors or {})
        app.store.add_source(record)
        print(f"added source {name}: {args.url}; the first check records a baseline")
        return 0


def release_source(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        if app.store.get_source(args.name) is None:
            return _fail(f"no such source: {args.name}")
        count = app.store.release_source(args.name)
        print(f"{args.name}: released {count} held events; they go out with the next digest")
        return 0


def remove_source(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        record = app.store.get_source(args.name)
        if record is None:
            return _fail(f"no such source: {args.name}")
        if record.origin == "config":
            return _fail(f"source '{args.name}' comes from the config file; remove it there")
        app.store.remove_source(args.name)
        print(f"removed source {args.name}")
        return 0


# --------------------------------------------------------------------------------------------
# operators (the console's accounts)
# --------------------------------------------------------------------------------------------
ROLES = ("admin", "viewer")
OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")

OPERATORS_HELP = """\
Operators sign in to the console ([console] listen) with a name and a password. An admin sees and
changes everything (check now, release held changes, pause, add sources, suppress and forget
subscribers, retry deliveries); a viewer sees the same pages and changes nothing (every form
answers 403).

The password is read from standard input when it is not a terminal (its first line: for scripts
and tests), else asked twice without echo. At least 10 characters. It is stored as an Argon2id
hash; postwatch never keeps the password itself. Each sign-in, sign-out and action is written to
the log and to the audit table.

exit status: 0 added; 1 an operator of that name exists; 2 a wrong name, role or password."""


def _read_password(prompt_twice: bool = True) -> str:
    from postwatch.console.auth import password_problem

    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass("password: ")
        if prompt_twice and getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return password


def add_operator(args: argparse.Namespace, config: Config) -> int:
    from postwatch.console.auth import hash_password

    if not OPERATOR_NAME.fullmatch(args.name):
        return _fail(f"{args.name!r} is not a usable operator name (letters, digits, '.', '_', '-', '@'; at most 100)")
    try:
        password = _read_password()
    except ValueError as exc:
        return _fail(str(exc))
    with App.open(config) as app:
        if not app.store.add_operator(args.name, args.role, hash_password(password)):
            return _fail(f"an operator named {args.name!r} exists already (change the password: operators passwd)", 1)
        app.store.audit(_shell_user(), "operator added", args.name, f"role {args.role}", "cli")
    print(f"added operator {args.name} ({args.role})")
    return 0


def _shell_user() -> str:
    import getpass

    try:
        return f"shell:{getpass.getuser()}"
    except Exception:
        return "shell"


def list_operators(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        rows = app.store.list_operators()
    for op in rows:
        last = f"last sign-in {op.last_sign_in_at:%Y-%m-%d %H:%M}" if op.last_sign_in_at else "never signed in"
        print(f"{op.name:<24} {op.role:<7} added {op.created_at:%Y-%m-%d %H:%M}, {last}")
    print(f"{len(rows)} operator{'s' * (len(rows) != 1)}")
    return 0


def remove_operator(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        if not app.store.remove_operator(args.name):
            return _fail(f"no operator {args.name!r}", 1)
        app.store.audit(_shell_user(), "operator removed", args.name, None, "cli")
    print(f"removed operator {args.name}; their sessions have ended")
    return 0


def operator_password(args: argparse.Namespace, config: Config) -> int:
    from postwatch.console.auth import hash_password

    with App.open(config) as app:
        if app.store.get_operator(args.name) is None:
            return _fail(f"no operator {args.name!r}", 1)
        try:
            password = _read_password()
        except ValueError as exc:
            return _fail(str(exc))
        app.store.set_operator_password(args.name, hash_password(password))
        app.store.audit(_shell_user(), "password changed", args.name, None, "cli")
    print(f"{args.name}: password changed; their sessions have ended")
    return 0


# --------------------------------------------------------------------------------------------
# history, status, config
# --------------------------------------------------------------------------------------------
def show_history(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        events = app.store.history(args.source, limit=args.limit)
        for e in events:
            state = "" if e.status == "published" else f" [{e.status}]"
            print(f"{e.created_at:%Y-%m-%d %H:%M} {e.source:<12} {e.kind:<8} {e.title} <{e.url}>{state}")
        if not events:
            print("no events yet")
        return 0


def write_feed_command(args: argparse.Namespace, config: Config) -> int:
    from digest.feed import UnknownFeed, write_feed

    with App.open(config, read_only=True) as app:
        try:
            atom = app.feed(args.source)
        except UnknownFeed as exc:
            return _fail(str(exc), 1)
    if not args.output:
        sys.stdout.buffer.write(atom.body)
        sys.stdout.flush()
        return 0
    try:
        write_feed(Path(args.output), atom.body)
    except OSError as exc:
        return _fail(f"{args.output}: cannot write the feed: {exc.strerror or exc}", 1)
    newest = f", the newest from {atom.updated:%Y-%m-%d %H:%M} UTC" if atom.updated else ""
    print(f"{args.output}: {args.source} feed written, {atom.entries} entries{newest}")
    return 0


def write_archive_command(args: argparse.Namespace, config: Config) -> int:
    from digest.archive import write_static

    with App.open(config, read_only=True) as app:
        try:
            written = write_static(app.store, app.digest_settings(), Path(args.output), args.lang)
        except OSError as exc:
            return _fail(f"{args.output}: cannot write the archive: {exc.strerror or exc}", 1)
    print(f"{args.output}: archive written, {written.pages} pages ({written.sources} sources, "
          f"{written.editions} editions)")
    return 0


def show_status(args: argparse.Namespace, config: Config) -> int:
    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "never"

    with App.open(config, read_only=True) as app:
        for s in app.store.source_status():
            flag = f"DEGRADED ({s.degraded_reason}; {s.held_events} held)" if s.degraded else "ok"
            if s.consecutive_failures:
                flag = f"FAILING ({s.consecutive_failures} checks in a row)" + ("" if flag == "ok" else f", {flag}")
            print(f"{s.name}: {s.url}\n  posts {s.posts}, last check {when(s.last_check_at)}, last success "
                  f"{when(s.last_success_at)}, {flag}")
            if s.last_error:
                print(f"  last error: {s.last_error} ({s.consecutive_failures} in a row)")
            if s.volatile_posts:
                print(f"  {s.volatile_posts} volatile post(s) (content changes on every fetch; edits not mailed):")
                for _, url, since in app.store.volatile_posts(s.name):
                    print(f"    {url} (since {when(since)})")
        counts = app.store.subscriber_counts()
        print(f"subscribers: {sum(counts.values())} ({describe_statuses(counts)})")
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
        return 0


def config_findings(config: Config) -> tuple[list[str], str]:
    """What `config check` finds beyond parsing: (problems, the DKIM line). The console's
    settings page shows the same."""
    where = config.path or "built-in defaults (no config file)"
    dkim_line, problems = dkim_report(config, str(where))
    return relay_problems(config, str(where)) + problems, dkim_line


def check_config(args: argparse.Namespace, config: Config) -> int:
    where = config.path or "built-in defaults (no config file)"
    problems, dkim_line = config_findings(config)
    for line in problems:
        print(f"postwatch: {line}", file=sys.stderr)
    if problems:
        return 2
    delivery = config.describe_delivery()
    if config.delivery_channel == "smtp":
        delivery += f", MAIL FROM {config.envelope_sender}, unsubscribe {config.unsubscribe_url}, {dkim_line}"
    print(f"{where}: ok — {len(config.sources)} sources, database {config.database}, {delivery}")
    return 0


def webhook_secret_command(args: argparse.Namespace, config: Config) -> int:
    from digest.delivery import message_kind
    from digest.webhook import endpoint_secret

    if message_kind(args.url.strip()) != "webhook":
        return _fail(f"{args.url!r} is not a webhook URL (http:// or https://)")
    print(endpoint_secret(config.webhook_secret(), args.url.strip()))
    return 0


def webhook_verify_command(args: argparse.Namespace, config: Config) -> int:
    from digest.webhook import InvalidSignature, verify_signature

    secret = os.environ.get(args.secret_env, "")
    if not secret:
        return _fail(f"${args.secret_env} is empty: set it to the receiver's signing secret (whsec_...)")
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        return _fail(f"{args.file}: cannot read the body: {exc.strerror or exc}")
    try:
        timestamp = verify_signature(secret, args.signature, body, tolerance=args.tolerance)
    except InvalidSignature as exc:
        return _fail(f"signature refused: {exc}", 1)
    signed = datetime.fromtimestamp(timestamp, timezone.utc)
    print(f"signature ok: signed {signed:%Y-%m-%d %H:%M:%S} UTC, {len(body)} bytes")
    return 0


def dkim_record(args: argparse.Namespace, config: Config) -> int:
    signer = config.dkim_signer()
    if signer is None:
        return _fail("[dkim] selector and key_file are not set; make a key with: postwatch dkim keygen --selector NAME")
    print(signer.zone_line())
    return 0


def dkim_keygen(args: argparse.Namespace, config: Config) -> int:
    from digest.signing import DkimProblem, DkimSigner, generate_key

    domain = args.domain or config.from_domain
    problems = dkim_name_problems(args.selector, domain)
    if problems:
        raise ConfigError([f"dkim keygen: {problem}" for problem in problems])
    key_path = Path(args.key) if args.key else (config.base_dir / (config.dkim.key_file or f"dkim-{args.selector}.pem"))
    try:
        signer = DkimSigner(domain, args.selector, generate_key(key_path), key_path)
    except DkimProblem as exc:
        return _fail(str(exc), 1)
    print(f"wrote {key_path.resolve()} (mode 0600: only this account may read it)\n"
          f"Publish this TXT record in the DNS of {signer.domain}:\n{signer.zone_line()}\n"
          f"then add to {config.path or 'the config file'}:\n[dkim]\nselector = \"{signer.selector}\"\n"
          f"domain = \"{signer.domain}\"\nkey_file = \"{key_path.resolve()}\"")
    return 0


def print_example_config(args: argparse.Namespace, config: Config) -> int:
    print((Path(__file__).parent / "examples" / "postwatch.toml").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
