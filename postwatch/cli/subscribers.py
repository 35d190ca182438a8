"""`postwatch subscribers`: add, remove, list, show, export, forget and import subscribers."""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from postwatch.app import App
from postwatch.cli.common import Commands, command, fail, group
from postwatch.config import CADENCES, Config
from postwatch.subscribers import (ImportFileError, Record, check_rows, consent_lines, describe_cadence,
                                   describe_filters, describe_statuses, export_row, export_text, filter_options, lang_option,
                                   normalized_address, normalized_email, read_subscriber_rows,
                                   schedule_options)
from state import NeedsConsent

STATUSES = ("active", "pending", "unsubscribed", "suppressed")


def add_parser(commands: Commands) -> None:
    actions = group(commands, "subscribers", "add, remove, list, show, import, export or forget subscribers")
    for add in (_add_parser, _remove_parser, _list_parser, _show_parser, _export_parser, _forget_parser, _import_parser):
        add(actions)


def _shown(address: str) -> str:
    from digest.delivery import shown_address

    return shown_address(address)


# --------------------------------------------------------------------------------------------
# subscribers add, remove
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


def _add_parser(actions: Commands) -> None:
    add = command(actions, "add", add_subscriber, "add a subscriber (or change one's settings); they get changes from now on",
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
            return fail(str(exc))
        existing = app.store.get_subscriber(email)
        if existing is not None and existing.origin == "config":
            return fail(f"{_shown(email)} is a route of the config file ([[routes]]); change it there")
        try:
            subscriber = app.store.add_subscriber(email, resubscribe=args.resubscribe, **options)
        except NeedsConsent as exc:
            return fail(f"{exc} (with their new consent: --resubscribe)", 1)
        filters = describe_filters(subscriber)
        print(f"subscribed {subscriber.email} ({describe_cadence(subscriber)}{'; ' + filters if filters else ''}); "
              f"they get changes from now on")
        from digest.delivery import message_kind

        if message_kind(subscriber.email) == "webhook":
            from digest.webhook import endpoint_secret

            print(f"webhook signing secret (give it to the receiver): {endpoint_secret(config.webhook_secret(), subscriber.email)}")
        return 0


def _remove_parser(actions: Commands) -> None:
    remove = command(actions, "remove", remove_subscriber, "remove a subscriber")
    remove.add_argument("email")


def remove_subscriber(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        existing = app.store.get_subscriber(args.email.strip())
        if existing is not None and existing.origin == "config":
            return fail(f"{_shown(existing.email)} is a route of the config file ([[routes]]); remove it there")
        if not app.store.remove_subscriber(args.email.strip()):
            return fail(f"no subscriber {args.email}", 1)
        print(f"removed {args.email}")
        return 0


# --------------------------------------------------------------------------------------------
# subscribers list, show, export
# --------------------------------------------------------------------------------------------
def _list_parser(actions: Commands) -> None:
    listing = command(actions, "list", list_subscribers, "list subscribers: address, status, schedule, sources",
                      examples="""\
  postwatch subscribers list
  postwatch subscribers list --status pending     signups waiting for their confirmation link
""")
    listing.add_argument("--status", choices=STATUSES, help="only subscribers with this status")


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


def _show_parser(actions: Commands) -> None:
    show = command(actions, "show", show_subscriber, "one subscriber's settings and consent record", """\
Print a subscriber's settings and consent record: how they joined (page, cli, import), when,
when the confirmation link was followed and the IP address and user agent of that request, a
re-consent after unsubscribing, and a suppression's reason.

exit status: 0 shown; 1 no such subscriber.""", """\
  postwatch subscribers show ada@example.org
""")
    show.add_argument("email")


def show_subscriber(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        subscriber = app.store.get_subscriber(args.email.strip())
        if subscriber is None:
            return fail(f"no subscriber {args.email}", 1)
        for label, value in consent_lines(subscriber):
            print(f"{label + ':':<22}{value}")
        return 0


def _export_parser(actions: Commands) -> None:
    export = command(actions, "export", export_subscribers, "every subscriber and consent record, as CSV or JSON", """\
Write every subscriber with their settings and consent record to standard output (or FILE, made
readable by this account only): for a data-protection request, or a move to another list.""", """\
  postwatch subscribers export --format csv > subscribers.csv
  postwatch subscribers export --format json -o subscribers.json
""")
    export.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    export.add_argument("-o", "--output", metavar="FILE", help="write FILE (mode 0600) instead of standard output")


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
        return fail(f"{args.output}: cannot write: {exc.strerror or exc}", 1)
    print(f"{args.output}: {len(rows)} subscribers written ({args.format})")
    return 0


# --------------------------------------------------------------------------------------------
# subscribers forget, import
# --------------------------------------------------------------------------------------------
def _forget_parser(actions: Commands) -> None:
    forget = command(actions, "forget", forget_subscriber, "erase an address on request, keeping only its hash", """\
Erase everything stored for the address: its subscriber row and consent record, and the messages
queued or kept for it. Only the sha256 of the normalised address is kept, on the suppression
list: `subscribers add` and `import` refuse it, and a signup on the page needs its confirmation
link (the person's new consent) before anything is sent again.

exit status: 0 erased (or nothing was stored; the hash is kept either way); 2 not an address.""", """\
  postwatch subscribers forget ada@example.org
""")
    forget.add_argument("email")


def forget_subscriber(args: argparse.Namespace, config: Config) -> int:
    try:
        email = normalized_email(args.email.strip())
    except ValueError as exc:
        return fail(str(exc))
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


def _import_parser(actions: Commands) -> None:
    importer = command(actions, "import", import_subscribers,
                       "import subscribers from a CSV file (columns: email[,cadence,at,tz,day,sources,include,exclude,lang])",
                       IMPORT_HELP,
                       """\
  postwatch subscribers import people.csv
  postwatch subscribers import people.csv --skip-invalid
""")
    importer.add_argument("file")
    importer.add_argument("--skip-invalid", action="store_true",
                          help="import the valid rows even when others are refused (they are still listed)")


def import_subscribers(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    try:
        records = read_subscriber_rows(path)
    except ImportFileError as exc:
        return fail(f"{exc}; nothing imported")
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
    return fail(f"{path}: nothing imported: {len(refused)} row{'s' * (len(refused) != 1)} refused; the others "
                f"would be {result.added} new, {result.updated} updated, {duplicates} duplicate{'s' * (duplicates != 1)} — "
                f"correct the refused rows, or import the others with --skip-invalid", 1)
