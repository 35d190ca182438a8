"""The one TOML config file, its defaults and its validation.

Every setting has a default, so postwatch runs with no file at all: the LiNK blog as the only
source, SQLite state in ./postwatch.db and digests written as .eml files into ./outbox.
"""
from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CONFIG_ENV = "POSTWATCH_CONFIG"
DEFAULT_CONFIG_NAME = "postwatch.toml"

LINK_BLOG_URL = "https://libertyinnorthkorea.org/blog"


class ConfigError(ValueError):
    """A config problem; str() is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '1h', '2d', '1w' or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 90s, 15m, 1h, 2d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass
class SourceConfig:
    name: str
    url: str
    kind: str = "auto"
    title: str | None = None
    feed_url: str | None = None
    sitemap_url: str | None = None
    interval: timedelta | None = None
    selectors: dict[str, str] = field(default_factory=dict)


@dataclass
class CrawlConfig:
    contact_url: str = "https://github.com/postwatch/postwatch"
    interval: timedelta = timedelta(hours=1)
    jitter: timedelta = timedelta(minutes=2)
    full_sweep_every: timedelta = timedelta(days=1)
    download_delay: float = 1.0
    concurrency_per_host: int = 2
    autothrottle: bool = True
    timeout: float = 30.0
    retries: int = 2
    max_page_mb: float = 5.0
    retry_after_max: timedelta = timedelta(minutes=5)
    robots_ttl: timedelta = timedelta(hours=24)
    removal_confirm_after: timedelta = timedelta(hours=1)
    flood_share: float = 0.30
    parallel_sources: int = 8


@dataclass
class SmtpConfig:
    host: str | None = None
    port: int | None = None
    security: str = "starttls"
    username: str | None = None
    password_env: str = "POSTWATCH_SMTP_PASSWORD"
    timeout: float = 30.0
    connections: int = 4

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return {"ssl": 465, "starttls": 587}.get(self.security, 25)


@dataclass
class DigestConfig:
    from_addr: str = "postwatch <postwatch@localhost>"
    reply_to: str | None = None
    site_name: str = "postwatch"
    outbox_dir: Path = Path("outbox")
    templates_dir: Path | None = None
    default_cadence: str = "daily"
    default_time: str = "08:00"
    default_timezone: str = "UTC"
    default_weekday: int = 0
    max_attempts: int = 12
    send_lease: timedelta = timedelta(minutes=5)


@dataclass
class UnsubscribeConfig:
    public_url: str | None = None
    mailto: str | None = None
    secret_env: str = "POSTWATCH_SECRET"


@dataclass
class DaemonConfig:
    listen: str = "127.0.0.1:8780"
    retention: timedelta = timedelta(days=180)
    shutdown_grace: timedelta = timedelta(seconds=8)
    housekeeping: str = "30 3 * * *"


@dataclass
class AlertConfig:
    operator: str | None = None
    failures_before_alert: int = 3
    undeliverable_after: timedelta = timedelta(hours=6)
    every: timedelta = timedelta(days=1)


@dataclass
class Config:
    path: Path | None = None
    database: str = "postwatch.db"
    sources: list[SourceConfig] = field(default_factory=list)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def database_url(self) -> str:
        if "://" in self.database:
            return self.database
        return "sqlite:///" + str((self.base_dir / self.database).resolve())

    @property
    def outbox_path(self) -> Path:
        return (self.base_dir / self.digest.outbox_dir).resolve()

    @property
    def smtp_password(self) -> str | None:
        return os.environ.get(self.smtp.password_env) if self.smtp.username else None

    def unsubscribe_secret(self) -> bytes:
        """From the environment, else a random secret kept beside the database (created once)."""
        from_env = os.environ.get(self.unsubscribe.secret_env)
        if from_env:
            return from_env.encode()
        if "://" in self.database and not self.database.startswith("sqlite"):
            secret_file = self.base_dir / "postwatch.secret"
        else:
            secret_file = Path(self.database_url.removeprefix("sqlite:///") + ".secret")
        try:
            return secret_file.read_bytes().strip()
        except FileNotFoundError:
            secret = secrets.token_urlsafe(32).encode()
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secret)
            return secret

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.daemon.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def default_sources() -> list[SourceConfig]:
    return [SourceConfig(name="link", url=LINK_BLOG_URL, kind="link", title="Liberty in North Korea")]


# Section -> (dataclass, {toml key: attribute}) so unknown keys can be reported.
_SECTIONS: dict[str, tuple[type, dict[str, str]]] = {
    "crawl": (CrawlConfig, {}),
    "smtp": (SmtpConfig, {}),
    "digest": (DigestConfig, {"from": "from_addr", "outbox": "outbox_dir"}),
    "unsubscribe": (UnsubscribeConfig, {}),
    "daemon": (DaemonConfig, {}),
    "alerts": (AlertConfig, {}),
}
_SOURCE_KEYS = {"name", "url", "kind", "preset", "title", "feed_url", "sitemap_url", "interval", "selectors"}
_SOURCE_KINDS = {"auto", "link", "html", "feed"}
_SELECTOR_KEYS = {"listing_item", "post_link", "next_page", "title", "date", "body", "exclude"}
_CADENCES = {"immediate", "daily", "weekly"}


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
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    problems: list[str] = []
    config = Config(path=path.resolve() if path else None)

    for key in raw:
        if key not in {"database", "sources", *_SECTIONS}:
            problems.append(f"{where}: unknown key '{key}'")

    if "database" in raw:
        if not isinstance(raw["database"], str) or not raw["database"]:
            problems.append(f"{where}: 'database' must be a file path or a database URL")
        else:
            config.database = raw["database"]
            if "://" in config.database and not config.database.startswith(("sqlite", "postgresql")):
                problems.append(f"{where}: database '{config.database}' must be a SQLite path or a postgresql:// URL")

    for section, (cls, renames) in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{where}: [{section}] must be a table")
            continue
        target = getattr(config, section)
        for key, value in table.items():
            attr = renames.get(key, key)
            if attr not in cls.__dataclass_fields__:
                problems.append(f"{where}: unknown key '{key}' in [{section}]")
                continue
            try:
                setattr(target, attr, _coerce(getattr(target, attr), cls.__dataclass_fields__[attr].type, value))
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}: [{section}] {key}: {exc}")

    config.sources = _parse_sources(raw.get("sources"), where, problems)
    problems.extend(validate(config, where))
    if problems:
        raise ConfigError(problems)
    return config


def _coerce(current: Any, annotation: Any, value: Any) -> Any:
    text = str(annotation)
    if "timedelta" in text:
        return parse_duration(value)
    if "Path" in text:
        if not isinstance(value, str):
            raise TypeError("must be a path string")
        return Path(value)
    if "bool" in text:
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    if text.startswith("int") or text == "<class 'int'>":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be a whole number")
        return value
    if text.startswith("float") or text == "<class 'float'>":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("must be a number")
        return float(value)
    if value is not None and not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _parse_sources(items: Any, where: str, problems: list[str]) -> list[SourceConfig]:
    if items is None:
        return default_sources()
    if not isinstance(items, list):
        problems.append(f"{where}: 'sources' must be an array of tables ([[sources]])")
        return []
    sources: list[SourceConfig] = []
    for index, item in enumerate(items, 1):
        label = f"{where}: [[sources]] #{index}"
        if not isinstance(item, dict):
            problems.append(f"{label} must be a table")
            continue
        for key in item:
            if key not in _SOURCE_KEYS:
                problems.append(f"{label}: unknown key '{key}'")
        name, url = item.get("name"), item.get("url")
        if not name or not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            problems.append(f"{label}: 'name' must be a short identifier (letters, digits, - _ .)")
            continue
        label = f"{where}: source '{name}'"
        if not isinstance(url, str) or not _is_http_url(url):
            problems.append(f"{label}: url {url!r} is not an http(s) URL")
            continue
        kind = item.get("kind", item.get("preset", "auto"))
        if kind not in _SOURCE_KINDS:
            problems.append(f"{label}: kind '{kind}' must be one of {', '.join(sorted(_SOURCE_KINDS))}")
        for key in ("feed_url", "sitemap_url"):
            if item.get(key) is not None and not _is_http_url(str(item[key])):
                problems.append(f"{label}: {key} {item[key]!r} is not an http(s) URL")
        selectors = item.get("selectors", {})
        if not isinstance(selectors, dict):
            problems.append(f"{label}: selectors must be a table")
            selectors = {}
        for key in selectors:
            if key not in _SELECTOR_KEYS:
                problems.append(f"{label}: unknown selector '{key}' (known: {', '.join(sorted(_SELECTOR_KEYS))})")
        interval = None
        if "interval" in item:
            try:
                interval = parse_duration(item["interval"])
            except ValueError as exc:
                problems.append(f"{label}: interval: {exc}")
        if any(s.name == name for s in sources):
            problems.append(f"{label}: defined twice")
        sources.append(SourceConfig(
            name=name, url=url, kind=kind, title=item.get("title"), feed_url=item.get("feed_url"),
            sitemap_url=item.get("sitemap_url"), interval=interval, selectors=dict(selectors),
        ))
    return sources


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def validate(config: Config, where: str = "config") -> list[str]:
    """Cross-field checks that need no network."""
    problems: list[str] = []
    if not 1 <= config.smtp.connections <= 32:
        problems.append(f"{where}: [smtp] connections must be between 1 and 32, not {config.smtp.connections}")
    if config.smtp.security not in ("starttls", "ssl", "none"):
        problems.append(f"{where}: [smtp] security must be starttls, ssl or none")
    if config.smtp.username and not os.environ.get(config.smtp.password_env):
        problems.append(f"{where}: [smtp] username is set but the password variable ${config.smtp.password_env} is empty")
    for label, value in (("[digest] from", config.digest.from_addr), ("[digest] reply_to", config.digest.reply_to),
                         ("[unsubscribe] mailto", config.unsubscribe.mailto)):
        address = parseaddr(value or "")[1]
        if value and ("@" not in address or not address.rpartition("@")[0].isascii()):
            problems.append(f"{where}: {label} {value!r} is not an email address with an ASCII local part")
    if config.digest.default_cadence not in _CADENCES:
        problems.append(f"{where}: [digest] default_cadence must be one of {', '.join(sorted(_CADENCES))}")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", config.digest.default_time):
        problems.append(f"{where}: [digest] default_time must be HH:MM")
    try:
        ZoneInfo(config.digest.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: [digest] default_timezone '{config.digest.default_timezone}' is not an IANA time zone")
    if config.unsubscribe.public_url and not _is_http_url(config.unsubscribe.public_url):
        problems.append(f"{where}: [unsubscribe] public_url must be an http(s) URL")
    if not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", config.daemon.listen):
        problems.append(f"{where}: [daemon] listen must be HOST:PORT")
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(config.daemon.housekeeping, timezone="UTC")
    except ValueError as exc:
        problems.append(f"{where}: [daemon] housekeeping {config.daemon.housekeeping!r} is not a cron expression: {exc}")
    if not 0 < config.crawl.flood_share <= 1:
        problems.append(f"{where}: [crawl] flood_share must be between 0 and 1")
    # Checking more often than once a minute is impolite to other people's sites; a site on
    # this machine (a replica, a test) is ours to hammer.
    for source in config.sources:
        interval = source.interval or config.crawl.interval
        if interval < timedelta(minutes=1) and not _is_loopback(source.url):
            problems.append(f"{where}: source '{source.name}': interval below 1m is impolite to the watched site")
    return problems


def scrapy_settings(config: Config) -> dict[str, Any]:
    """The crawl section mapped onto Scrapy settings (crawler/settings.py holds the rest)."""
    crawl = config.crawl
    return {
        "USER_AGENT": f"postwatch/0.1 (+{crawl.contact_url})",
        "DOWNLOAD_DELAY": crawl.download_delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_host,
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle and crawl.download_delay > 0,
        "DOWNLOAD_TIMEOUT": crawl.timeout,
        "RETRY_TIMES": crawl.retries,
        "DOWNLOAD_MAXSIZE": int(crawl.max_page_mb * 1024 * 1024),
        "RETRY_AFTER_MAX": crawl.retry_after_max.total_seconds(),
        "ROBOTS_TTL": crawl.robots_ttl.total_seconds(),
    }
