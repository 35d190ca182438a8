"""The one TOML config file, its defaults and its validation.

Every setting has a default, so postwatch runs with no file at all: the LiNK blog as the only
source, SQLite state in ./postwatch.db and digests written as .eml files into ./outbox.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crawler.urls import LINK_BLOG_URL, is_http_url
from digest.settings import plain_address, wire_address

CONFIG_ENV = "POSTWATCH_CONFIG"
DEFAULT_CONFIG_NAME = "postwatch.toml"

# Not a source name: /feeds/all.atom and `postwatch feed all` are every source's changes.
ALL_SOURCES = "all"
# How often a subscriber gets a digest: after each check, daily, or weekly.
CADENCES = ("immediate", "daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")       # index = the stored weekday
LEADS = ("short", "full")                                          # [digest] lead
LOG_FORMATS = ("text", "json")                                     # [daemon] log_format, --log-format
TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):[0-5]\d")              # HH:MM, 24-hour clock


class ConfigError(ValueError):
    """A config problem; str() is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
# No setting means more than this; it also keeps every duration far from timedelta's overflow.
LONGEST_DURATION = timedelta(days=3650)


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '1h', '2d', '1w' or a number of seconds; finite, not negative, at most 10 years."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (examples: 90s, 15m, 1h, 2d)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (examples: 90s, 15m, 1h, 2d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (a finite number of seconds, 0 or more)")
    if seconds > LONGEST_DURATION.total_seconds():
        raise ValueError(f"{value!r} is longer than {format_duration(LONGEST_DURATION)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: 90s, 15m, 2h, 180d."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def between(default: Any, low: Any, high: Any) -> Any:
    """A setting with its allowed range (inclusive), checked by `validate`."""
    return field(default=default, metadata={"range": (low, high)})


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
    # Keyword filters (digest/filters.py): which of this source's events anyone is told of.
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    # The language the blog writes in (a BCP 47 tag: "en", "ko"), when the operator knows it: its
    # posts' text in digests and on the archive carries it, so a screen reader reading a Korean
    # digest reads an English post in English. Posts are never translated.
    lang: str | None = None


@dataclass
class RouteConfig:
    """An operator's own destination, kept in the config ([[routes]]): a subscriber whose
    address is a webhook, an Apprise URL or an email address, synced into the database."""
    to: str
    options: dict[str, Any] = field(default_factory=dict)    # keyword arguments of Store.add_subscriber


@dataclass
class CrawlConfig:
    contact_url: str = "https://github.com/postwatch/postwatch"
    interval: timedelta = between(timedelta(hours=1), parse_duration("1s"), parse_duration("30d"))
    jitter: timedelta = between(timedelta(minutes=2), parse_duration("0s"), parse_duration("1d"))
    full_sweep_every: timedelta = between(timedelta(days=7), parse_duration("1s"), parse_duration("365d"))
    download_delay: float = between(1.0, 0, 60)
    concurrency_per_host: int = between(2, 1, 16)
    autothrottle: bool = True
    timeout: float = between(30.0, 1, 600)
    retries: int = between(2, 0, 10)
    max_page_mb: float = between(5.0, 0.1, 1024)
    max_post_pages: int = between(50, 1, 100_000)
    retry_after_max: timedelta = between(timedelta(minutes=5), parse_duration("0s"), parse_duration("1h"))
    robots_ttl: timedelta = between(timedelta(hours=24), parse_duration("1m"), parse_duration("30d"))
    removal_confirm_after: timedelta = between(timedelta(hours=1), parse_duration("0s"), parse_duration("30d"))
    revisit_every_check_under: timedelta = between(timedelta(days=2), parse_duration("0s"), parse_duration("365d"))
    revisit_daily_under: timedelta = between(timedelta(days=30), parse_duration("0s"), parse_duration("3650d"))
    revisit_older_every: timedelta = between(timedelta(days=7), parse_duration("1h"), parse_duration("365d"))
    revisits_per_check: int = between(20, 0, 10_000)
    confirm_edits_after: timedelta = between(timedelta(seconds=2), parse_duration("0s"), parse_duration("1h"))
    flood_share: float = 0.30
    parallel_sources: int = between(8, 1, 256)


@dataclass
class SmtpConfig:
    host: str | None = None
    port: int | None = between(None, 1, 65535)
    security: str = "starttls"
    username: str | None = None
    password_env: str = "POSTWATCH_SMTP_PASSWORD"
    timeout: float = between(30.0, 1, 600)
    connections: int = between(4, 1, 32)
    envelope_from: str | None = None      # MAIL FROM; default: the address part of [digest] from

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
    default_weekday: int = between(0, 0, 6)
    max_attempts: int = between(12, 1, 1000)
    bounce_limit: int = between(3, 1, 100)   # hard bounces in a row that suppress a subscriber
    send_lease: timedelta = between(timedelta(minutes=5), parse_duration("1s"), parse_duration("1d"))
    retry_after: timedelta = between(timedelta(minutes=1), parse_duration("1s"), parse_duration("1h"))
    organization: str | None = None       # the footer names the sender and its postal address (CAN-SPAM)
    postal_address: str | None = None
    max_posts: int = between(60, 1, 1000)  # posts shown per digest; the rest are counted, linked to their site
    full_posts: int = between(20, 0, 1000)  # of those, shown in full (lead or diff); the others in one line
    lead: str = "short"                    # a new post's lead: "short" (~250 characters, "Read more") or "full" (600)


@dataclass
class DkimConfig:
    selector: str | None = None
    domain: str | None = None              # default: the domain of [digest] from
    key_file: Path | None = None           # relative to the config file


@dataclass
class DeliveryConfig:
    # A channel registered in digest.delivery; unset: "smtp" when [smtp] host is set, else "folder".
    channel: str | None = None
    # Keyword arguments of any other channel's class ("smtp" and "folder" take [smtp] and [digest] outbox).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WebhookConfig:
    # The master secret each receiver's signing secret is derived from (`postwatch webhook
    # secret URL`); unset: derived from the unsubscribe secret.
    secret_env: str = "POSTWATCH_WEBHOOK_SECRET"
    timeout: float = between(10.0, 1, 120)


@dataclass
class UnsubscribeConfig:
    public_url: str | None = None
    mailto: str | None = None
    secret_env: str = "POSTWATCH_SECRET"


@dataclass
class SignupConfig:
    """The /subscribe page (double opt-in) and the preferences page."""
    enabled: bool = True
    confirm_within: timedelta = between(timedelta(days=7), parse_duration("1h"), parse_duration("90d"))
    remind_after: timedelta = between(timedelta(days=2), parse_duration("1m"), parse_duration("90d"))
    # Signups taken from one client network (an IPv4 /24, an IPv6 /64: one host holds a whole
    # /64), and for one mailbox (victim+1@ and victim+2@ are one), per window; at most `per_hour`
    # confirmation mails an hour in all. Counted in the daemon's memory (postwatch/webforms.py).
    per_ip: int = between(10, 1, 100_000)
    per_ip_window: timedelta = between(timedelta(minutes=10), parse_duration("1s"), parse_duration("1d"))
    per_address: int = between(3, 1, 1000)
    per_address_window: timedelta = between(timedelta(days=1), parse_duration("1s"), parse_duration("30d"))
    per_hour: int = between(100, 1, 1_000_000)
    # A signup is answered no sooner than this after it arrived, whatever the address: a known
    # address would otherwise answer faster than a new one (no mail to queue).
    answer_after: timedelta = between(timedelta(milliseconds=250), parse_duration("0s"), parse_duration("10s"))


@dataclass
class InboundConfig:
    """The inbound mail listener (postwatch/inbound.py): asynchronous bounces by VERP, mailed
    unsubscribes. Off unless `listen` is set."""
    listen: str = ""                       # HOST:PORT, e.g. 127.0.0.1:2525 behind the real MX
    domain: str | None = None              # the domain of the addresses it answers; default: that of [digest] from
    bounce_prefix: str = "bounces"         # return paths bounces+<token>@domain
    unsubscribe_prefix: str = "unsubscribe"


@dataclass
class DaemonConfig:
    listen: str = "127.0.0.1:8780"
    max_connections: int = between(256, 1, 10_000)
    retention: timedelta = between(timedelta(days=180), parse_duration("1h"), LONGEST_DURATION)
    shutdown_grace: timedelta = between(timedelta(seconds=8), parse_duration("0s"), parse_duration("10m"))
    housekeeping: str = "30 3 * * *"
    outbox_every: timedelta = between(timedelta(seconds=60), parse_duration("1s"), parse_duration("1d"))
    log_format: str = "text"        # `run` and `worker` log as text or JSON lines; --log-format wins


@dataclass
class ConsoleConfig:
    """The operator's console (postwatch/console): server-rendered pages to see and steer the
    service, signed in. Off unless `listen` is set; on an address of its own, loopback by default."""
    listen: str = ""                          # HOST:PORT, e.g. 127.0.0.1:8781 (never [daemon] listen)
    public_url: str | None = None             # where operators reach it; https makes the cookie Secure
    idle_timeout: timedelta = between(timedelta(minutes=30), parse_duration("1s"), parse_duration("1d"))
    session_lifetime: timedelta = between(timedelta(hours=12), parse_duration("1s"), parse_duration("30d"))
    # Failed sign-ins per account and per client address within `throttle_window` before more
    # are refused until the window has passed.
    max_failures: int = between(5, 1, 1000)
    throttle_window: timedelta = between(timedelta(minutes=15), parse_duration("1s"), parse_duration("1d"))
    # Behind an authenticating proxy: the operator's name in this request header, believed only
    # from `trusted_proxies` (addresses or CIDRs). The name must be an operator's (postwatch operators add).
    trusted_user_header: str = ""
    trusted_proxies: list = field(default_factory=list)


@dataclass
class FeedsConfig:
    # Where /feeds/ is reachable from outside (the feeds' self links); default http://[daemon] listen/feeds/.
    public_url: str | None = None
    entries: int = between(50, 1, 10_000)


@dataclass
class AlertConfig:
    operator: str | None = None
    failures_before_alert: int = between(3, 1, 1000)
    undeliverable_after: timedelta = between(timedelta(hours=6), parse_duration("1m"), parse_duration("30d"))
    every: timedelta = between(timedelta(days=1), parse_duration("1m"), parse_duration("30d"))


@dataclass
class Config:
    path: Path | None = None
    database: str = "postwatch.db"
    sources: list[SourceConfig] = field(default_factory=list)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    signup: SignupConfig = field(default_factory=SignupConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    routes: list[RouteConfig] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def database_url(self) -> str:
        # Imported here: `state` brings SQLAlchemy, ~0.35 s of start-up (measured) that commands
        # which never open the database (--help, config check) need not pay.
        from state.database import database_url

        return database_url(self.database, self.base_dir)

    @property
    def outbox_path(self) -> Path:
        return (self.base_dir / self.digest.outbox_dir).resolve()

    @property
    def delivery_channel(self) -> str:
        """The name of the channel digests leave through."""
        return self.delivery.channel or ("smtp" if self.smtp.host else "folder")

    def describe_delivery(self) -> str:
        """Where digests go, for people: "SMTP host:port", "outbox folder PATH" or "channel NAME"."""
        channel = self.delivery_channel
        if channel == "smtp":
            return f"SMTP {self.smtp.host}:{self.smtp.effective_port}"
        if channel == "folder":
            return f"outbox folder {self.outbox_path}"
        return f"channel '{channel}'"

    @property
    def smtp_password(self) -> str | None:
        return os.environ.get(self.smtp.password_env) if self.smtp.username else None

    @property
    def secret_path(self) -> Path:
        from state.database import sqlite_path

        database_file = sqlite_path(self.database_url)
        return Path(f"{database_file}.secret") if database_file else self.base_dir / "postwatch.secret"

    def unsubscribe_secret(self) -> bytes:
        """From the environment, else a random secret kept beside the database (created once)."""
        from_env = os.environ.get(self.unsubscribe.secret_env)
        if from_env:
            return from_env.encode()
        secret_file = self.secret_path
        try:
            secret = secret_file.read_bytes().strip()
        except FileNotFoundError:
            import secrets

            secret = _create_secret_file(secret_file, secrets.token_urlsafe(32).encode(), self.unsubscribe.secret_env)
        except OSError as exc:
            raise ConfigError([f"{secret_file}: cannot read the unsubscribe secret: {exc.strerror or exc}"]) from None
        if len(secret) < MIN_SECRET_LENGTH:
            what = "is empty" if not secret else f"holds only {len(secret)} characters (at least {MIN_SECRET_LENGTH} needed)"
            raise ConfigError([f"{secret_file}: the unsubscribe secret {what}; delete the file to have a new one made "
                               f"(unsubscribe links in digests already sent stop working) or set "
                               f"${self.unsubscribe.secret_env}"])
        return secret

    def webhook_secret(self) -> bytes:
        """The master secret of webhook signatures: $[webhook] secret_env, else the unsubscribe
        secret (so one secret to keep, and nothing to configure for a first webhook)."""
        return os.environ.get(self.webhook.secret_env, "").encode() or self.unsubscribe_secret()

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.daemon.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def unsubscribe_url(self) -> str:
        """Where the links in digests point: [unsubscribe] public_url, else the listen address
        (fine for the outbox folder and a local test; `config check` refuses it with a relay)."""
        return self.unsubscribe.public_url or f"http://{self.daemon.listen}/unsubscribe"

    @property
    def inbound_domain(self) -> str:
        """The domain of the VERP and mailto addresses ("" when no listener runs)."""
        return (self.inbound.domain or self.from_domain).lower() if self.inbound.listen else ""

    def console_address(self) -> tuple[str, int]:
        host, _, port = self.console.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    def inbound_address(self) -> tuple[str, int]:
        host, _, port = self.inbound.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    def page_url(self, path: str) -> str:
        """Where a page of the daemon (/subscribe, /confirm, /preferences) is reachable: beside
        [unsubscribe] public_url, else on the listen address."""
        public = self.unsubscribe.public_url
        if public:
            parts = urlsplit(public)
            return f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}{path}"
        return f"http://{self.daemon.listen}{path}"

    @property
    def from_domain(self) -> str:
        return parseaddr(self.digest.from_addr)[1].rpartition("@")[2].strip().lower()

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: [smtp] envelope_from, else the address part of [digest] from (never a header line)."""
        return self.smtp.envelope_from or parseaddr(self.digest.from_addr)[1]

    def dkim_signer(self):
        """The DKIM signer [dkim] describes, or None; raises ConfigError naming the key file."""
        if not self.dkim.selector or not self.dkim.key_file:
            return None
        from digest.signing import DkimProblem, DkimSigner

        try:
            return DkimSigner.from_file(self.base_dir / self.dkim.key_file, self.dkim.domain or self.from_domain,
                                        self.dkim.selector)
        except DkimProblem as exc:
            raise ConfigError([f"[dkim] key_file {exc}"]) from None


MIN_SECRET_LENGTH = 16


def _create_secret_file(path: Path, secret: bytes, env_name: str) -> bytes:
    """Write the secret under a temporary name, fsync it, then hard-link it into place: the link
    fails if the file exists, so of processes starting at once exactly one creates it, and no
    reader ever sees it empty or half-written (a full disk leaves no file at all)."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the unsubscribe secret: {exc.strerror or exc}"]) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes().strip()       # made by a process that started with us
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return secret
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the unsubscribe secret: {exc.strerror or exc}; free the space or "
                           "fix the folder's permissions, or set ${env_name}"]) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def default_sources() -> list[SourceConfig]:
    return [SourceConfig(name="link", url=LINK_BLOG_URL, kind="webflow", title="Liberty in North Korea", lang="en")]


# Section -> (dataclass, {toml key: attribute}) so unknown keys can be reported.
_SECTIONS: dict[str, tuple[type, dict[str, str]]] = {
    "crawl": (CrawlConfig, {}),
    "smtp": (SmtpConfig, {}),
    "digest": (DigestConfig, {"from": "from_addr", "outbox": "outbox_dir"}),
    "delivery": (DeliveryConfig, {}),
    "unsubscribe": (UnsubscribeConfig, {}),
    "signup": (SignupConfig, {}),
    "inbound": (InboundConfig, {}),
    "daemon": (DaemonConfig, {}),
    "alerts": (AlertConfig, {}),
    "feeds": (FeedsConfig, {}),
    "console": (ConsoleConfig, {}),
    "dkim": (DkimConfig, {}),
    "webhook": (WebhookConfig, {}),
}
_SOURCE_KEYS = {"name", "url", "kind", "preset", "title", "feed_url", "sitemap_url", "interval", "selectors",
                "include", "exclude", "lang"}
_SELECTOR_KEYS = {"listing_item", "post_link", "next_page", "title", "date", "body", "exclude"}


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
    problems: list[str] = []
    config = Config(path=path.resolve() if path else None)

    for key in raw:
        if key not in {"database", "sources", "routes", *_SECTIONS}:
            problems.append(f"{where}: unknown key '{key}'")

    if "database" in raw:
        if not isinstance(raw["database"], str) or not raw["database"]:
            problems.append(f"{where}: 'database' must be a file path or a database URL")
        else:
            config.database = raw["database"]
            problem = database_url_problem(config.database)
            if problem:
                problems.append(f"{where}: database {problem}")

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
    config.routes = _parse_routes(raw.get("routes"), config, where, problems)
    problems.extend(validate(config, where))
    if problems:
        raise ConfigError(problems)
    return config


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
    if text.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError("must be a list of strings")
        return value
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise TypeError("must be a table")
        return value
    if value is not None and not isinstance(value, str):
        raise TypeError("must be a string")
    return value


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
    # crawler.kinds loads parsel and lxml (45 ms measured): `--help`, a run on the built-in
    # default source and sources of the built-in kinds (crawler.plan.BUILT_IN_KINDS) need not
    # pay it; another kind's name is looked up in its registry.
    from crawler.plan import BUILT_IN_KINDS

    if items is None:
        return default_sources()
    sources: list[SourceConfig] = []
    for label, item in _tables(items, "sources", where, problems):
        for key in item:
            if key not in _SOURCE_KEYS:
                problems.append(f"{label}: unknown key '{key}'")
        name, url = item.get("name"), item.get("url")
        if not name or not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            problems.append(f"{label}: 'name' must be a short identifier (letters, digits, - _ .)")
            continue
        label = f"{where}: source '{name}'"
        if name == ALL_SOURCES:
            problems.append(f"{label}: the name '{ALL_SOURCES}' is reserved for the feed of all sources; choose another")
            continue
        if not isinstance(url, str) or not is_http_url(url):
            problems.append(f"{label}: url {url!r} is not an http(s) URL")
            continue
        for key in ("feed_url", "sitemap_url"):
            if item.get(key) is not None and not is_http_url(str(item[key])):
                problems.append(f"{label}: {key} {item[key]!r} is not an http(s) URL")
        selectors = item.get("selectors", {})
        if not isinstance(selectors, dict):
            problems.append(f"{label}: selectors must be a table")
            selectors = {}
        for key, css in selectors.items():
            problem = selector_problem(key, css)
            if problem:
                problems.append(f"{label}: selectors.{problem}")
        kind = item.get("kind", item.get("preset", "auto"))
        if isinstance(kind, str) and kind in BUILT_IN_KINDS and "crawler.kinds" not in sys.modules:
            kind = BUILT_IN_KINDS[kind][0]     # a deprecated name ("link") becomes the current one
        else:
            from crawler.kinds import SourceKind, UnknownSourceKind

            try:
                kind_class = SourceKind.named(kind)
            except UnknownSourceKind as exc:
                problems.append(f"{label}: {exc}")
            else:
                kind = kind_class.__kind__     # a deprecated name ("link") becomes the current one
                problems += [f"{label}: {problem}" for problem in kind_class.config_problems(selectors)]
        lang = item.get("lang")
        if lang is not None and not (isinstance(lang, str) and re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", lang)):
            problems.append(f"{label}: lang {lang!r} is not a language tag (BCP 47, such as \"en\" or \"ko\")")
            lang = None
        interval = None
        if "interval" in item:
            try:
                interval = parse_duration(item["interval"])
            except ValueError as exc:
                problems.append(f"{label}: interval: {exc}")
        if any(s.name == name for s in sources):
            problems.append(f"{label}: defined twice")
        terms = {key: item.get(key) for key in ("include", "exclude")}
        filters_wrong = []
        if terms["include"] is not None or terms["exclude"] is not None:
            from digest.filters import filter_problems      # google-re2: only for sources that filter

            filters_wrong = filter_problems(terms["include"], terms["exclude"])
        problems += [f"{label}: {problem}" for problem in filters_wrong]
        sources.append(SourceConfig(
            name=name, url=url, kind=kind, title=item.get("title"), feed_url=item.get("feed_url"),
            sitemap_url=item.get("sitemap_url"), interval=interval, selectors=dict(selectors),
            include=[] if filters_wrong else list(terms["include"] or ()),
            exclude=[] if filters_wrong else list(terms["exclude"] or ()), lang=lang,
        ))
    return sources


_ROUTE_KEYS = {"to", "cadence", "at", "tz", "day", "sources", "include", "exclude"}


def _parse_routes(items: Any, config: Config, where: str, problems: list[str]) -> list[RouteConfig]:
    """[[routes]]: each checked as `subscribers add` checks its arguments."""
    if items is None:
        return []
    # email_validator (and Apprise for its URLs) only for a config that has routes.
    from postwatch.subscribers import filter_options, normalized_address, schedule_options

    routes: list[RouteConfig] = []
    for label, item in _tables(items, "routes", where, problems):
        unknown = [key for key in item if key not in _ROUTE_KEYS]
        if unknown:
            problems.append(f"{label}: unknown key '{unknown[0]}' (keys: {', '.join(sorted(_ROUTE_KEYS))})")
            continue
        if not isinstance(item.get("to"), str) or not item["to"].strip():
            problems.append(f"{label}: 'to' must be a webhook URL, an Apprise URL or an email address")
            continue
        # A route's URL may hold a token (a Telegram bot's, a Slack webhook's): only its scheme is shown.
        label = f"{label} ({item['to'].partition('://')[0]}://…)" if "://" in item["to"] else f"{label} ({item['to']})"
        try:
            to = normalized_address(item["to"])
            for key in ("sources", "include", "exclude"):
                if item.get(key) is not None and not (isinstance(item[key], list)
                                                       and all(isinstance(v, str) for v in item[key])):
                    raise ValueError(f"{key} must be a list of strings")
            strings = {key: item.get(key) for key in ("cadence", "at", "tz", "day")}
            if any(value is not None and not isinstance(value, str) for value in strings.values()):
                raise ValueError("cadence, at, tz and day must be strings")
            options = schedule_options(config, strings["cadence"] or "immediate", strings["at"], strings["tz"],
                                       strings["day"], item.get("sources"))
            options.update(filter_options(item.get("include"), item.get("exclude")))
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        unknown_sources = [name for name in options["sources"] or () if name not in {s.name for s in config.sources}]
        if unknown_sources:
            problems.append(f"{label}: no such source in the config: {', '.join(unknown_sources)}")
            continue
        if any(r.to.lower() == to.lower() for r in routes):
            problems.append(f"{label}: defined twice")
            continue
        routes.append(RouteConfig(to=to, options=options))
    return routes


def selector_problem(key: str, css: Any) -> str | None:
    """Why `key = css` is not a usable selector override (e.g. "body 'div[': ..."), or None."""
    if key not in _SELECTOR_KEYS:
        return f"{key}: unknown selector (known: {', '.join(sorted(_SELECTOR_KEYS))})"
    if not isinstance(css, str) or not css.strip():
        return f"{key}: must be a CSS selector string"
    from cssselect import SelectorError
    from parsel import Selector

    try:
        # parsel translates the selector (with its ::text and ::attr() extensions) exactly as
        # the crawler will; an empty document is enough to run the XPath it produces.
        Selector(text="<html></html>", type="html").css(css)
    except (SelectorError, ValueError) as exc:
        return f"{key} {css!r} is not a CSS selector: {exc}"
    return None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


_DNS_LABELS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*")


def dkim_name_problems(selector: str | None, domain: str | None) -> list[str]:
    """What is wrong with a DKIM selector and signing domain as names in DNS."""
    problems = []
    if selector and not _DNS_LABELS.fullmatch(selector):
        problems.append(f"selector {selector!r} must be DNS labels (letters, digits, - and _)")
    if domain is not None and ("." not in domain.strip(".") or re.search(r"[\s@/:]", domain)):
        problems.append(f"domain {domain!r} is not a domain name with a dot")
    return problems


def validate(config: Config, where: str = "config") -> list[str]:
    """Cross-field checks that need no network."""
    problems: list[str] = []
    for section, (cls, renames) in _SECTIONS.items():
        keys = {attr: key for key, attr in renames.items()}
        for spec in fields(cls):
            if "range" not in spec.metadata:
                continue
            value, (low, high) = getattr(getattr(config, section), spec.name), spec.metadata["range"]
            if value is None or low <= value <= high:
                continue
            show = format_duration if isinstance(value, timedelta) else (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            problems.append(f"{where}: [{section}] {keys.get(spec.name, spec.name)} must be between {show(low)} and "
                            f"{show(high)}, not {show(value)}")
    if config.daemon.log_format not in LOG_FORMATS:
        problems.append(f"{where}: [daemon] log_format must be {' or '.join(LOG_FORMATS)}, not {config.daemon.log_format!r}")
    if config.smtp.security not in ("starttls", "ssl", "none"):
        problems.append(f"{where}: [smtp] security must be starttls, ssl or none")
    if config.smtp.username and not os.environ.get(config.smtp.password_env):
        problems.append(f"{where}: [smtp] username is set but the password variable ${config.smtp.password_env} is empty")
    for label, value in (("[digest] from", config.digest.from_addr), ("[digest] reply_to", config.digest.reply_to),
                         ("[unsubscribe] mailto", config.unsubscribe.mailto)):
        address = parseaddr(value or "")[1]
        if value and ("@" not in address or not address.rpartition("@")[0].isascii()):
            problems.append(f"{where}: {label} {value!r} is not an email address with an ASCII local part")
    problems.extend(f"{where}: [delivery] {problem}" for problem in _delivery_problems(config))
    if config.digest.lead not in LEADS:
        problems.append(f"{where}: [digest] lead must be {' or '.join(LEADS)}, not {config.digest.lead!r}")
    if config.digest.default_cadence not in CADENCES:
        problems.append(f"{where}: [digest] default_cadence must be one of {', '.join(CADENCES)}")
    if not TIME_OF_DAY.fullmatch(config.digest.default_time):
        problems.append(f"{where}: [digest] default_time must be HH:MM")
    try:
        ZoneInfo(config.digest.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: [digest] default_timezone '{config.digest.default_timezone}' is not an IANA time zone")
    if config.smtp.envelope_from is not None and not plain_address(wire_address(config.smtp.envelope_from)):
        problems.append(f"{where}: [smtp] envelope_from {config.smtp.envelope_from!r} must be a plain address "
                        "(name@example.org: ASCII, no display name, no <>)")
    dkim = config.dkim
    if bool(dkim.selector) != bool(dkim.key_file) or (dkim.domain and not dkim.selector):
        problems.append(f"{where}: [dkim] needs both selector and key_file (domain defaults to the domain of [digest] from)")
    for problem in dkim_name_problems(dkim.selector, dkim.domain):
        problems.append(f"{where}: [dkim] {problem}")
    if config.unsubscribe.public_url and not is_http_url(config.unsubscribe.public_url):
        problems.append(f"{where}: [unsubscribe] public_url must be an http(s) URL")
    if config.feeds.public_url and not is_http_url(config.feeds.public_url):
        problems.append(f"{where}: [feeds] public_url must be an http(s) URL")
    if not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", config.daemon.listen):
        problems.append(f"{where}: [daemon] listen must be HOST:PORT")
    elif not 1 <= config.listen_address()[1] <= 65535:
        problems.append(f"{where}: [daemon] listen port must be between 1 and 65535, not {config.listen_address()[1]}")
    try:
        if config.daemon.housekeeping != DaemonConfig.housekeeping:    # the default is one (APScheduler: 15 ms)
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(config.daemon.housekeeping, timezone="UTC")
    except ValueError as exc:
        problems.append(f"{where}: [daemon] housekeeping {config.daemon.housekeeping!r} is not a cron expression: {exc}")
    problems.extend(f"{where}: [console] {problem}" for problem in _console_problems(config))
    if config.inbound.listen and not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", config.inbound.listen):
        problems.append(f"{where}: [inbound] listen must be HOST:PORT")
    for key in ("bounce_prefix", "unsubscribe_prefix"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,30}", getattr(config.inbound, key)):
            problems.append(f"{where}: [inbound] {key} must be a lower-case mailbox name without '+'")
    if config.signup.remind_after >= config.signup.confirm_within:
        problems.append(f"{where}: [signup] remind_after ({format_duration(config.signup.remind_after)}) must be shorter "
                        f"than confirm_within ({format_duration(config.signup.confirm_within)})")
    if not 0 < config.crawl.flood_share <= 1:
        problems.append(f"{where}: [crawl] flood_share must be between 0 and 1")
    # Checking more often than once a minute is impolite to other people's sites; a site on
    # this machine (a replica, a test) is ours to hammer.
    low, high = CrawlConfig.__dataclass_fields__["interval"].metadata["range"]
    for source in config.sources:
        if source.interval is None and not low <= config.crawl.interval <= high:
            continue            # reported once, as [crawl] interval
        problem = source_interval_problem(config.crawl.interval if source.interval is None else source.interval,
                                          source.url)
        if problem:
            problems.append(f"{where}: source '{source.name}': {problem}")
    return problems


def source_interval_problem(interval: timedelta, url: str) -> str | None:
    """What is wrong with checking the source at `url` every `interval` (a parsed duration), in
    one line, or None: `config check` for [[sources]] interval, the console for a stored source."""
    low, high = CrawlConfig.__dataclass_fields__["interval"].metadata["range"]
    if not low <= interval <= high:
        return f"interval must be between {format_duration(low)} and {format_duration(high)}, not {format_duration(interval)}"
    if interval < timedelta(minutes=1) and not _is_loopback(url):
        return "interval below 1m is impolite to the watched site"
    return None


def _console_problems(config: Config) -> list[str]:
    import ipaddress

    console, problems = config.console, []
    if console.listen:
        if not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", console.listen):
            problems.append("listen must be HOST:PORT")
        elif not 1 <= config.console_address()[1] <= 65535:
            problems.append(f"listen port must be between 1 and 65535, not {config.console_address()[1]}")
        elif console.listen == config.daemon.listen:
            problems.append(f"listen {console.listen} is [daemon] listen, the public pages' address: give the "
                            "console an address of its own (e.g. 127.0.0.1:8781)")
    if console.public_url and not is_http_url(console.public_url):
        problems.append("public_url must be an http(s) URL")
    if console.session_lifetime < console.idle_timeout:
        problems.append(f"session_lifetime ({format_duration(console.session_lifetime)}) must not be shorter than "
                        f"idle_timeout ({format_duration(console.idle_timeout)})")
    for proxy in console.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(f"trusted_proxies: {proxy!r} is not an IP address or CIDR network")
    if console.trusted_user_header and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", console.trusted_user_header):
        problems.append("trusted_user_header must be a header name (letters, digits, '-')")
    if console.trusted_user_header and not console.trusted_proxies:
        problems.append("trusted_user_header needs trusted_proxies: the addresses of the proxies allowed to set it")
    return problems


def _delivery_problems(config: Config) -> list[str]:
    channel = config.delivery_channel
    if channel in ("smtp", "folder"):       # built in: known without loading the channels
        if config.delivery.options:
            return [f"options: channel '{channel}' takes its settings from "
                    + ("[smtp]" if channel == "smtp" else "[digest] outbox")]
        if channel == "smtp" and not config.smtp.host:
            return ["channel 'smtp' needs [smtp] host"]
        return []
    from digest.delivery import CHANNELS     # smtplib, ssl and the channels: only when a config is checked

    if channel not in CHANNELS:
        mail = sorted(name for name, cls in CHANNELS.items() if cls.carries == "email")
        return [f"channel '{channel}' is not a delivery channel (known: {', '.join(mail)})"]
    if CHANNELS[channel].carries != "email":
        return [f"channel '{channel}' does not deliver email digests; it is used by itself for subscribers and "
                f"routes whose address it claims (a URL), so leave [delivery] channel for the mail channel"]
    import inspect

    try:
        inspect.signature(CHANNELS[channel]).bind(**config.delivery.options)
    except TypeError as exc:
        return [f"options do not fit channel '{channel}': {exc}"]
    return []



def scrapy_overrides(config: Config) -> dict[str, Any]:
    """The [crawl] section as overrides of the Scrapy project's settings (crawler/settings.py
    holds the rest; crawler.run.project_settings puts these on top)."""
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
        "MAX_POST_PAGES": crawl.max_post_pages,
        "REVISITS_PER_CHECK": crawl.revisits_per_check,
    }
