"""Reading the config file: TOML into the schema (postwatch.config.schema), every problem found
at once, one line each naming the file and the setting."""
from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from crawler.urls import is_http_url
from postwatch.config.schema import (ROUTE_KEYS, SECTIONS, SOURCE_KEYS, TOP_LEVEL_KEYS, Config, RouteConfig,
                                     SourceConfig, default_sources, selector_problem, toml_key)
from postwatch.vocabulary import ALL_SOURCES, ConfigError, parse_duration

CONFIG_ENV = "POSTWATCH_CONFIG"
DEFAULT_CONFIG_NAME = "postwatch.toml"


def find_config_path(explicit: str | os.PathLike | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.exists() else None


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Read and validate the config; raises ConfigError listing every problem."""
    path = find_config_path(explicit)
    if path is None:
        return Config(sources=default_sources())
    try:
        check_config_file_owner(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder, not a config file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, path)


def check_config_file_owner(path: Path) -> None:
    """Refuse a config file that someone else could have written, as ssh does: whoever can edit
    it chooses the database, the mail server and the templates. Raises ConfigError."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(path)
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError([f"{path}: owned by uid {info.st_uid}, not by you (uid {os.geteuid()}) or root; "
                           f"refused because its owner controls postwatch"])
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and not _private_group(info)):
        raise ConfigError([f"{path}: writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'} "
                           f"(mode {stat.S_IMODE(info.st_mode):04o}); refused because whoever can edit it controls "
                           f"postwatch: chmod go-w {path}"])


def _private_group(info: os.stat_result) -> bool:
    """The file's group is its owner's own user-private group (umask 002 systems such as Ubuntu
    create files group-writable): nobody else can write through it. Debian's ssh allows the same."""
    import grp
    import pwd

    try:
        owner, group = pwd.getpwuid(info.st_uid), grp.getgrgid(info.st_gid)
    except KeyError:
        return False
    return owner.pw_gid == info.st_gid and group.gr_name == owner.pw_name and set(group.gr_mem) <= {owner.pw_name}


def parse_config(raw: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    problems: list[str] = [f"{where}: unknown key '{key}'" for key in raw if key not in TOP_LEVEL_KEYS]
    config = Config(path=path.resolve() if path else None)
    if "database" in raw:
        if not isinstance(raw["database"], str) or not raw["database"]:
            problems.append(f"{where}: 'database' must be a file path or a database URL")
        else:
            config.database = raw["database"]
            problem = database_url_problem(config.database)
            if problem:
                problems.append(f"{where}: database {problem}")
    for name in SECTIONS:
        problems += _parse_section(raw.get(name, {}), getattr(config, name), where, name)
    config.sources = _parse_sources(raw.get("sources"), where, problems)
    config.routes = _parse_routes(raw.get("routes"), config, where, problems)
    problems.extend(validate(config, where))
    if problems:
        raise ConfigError(problems)
    return config


def _parse_section(table: Any, section: Any, where: str, name: str) -> list[str]:
    """Set the section's settings from its TOML table; a line for each key it does not have
    and each value of the wrong type."""
    if not isinstance(table, dict):
        return [f"{where}: [{name}] must be a table"]
    problems = []
    by_key = {toml_key(spec): spec for spec in fields(section)}
    for key, value in table.items():
        spec = by_key.get(key)
        if spec is None:
            problems.append(f"{where}: unknown key '{key}' in [{name}]")
            continue
        try:
            setattr(section, spec.name, _coerce(spec.type, value))
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: [{name}] {key}: {exc}")
    return problems


# What the installed drivers serve: SQLite, and PostgreSQL through psycopg 3
# (state.database.database_url reads postgresql:// as postgresql+psycopg://).
_DATABASE_DRIVERS = {"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"}


def database_url_problem(database: str) -> str | None:
    """Why `database` (a SQLite path or a URL) cannot be used, or None."""
    if "://" not in database:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database)
    except (ArgumentError, ValueError):
        return "is neither a SQLite file path nor a database URL"
    shown = url.render_as_string(hide_password=True)
    if url.drivername in _DATABASE_DRIVERS:
        return None
    if url.get_backend_name() == "postgresql":
        # Rewriting it would quietly swap the driver the operator named; saying so is one edit for them.
        return (f"'{shown}' names the driver '{url.get_driver_name()}', which postwatch does not use: "
                f"write postgresql:// or postgresql+psycopg:// (psycopg 3)")
    return f"'{shown}' must be a SQLite file path, sqlite:///PATH or a postgresql:// URL"


def _same(value: Any) -> Any:
    return value


# A setting's type (its annotation without "| None" and without the item types) -> (accepts
# the TOML value, what it must be, the value postwatch keeps).
_TYPES: dict[str, tuple[Any, str, Any]] = {
    "str": (lambda value: isinstance(value, str), "must be a string", _same),
    "bool": (lambda value: isinstance(value, bool), "must be true or false", _same),
    "int": (lambda value: isinstance(value, int) and not isinstance(value, bool), "must be a whole number", _same),
    "float": (lambda value: isinstance(value, (int, float)) and not isinstance(value, bool), "must be a number", float),
    "Path": (lambda value: isinstance(value, str), "must be a path string", Path),
    "list": (lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
             "must be a list of strings", _same),
    "dict": (lambda value: isinstance(value, dict), "must be a table", _same),
}


def _coerce(annotation: Any, value: Any) -> Any:
    """A TOML value as the setting annotated `annotation` keeps it; TypeError (ValueError for a
    duration) saying what it must be."""
    kind = str(annotation).removesuffix(" | None").partition("[")[0]
    if kind == "timedelta":
        return parse_duration(value)
    accepts, must_be, keep = _TYPES[kind]
    if not accepts(value):
        raise TypeError(must_be)
    return keep(value)


def _tables(items: Any, table: str, where: str, problems: list[str]):
    """(label, table) for each entry of the array of tables [[table]]; one line for an array that
    is not one, and for each entry that is not a table."""
    if not isinstance(items, list):
        problems.append(f"{where}: '{table}' must be an array of tables ([[{table}]])")
        return
    for index, item in enumerate(items, 1):
        label = f"{where}: [[{table}]] #{index}"
        if isinstance(item, dict):
            yield label, item
        else:
            problems.append(f"{label} must be a table")


def _parse_sources(items: Any, where: str, problems: list[str]) -> list[SourceConfig]:
    if items is None:
        return default_sources()
    sources: list[SourceConfig] = []
    for label, item in _tables(items, "sources", where, problems):
        problems += [f"{label}: unknown key '{key}'" for key in item if key not in SOURCE_KEYS]
        name = item.get("name")
        if not name or not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            problems.append(f"{label}: 'name' must be a short identifier (letters, digits, - _ .)")
            continue
        label = f"{where}: source '{name}'"
        found: list[str] = []
        source = _parse_source(name, item, found)
        if any(s.name == name for s in sources) and source is not None:
            found.append("defined twice")
        problems += [f"{label}: {problem}" for problem in found]
        if source is not None:
            sources.append(source)
    return sources


def _parse_source(name: str, item: dict[str, Any], problems: list[str]) -> SourceConfig | None:
    """One [[sources]] table; None when its url (or name) leaves nothing to watch."""
    if name == ALL_SOURCES:
        problems.append(f"the name '{ALL_SOURCES}' is reserved for the feed of all sources; choose another")
        return None
    url = item.get("url")
    if not isinstance(url, str) or not is_http_url(url):
        problems.append(f"url {url!r} is not an http(s) URL")
        return None
    for key in ("feed_url", "sitemap_url"):
        if item.get(key) is not None and not is_http_url(str(item[key])):
            problems.append(f"{key} {item[key]!r} is not an http(s) URL")
    selectors = item.get("selectors", {})
    if not isinstance(selectors, dict):
        problems.append("selectors must be a table")
        selectors = {}
    problems += [f"selectors.{problem}" for key, css in selectors.items() if (problem := selector_problem(key, css))]
    kind = _source_kind(item.get("kind", item.get("preset", "auto")), selectors, problems)
    lang = item.get("lang")
    if lang is not None and not (isinstance(lang, str) and re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", lang)):
        problems.append(f"lang {lang!r} is not a language tag (BCP 47, such as \"en\" or \"ko\")")
        lang = None
    interval = None
    if "interval" in item:
        try:
            interval = parse_duration(item["interval"])
        except ValueError as exc:
            problems.append(f"interval: {exc}")
    include, exclude = _source_filters(item.get("include"), item.get("exclude"), problems)
    return SourceConfig(name=name, url=url, kind=kind, title=item.get("title"), feed_url=item.get("feed_url"),
                        sitemap_url=item.get("sitemap_url"), interval=interval, selectors=dict(selectors),
                        include=include, exclude=exclude, lang=lang)


def _source_kind(kind: Any, selectors: dict[str, Any], problems: list[str]) -> Any:
    """The source kind's current name (a deprecated one such as "link" becomes it); the kind's
    own problems with the selectors go to `problems`."""
    # crawler.kinds loads parsel and lxml (45 ms measured): `--help`, a run on the built-in
    # default source and sources of the built-in kinds (crawler.plan.BUILT_IN_KINDS) need not
    # pay it; another kind's name is looked up in its registry.
    from crawler.plan import BUILT_IN_KINDS

    if isinstance(kind, str) and kind in BUILT_IN_KINDS and "crawler.kinds" not in sys.modules:
        return BUILT_IN_KINDS[kind][0]
    from crawler.kinds import SourceKind, UnknownSourceKind

    try:
        kind_class = SourceKind.named(kind)
    except UnknownSourceKind as exc:
        problems.append(str(exc))
        return kind
    problems += kind_class.config_problems(selectors)
    return kind_class.__kind__


def _source_filters(include: Any, exclude: Any, problems: list[str]) -> tuple[list[str], list[str]]:
    """A source's include and exclude terms; none when any term is wrong (each said in `problems`)."""
    if include is None and exclude is None:
        return [], []
    from digest.filters import filter_problems      # google-re2: only for sources that filter

    wrong = filter_problems(include, exclude)
    problems += wrong
    return ([], []) if wrong else (list(include or ()), list(exclude or ()))


def _parse_routes(items: Any, config: Config, where: str, problems: list[str]) -> list[RouteConfig]:
    """[[routes]]: each checked as `subscribers add` checks its arguments."""
    if items is None:
        return []
    routes: list[RouteConfig] = []
    for label, item in _tables(items, "routes", where, problems):
        unknown = [key for key in item if key not in ROUTE_KEYS]
        if unknown:
            problems.append(f"{label}: unknown key '{unknown[0]}' (keys: {', '.join(sorted(ROUTE_KEYS))})")
            continue
        if not isinstance(item.get("to"), str) or not item["to"].strip():
            problems.append(f"{label}: 'to' must be a webhook URL, an Apprise URL or an email address")
            continue
        # A route's URL may hold a token (a Telegram bot's, a Slack webhook's): only its scheme is shown.
        label = f"{label} ({item['to'].partition('://')[0]}://…)" if "://" in item["to"] else f"{label} ({item['to']})"
        try:
            route = _parse_route(item, config)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if any(r.to.lower() == route.to.lower() for r in routes):
            problems.append(f"{label}: defined twice")
            continue
        routes.append(route)
    return routes


def _parse_route(item: dict[str, Any], config: Config) -> RouteConfig:
    """One [[routes]] table whose `to` is a string; ValueError saying what is wrong."""
    # email_validator (and Apprise for its URLs) only for a config that has routes.
    from postwatch.subscribers import filter_options, normalized_address, schedule_options

    to = normalized_address(item["to"])
    for key in ("sources", "include", "exclude"):
        if item.get(key) is not None and not (isinstance(item[key], list) and all(isinstance(v, str) for v in item[key])):
            raise ValueError(f"{key} must be a list of strings")
    strings = {key: item.get(key) for key in ("cadence", "at", "tz", "day")}
    if any(value is not None and not isinstance(value, str) for value in strings.values()):
        raise ValueError("cadence, at, tz and day must be strings")
    options = schedule_options(config, strings["cadence"] or "immediate", strings["at"], strings["tz"],
                               strings["day"], item.get("sources"))
    options.update(filter_options(item.get("include"), item.get("exclude")))
    unknown_sources = [name for name in options["sources"] or () if name not in {s.name for s in config.sources}]
    if unknown_sources:
        raise ValueError(f"no such source in the config: {', '.join(unknown_sources)}")
    return RouteConfig(to=to, options=options)


def validate(config: Config, where: str = "config") -> list[str]:
    """Each section's and each source's checks that need no network, one line each naming where."""
    problems = [f"{where}: [{name}] {problem}" for name, section in config.sections().items()
                for problem in section.problems(config)]
    problems += [f"{where}: source '{source.name}': {problem}" for source in config.sources
                 for problem in source.problems(config)]
    return problems
