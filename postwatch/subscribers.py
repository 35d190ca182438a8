"""What people give postwatch about subscribers — an address, a schedule, a CSV list of them —
checked before anything is stored. Every function raises ValueError (or ImportFileError) whose
str() is the one line to show; the CLI shows it."""
from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo


from postwatch.config.schema import Config
from postwatch.vocabulary import CADENCES, TIME_OF_DAY, WEEKDAYS
from state import Subscriber

IMPORT_COLUMNS = ("email", "cadence", "at", "tz", "day", "sources", "include", "exclude", "lang")

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


def normalized_email(address: str) -> str:
    """The address normalised; ValueError saying why it is not one."""
    from email_validator import EmailNotValidError, validate_email     # its DNS tables: not for --help

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


def normalized_address(address: str) -> str:
    """A subscriber's address normalised: an email address, or the URL of a channel that claims
    it (a webhook's https://..., an Apprise URL such as tgram://...); ValueError saying why not."""
    from digest.delivery import address_problem, channel_for_address

    address = address.strip()
    if channel_for_address(address) is None:
        return normalized_email(address)
    problem = address_problem(address)
    if problem:
        raise ValueError(problem)
    return address


def filter_options(include: list[str] | None, exclude: list[str] | None) -> dict:
    """Keyword arguments `include` and `exclude` of Store.add_subscriber; ValueError naming a
    term that is not a word or a regular expression."""
    from digest.filters import filter_problems

    include = [t.strip() for t in include or () if t.strip()]
    exclude = [t.strip() for t in exclude or () if t.strip()]
    problems = filter_problems(include, exclude)
    if problems:
        raise ValueError(problems[0])
    return {"include": include, "exclude": exclude}


def lang_option(lang: str | None) -> str:
    """The language of a subscriber's mails and pages ("en" when not given); ValueError else."""
    from digest.i18n import LANGUAGES

    lang = (lang or "en").strip().lower()
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} must be one of {', '.join(LANGUAGES)}")
    return lang


def describe_filters(subscriber: Subscriber) -> str:
    """ "include visa, /refugees?/; exclude podcast" or "" with no filter."""
    parts = [f"{name} {', '.join(terms)}" for name, terms in (("include", subscriber.include),
                                                              ("exclude", subscriber.exclude)) if terms]
    return "; ".join(parts)


def schedule_options(config: Config, cadence: str | None, at: str | None, tz: str | None, day: str | None,
                     sources: list[str] | None) -> dict:
    """Keyword arguments of Store.add_subscriber, the [digest] defaults filling what is not given.
    ValueError naming the value that is wrong."""
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
    if not TIME_OF_DAY.fullmatch(options["send_time"]):
        raise ValueError(f"time {options['send_time']!r} must be HH:MM")
    if options["cadence"] == "weekly":
        day = (day or WEEKDAYS[config.digest.default_weekday]).lower()[:3]
        if day not in WEEKDAYS:
            raise ValueError(f"day {day!r} must be one of {', '.join(WEEKDAYS)}")
        options["weekday"] = WEEKDAYS.index(day)
    return options


def describe_statuses(counts: Mapping[str, int]) -> str:
    """ "2 active, 1 unsubscribed, 1 suppressed": active always shown, the others when there are any."""
    shown = ["active", *sorted(status for status in counts if status != "active" and counts[status])]
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in shown)


def describe_cadence(subscriber: Subscriber, lang: str = "en") -> str:
    from digest.i18n import tr

    if subscriber.cadence == "immediate":
        return tr(lang, "after each check")
    if subscriber.cadence == "weekly":
        if lang == "en":
            day = WEEKDAYS[subscriber.weekday or 0]
        else:
            from babel.dates import get_day_names

            day = get_day_names("wide", locale=lang)[subscriber.weekday or 0]
        return tr(lang, "weekly, %(day)s %(time)s %(zone)s", day=day, time=subscriber.send_time, zone=subscriber.timezone)
    return tr(lang, "daily %(time)s %(zone)s", time=subscriber.send_time, zone=subscriber.timezone)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def consent_lines(subscriber: Subscriber) -> list[tuple[str, str]]:
    """What `subscribers show` prints: the settings, then the consent record."""
    s = subscriber
    lines = [("address", s.email), ("status", s.status), ("schedule", describe_cadence(s)),
             ("sources", ", ".join(s.sources) if s.sources else "all sources"),
             ("joined via", {"page": "the /subscribe page", "cli": "the command line (subscribers add)",
                             "import": "an import (subscribers import)"}.get(s.joined_via or "", "not recorded (before 0007)")),
             ("created", _when(s.created_at)), ("subscribed since", _when(s.subscribed_at) or "-"),
             ("confirmed", _when(s.confirmed_at) or ("not confirmed" if s.status == "pending" else
                                                     "-" if s.joined_via == "page" else "no link (added by the operator)"))]
    if s.confirmed_at:
        lines += [("confirmed from IP", s.confirm_ip or "-"), ("confirmed by agent", s.confirm_user_agent or "-")]
    if s.signup_at:
        lines.append(("signup waiting since", _when(s.signup_at) + (f" (reminded {_when(s.reminded_at)})" if s.reminded_at else "")))
    if s.consent_note:
        lines.append(("consent note", s.consent_note))
    if s.status == "suppressed":
        lines.append(("suppressed", f"{_when(s.suppressed_at)}: {s.suppressed_reason}"))
    return lines


EXPORT_FIELDS = ("email", "status", "cadence", "send_time", "timezone", "weekday", "sources", "lang", "joined_via", "created_at",
                 "subscribed_at", "confirmed_at", "confirm_ip", "confirm_user_agent", "consent_note", "signup_at",
                 "reminded_at", "bounces", "suppressed_reason", "suppressed_at")


def export_row(subscriber: Subscriber) -> dict:
    row = {name: getattr(subscriber, name) for name in EXPORT_FIELDS}
    row["weekday"] = WEEKDAYS[subscriber.weekday] if subscriber.weekday is not None else None
    for name, value in row.items():
        if hasattr(value, "isoformat"):
            row[name] = value.isoformat()
    return row


def export_text(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "sources": ";".join(row["sources"] or ())})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# A CSV list of subscribers
# --------------------------------------------------------------------------------------------
class ImportFileError(ValueError):
    """The file as a whole cannot be read as a subscriber list; str() is one line."""


Record = tuple[int, dict[str, str] | None]     # (line number, {column: cell}); None: more cells than columns


def read_subscriber_rows(path: Path) -> list[Record]:
    """Every non-empty record of the CSV file with its line number. Raises ImportFileError."""
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


@dataclass
class CheckedRows:
    """The rows of a subscriber list after every check that needs no database."""
    entries: list[dict] = field(default_factory=list)     # keyword arguments of Store.import_subscribers' entries
    lines: list[int] = field(default_factory=list)        # the line of each entry
    refused: dict[int, str] = field(default_factory=dict)  # line -> why
    duplicates: int = 0                                    # an address listed again with the same settings


def check_rows(config: Config, records: list[Record], known_sources: set[str]) -> CheckedRows:
    checked = CheckedRows()
    first_seen: dict[str, int] = {}          # address -> index into entries
    for line, row in records:
        try:
            if row is None:
                raise ValueError(f"more cells than columns ({', '.join(IMPORT_COLUMNS)})")
            address = (row.get("email") or "").strip()
            if not address:
                raise ValueError("no email address (or webhook or Apprise URL)")
            email = normalized_address(address)
            sources = [s.strip() for s in (row.get("sources") or "").replace(";", ",").split(",") if s.strip()] or None
            options = schedule_options(config, *((row.get(key) or "").strip() or None
                                                 for key in ("cadence", "at", "tz", "day")), sources)
            # Terms are separated by ';' (a comma may be part of a phrase or a regular expression).
            options.update(filter_options((row.get("include") or "").split(";"), (row.get("exclude") or "").split(";")))
            options["lang"] = lang_option((row.get("lang") or "").strip() or None)
            unknown = [name for name in sources or () if name not in known_sources]
            if unknown:
                raise ValueError(f"no such source: {', '.join(unknown)}")
        except ValueError as exc:
            checked.refused[line] = str(exc)
            continue
        earlier = first_seen.get(email.lower())
        if earlier is not None:
            if {k: v for k, v in checked.entries[earlier].items() if k != "email"} == options:
                checked.duplicates += 1
            else:
                checked.refused[line] = f"{email} is also on line {checked.lines[earlier]} with other settings"
            continue
        first_seen[email.lower()] = len(checked.entries)
        checked.entries.append({"email": email, **options})
        checked.lines.append(line)
    return checked
