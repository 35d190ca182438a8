"""The config file's schema: one dataclass per [section], each setting a field with its default,
its allowed range and a one-line description (docs/configuration.md is generated from them), and
each section's own `problems()`: what is wrong with its values, one line each, without the
"[section]" prefix that `postwatch.config.parse.validate` adds."""
from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crawler.urls import LINK_BLOG_URL, is_http_url
from digest.settings import plain_address, wire_address
from postwatch import keys
from postwatch.vocabulary import (CADENCES, LEADS, LOG_FORMATS, LONGEST_DURATION, SMTP_SECURITY, TIME_OF_DAY,
                                  format_duration, parse_duration)

_HOST_PORT = re.compile(r"\[?[\w.:-]*\]?:\d{1,5}")


def setting(default: Any = MISSING, doc: str = "", *, between: tuple[Any, Any] | None = None, key: str | None = None,
            choices: tuple[str, ...] | None = None, factory: Any = MISSING) -> Any:
    """A setting: its default (or `factory`), its one-line description for the reference, its
    allowed range (inclusive; durations may be spelled "1s"), its TOML key where that is not the
    attribute's name, and the words it takes when it takes only some."""
    metadata: dict[str, Any] = {"doc": doc}
    if between is not None:
        metadata["range"] = tuple(parse_duration(v) if isinstance(v, str) else v for v in between)
    if key is not None:
        metadata["key"] = key
    if choices is not None:
        metadata["choices"] = choices
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def toml_key(spec) -> str:
    """The name of a field's setting in the file ("from" for DigestConfig.from_addr)."""
    return spec.metadata.get("key", spec.name)


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class Section:
    """A [section] of the config file. `problems` says what is wrong with its values; a section
    with checks beyond the ranges of its fields adds them to these."""

    def problems(self, config: Config) -> list[str]:
        found = []
        for spec in fields(self):
            if "range" not in spec.metadata:
                continue
            value, (low, high) = getattr(self, spec.name), spec.metadata["range"]
            if value is not None and not low <= value <= high:
                found.append(f"{toml_key(spec)} must be between {_show(low)} and {_show(high)}, not {_show(value)}")
        return found


def _address_problem(key: str, value: str | None) -> str | None:
    address = parseaddr(value or "")[1]
    if value and ("@" not in address or not address.rpartition("@")[0].isascii()):
        return f"{key} {value!r} is not an email address with an ASCII local part"
    return None


def _listen_problem(listen: str) -> str | None:
    if not _HOST_PORT.fullmatch(listen):
        return "listen must be HOST:PORT"
    port = int(listen.rpartition(":")[2])
    return None if 1 <= port <= 65535 else f"listen port must be between 1 and 65535, not {port}"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


SELECTOR_KEYS = {
    "listing_item": "one post's entry on a listing page",
    "post_link": "the link to the post inside a listing entry",
    "next_page": "the link to the next (older) listing page",
    "title": "a post page's title",
    "date": "a post page's publication date",
    "body": "a post page's text",
    "exclude": "parts of the post's text left out (asides, related posts, forms)",
}


def selector_problem(key: str, css: Any) -> str | None:
    """Why `key = css` is not a usable selector override (e.g. "body 'div[': ..."), or None."""
    if key not in SELECTOR_KEYS:
        return f"{key}: unknown selector (known: {', '.join(sorted(SELECTOR_KEYS))})"
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


@dataclass
class SourceConfig:
    """One blog to watch; a file that names none watches the LiNK blog."""
    name: str = setting(doc="a short identifier (letters, digits, - _ .), in commands, feeds and digests")
    url: str = setting(doc="the blog's http(s) address (its listing page)")
    kind: str = setting("auto", "how its posts are found: webflow, html, feed, selectors or auto (html + feed discovery)")
    title: str | None = setting(None, "its name in digests; default: the site's own title")
    feed_url: str | None = setting(None, "its RSS, Atom or JSON feed; default: discovered")
    sitemap_url: str | None = setting(None, "its sitemap; default: discovered")
    interval: timedelta | None = setting(None, "time between checks of this source; default: [crawl] interval")
    selectors: dict[str, str] = setting(doc="CSS selectors where discovery is not enough (keys below)", factory=dict)
    # Keyword filters (digest/filters.py): which of this source's events anyone is told of.
    include: list[str] = setting(doc="words, phrases or /regular expressions/: a change must match one",
                                 factory=list)
    exclude: list[str] = setting(doc="a change matching one of these is left out", factory=list)
    # A screen reader reading a Korean digest then reads an English post in English. Posts are never translated.
    lang: str | None = setting(None, "the blog's language (a BCP 47 tag such as \"en\"), carried by its posts' text")

    def problems(self, config: Config) -> list[str]:
        low, high = CrawlConfig.__dataclass_fields__["interval"].metadata["range"]
        if self.interval is None and not low <= config.crawl.interval <= high:
            return []           # reported once, as [crawl] interval
        problem = source_interval_problem(config.crawl.interval if self.interval is None else self.interval, self.url)
        return [problem] if problem else []


# Keys of [[sources]] that are no field: an old name.
SOURCE_ALIASES = {"preset": "the old name of kind"}


def source_interval_problem(interval: timedelta, url: str) -> str | None:
    """What is wrong with checking the source at `url` every `interval` (a parsed duration), in
    one line, or None: `config check` for [[sources]] interval, the console for a stored source."""
    low, high = CrawlConfig.__dataclass_fields__["interval"].metadata["range"]
    if not low <= interval <= high:
        return f"interval must be between {format_duration(low)} and {format_duration(high)}, not {format_duration(interval)}"
    # Checking more often than once a minute is impolite to other people's sites; a site on
    # this machine (a replica, a test) is ours to hammer.
    if interval < timedelta(minutes=1) and not _is_loopback(url):
        return "interval below 1m is impolite to the watched site"
    return None


def default_sources() -> list[SourceConfig]:
    return [SourceConfig(name="link", url=LINK_BLOG_URL, kind="webflow", title="Liberty in North Korea", lang="en")]


@dataclass
class RouteConfig:
    """An operator's own destination, kept in the config ([[routes]]): a subscriber whose
    address is a webhook, an Apprise URL or an email address, synced into the database."""
    to: str
    options: dict[str, Any] = field(default_factory=dict)    # keyword arguments of Store.add_subscriber


# The keys of a [[routes]] table: (type, default, description); checked as `subscribers add` checks its options.
ROUTE_KEYS = {
    "to": ("string", "required", "a webhook URL, an Apprise URL (tgram://, slack://...) or an email address"),
    "cadence": ("string: immediate, daily or weekly", '`"immediate"`', "how often it gets a digest"),
    "at": ("string, HH:MM", "[digest] default_time", "the time of day of daily and weekly digests"),
    "tz": ("string", "[digest] default_timezone", "the IANA time zone of at"),
    "day": ("string: mon ... sun (or the whole name)", "[digest] default_weekday", "the day of weekly digests"),
    "sources": ("list of strings", "every source", "the names of the sources it follows"),
    "include": ("list of strings", "`[]`", "words or /regular expressions/: a change must match one"),
    "exclude": ("list of strings", "`[]`", "a change matching one of these is left out"),
}


@dataclass
class CrawlConfig(Section):
    """How sources are fetched: how often, how politely, how much per check."""
    contact_url: str = setting("https://github.com/postwatch/postwatch",
                               "in the User-Agent, so site owners can reach you")
    interval: timedelta = setting(timedelta(hours=1), "default time between checks of a source", between=("1s", "30d"))
    jitter: timedelta = setting(timedelta(minutes=2), "random spread, so sources are not all fetched at the same second",
                                between=("0s", "1d"))
    full_sweep_every: timedelta = setting(timedelta(days=7), "re-check known post pages (conditionally) for edits and "
                                          "removals this often", between=("1s", "365d"))
    download_delay: float = setting(1.0, "seconds between requests to one host", between=(0, 60))
    concurrency_per_host: int = setting(2, "requests to one host at once", between=(1, 16))
    autothrottle: bool = setting(True, "Scrapy's AutoThrottle slows down for a slow host (with a download_delay)")
    timeout: float = setting(30.0, "seconds per request", between=(1, 600))
    retries: int = setting(2, "retries on 5xx answers and timeouts, with backoff", between=(0, 10))
    max_page_mb: float = setting(5.0, "larger responses are refused (megabytes)", between=(0.1, 1024))
    max_post_pages: int = setting(50, "post pages fetched per check at most; the rest come from their listing line",
                                  between=(1, 100_000))
    retry_after_max: timedelta = setting(timedelta(minutes=5), "longest Retry-After postwatch waits for within a check",
                                         between=("0s", "1h"))
    robots_ttl: timedelta = setting(timedelta(hours=24), "robots.txt is cached this long (re-validated conditionally)",
                                    between=("1m", "30d"))
    removal_confirm_after: timedelta = setting(timedelta(hours=1), "a post is removed after two 404/410 answers at "
                                               "least this far apart", between=("0s", "30d"))
    revisit_every_check_under: timedelta = setting(timedelta(days=2), "known posts published more recently are "
                                                   "revisited at every check", between=("0s", "365d"))
    revisit_daily_under: timedelta = setting(timedelta(days=30), "known posts published more recently are revisited "
                                             "daily", between=("0s", "3650d"))
    revisit_older_every: timedelta = setting(timedelta(days=7), "older (and undated) posts are revisited this often",
                                             between=("1h", "365d"))
    revisits_per_check: int = setting(20, "post pages revisited per check at most", between=(0, 10_000))
    confirm_edits_after: timedelta = setting(timedelta(seconds=2), "an edit seen once is fetched again this much later "
                                             "and mailed only if it is still there", between=("0s", "1h"))
    flood_share: float = setting(0.30, "a check's changes are held as suspect when they touch more than this share of "
                                 "posts (more than 0, at most 1)")
    parallel_sources: int = setting(8, "sources whose first requests a sweep asks at once", between=(1, 256))

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if not 0 < self.flood_share <= 1:
            found.append("flood_share must be between 0 and 1")
        return found


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


@dataclass
class SmtpConfig(Section):
    """The mail relay digests are sent through; without a host they are written to the outbox folder."""
    host: str | None = setting(None, "the mail relay; unset: digests are written to the outbox folder")
    port: int | None = setting(None, "default: 587 with starttls, 465 with ssl, 25 with none", between=(1, 65535))
    security: str = setting("starttls", "how the connection is encrypted", choices=SMTP_SECURITY)
    username: str | None = setting(None, "sign in as this user (the password comes from password_env)")
    password_env: str = setting("POSTWATCH_SMTP_PASSWORD", "the environment variable holding the password")
    timeout: float = setting(30.0, "seconds for one message's whole conversation, connecting included",
                             between=(1, 600))
    connections: int = setting(4, "SMTP sessions in parallel; lower it if your provider limits them", between=(1, 32))
    envelope_from: str | None = setting(None, "MAIL FROM, where bounces go; default: the address of [digest] from")

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return {"ssl": 465, "starttls": 587}.get(self.security, 25)

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if self.security not in SMTP_SECURITY:
            found.append("security must be starttls, ssl or none")
        if self.username and not os.environ.get(self.password_env):
            found.append(f"username is set but the password variable ${self.password_env} is empty")
        if self.envelope_from is not None and not plain_address(wire_address(self.envelope_from)):
            found.append(f"envelope_from {self.envelope_from!r} must be a plain address "
                         "(name@example.org: ASCII, no display name, no <>)")
        return found


@dataclass
class DigestConfig(Section):
    """What digests look like and say, the defaults of new subscribers' schedules, and sending retries."""
    from_addr: str = setting("postwatch <postwatch@localhost>", "the From of every digest and confirmation mail",
                             key="from")
    reply_to: str | None = setting(None, "a Reply-To address for digests")
    site_name: str = setting("postwatch", "the name digests and pages go by")
    outbox_dir: Path = setting(Path("outbox"), ".eml files go here while no [smtp] host is set (relative to the "
                               "config file)", key="outbox")
    templates_dir: Path | None = setting(None, "your own digest.html.j2 / digest.txt.j2 override the built-in ones")
    default_cadence: str = setting("daily", "a new subscriber's cadence", choices=CADENCES)
    default_time: str = setting("08:00", "the time of day (HH:MM) of daily and weekly digests")
    default_timezone: str = setting("UTC", "the IANA time zone of default_time")
    default_weekday: int = setting(0, "the day of weekly digests (0 is Monday)", between=(0, 6))
    max_attempts: int = setting(12, "sending attempts before a message is marked failed", between=(1, 1000))
    bounce_limit: int = setting(3, "hard bounces in a row that suppress a subscriber", between=(1, 100))
    send_lease: timedelta = setting(timedelta(minutes=5), "a message being sent is reserved this long (a crashed "
                                    "sender's lease expires)", between=("1s", "1d"))
    retry_after: timedelta = setting(timedelta(minutes=1), "first wait after a temporary refusal (4xx); doubles "
                                     "each time, at most 1h", between=("1s", "1h"))
    organization: str | None = setting(None, "the sender the footer names (CAN-SPAM)")
    postal_address: str | None = setting(None, "the sender's postal address in the footer (CAN-SPAM)")
    max_posts: int = setting(60, "posts shown per digest; the rest are counted and linked to their site",
                             between=(1, 1000))
    full_posts: int = setting(20, "of those, shown in full (lead or diff); the others in one line each",
                              between=(0, 1000))
    lead: str = setting("short", "a new post's lead: short (~250 characters, \"Read more\") or full (up to 600)",
                        choices=LEADS)

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        found += filter(None, (_address_problem("from", self.from_addr), _address_problem("reply_to", self.reply_to)))
        if self.lead not in LEADS:
            found.append(f"lead must be {' or '.join(LEADS)}, not {self.lead!r}")
        if self.default_cadence not in CADENCES:
            found.append(f"default_cadence must be one of {', '.join(CADENCES)}")
        if not TIME_OF_DAY.fullmatch(self.default_time):
            found.append("default_time must be HH:MM")
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append(f"default_timezone '{self.default_timezone}' is not an IANA time zone")
        return found


@dataclass
class DeliveryConfig(Section):
    """The channel email digests leave through."""
    channel: str | None = setting(None, "the channel digests leave through (one registered in digest.delivery); "
                                  "unset: smtp when [smtp] host is set, else folder")
    options: dict[str, Any] = setting(doc="keyword arguments of that channel's class (the built-in smtp and folder "
                                      "take none: they use [smtp] host and [digest] outbox)", factory=dict)

    def problems(self, config: Config) -> list[str]:
        channel = config.delivery_channel
        if channel in ("smtp", "folder"):       # built in: known without loading the channels
            if self.options:
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
            inspect.signature(CHANNELS[channel]).bind(**self.options)
        except TypeError as exc:
            return [f"options do not fit channel '{channel}': {exc}"]
        return []


@dataclass
class UnsubscribeConfig(Section):
    """Unsubscribe links and the List-Unsubscribe header every digest carries."""
    public_url: str | None = setting(None, "where [daemon] listen's /unsubscribe is reachable from outside; needed "
                                     "with [smtp] host")
    mailto: str | None = setting(None, "a mailbox someone reads, advertised in List-Unsubscribe only when set")
    secret_env: str = setting("POSTWATCH_SECRET", "the environment variable holding the HMAC key of unsubscribe "
                              "links; unset: a random one kept beside the database")

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        found += filter(None, [_address_problem("mailto", self.mailto)])
        if self.public_url and not is_http_url(self.public_url):
            found.append("public_url must be an http(s) URL")
        return found


@dataclass
class SignupConfig(Section):
    """The /subscribe page (double opt-in: a confirmation mail, nothing else until its link is
    followed) and the preferences page every digest links to."""
    enabled: bool = setting(True, "readers may sign up at /subscribe (beside [unsubscribe] public_url)")
    confirm_within: timedelta = setting(timedelta(days=7), "the confirmation link works this long; an unconfirmed "
                                        "signup is then deleted", between=("1h", "90d"))
    remind_after: timedelta = setting(timedelta(days=2), "one reminder if the link was not followed by then",
                                      between=("1m", "90d"))
    # Counted in the daemon's memory (postwatch/webforms.py); one host holds a whole IPv6 /64.
    per_ip: int = setting(10, "signups taken from one network (IPv4 /24, IPv6 /64) per per_ip_window",
                          between=(1, 100_000))
    per_ip_window: timedelta = setting(timedelta(minutes=10), "the window of per_ip", between=("1s", "1d"))
    per_address: int = setting(3, "signups for one mailbox (name+tag@ counts as name@) per per_address_window",
                               between=(1, 1000))
    per_address_window: timedelta = setting(timedelta(days=1), "the window of per_address", between=("1s", "30d"))
    per_hour: int = setting(100, "confirmation mails an hour in all", between=(1, 1_000_000))
    # A known address would otherwise answer faster than a new one (no mail to queue).
    answer_after: timedelta = setting(timedelta(milliseconds=250), "every signup is answered this long after it "
                                      "arrived, whatever the address", between=("0s", "10s"))

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if self.remind_after >= self.confirm_within:
            found.append(f"remind_after ({format_duration(self.remind_after)}) must be shorter "
                         f"than confirm_within ({format_duration(self.confirm_within)})")
        return found


@dataclass
class InboundConfig(Section):
    """The inbound mail listener (postwatch/inbound.py): asynchronous bounces by VERP and mailed
    unsubscribes, from the domain's MX. Off unless listen is set."""
    listen: str = setting("", "HOST:PORT of the inbound mail listener (bounces, mailed unsubscribes); off when empty")
    domain: str | None = setting(None, "the domain of the addresses it answers; default: that of [digest] from")
    bounce_prefix: str = setting("bounces", "return paths are bounces+TOKEN@domain")
    unsubscribe_prefix: str = setting("unsubscribe", "mailed unsubscribes go to unsubscribe+TOKEN@domain")

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if self.listen and not _HOST_PORT.fullmatch(self.listen):
            found.append("listen must be HOST:PORT")
        for key in ("bounce_prefix", "unsubscribe_prefix"):
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,30}", getattr(self, key)):
                found.append(f"{key} must be a lower-case mailbox name without '+'")
        return found


@dataclass
class DaemonConfig(Section):
    """The daemon (postwatch run): its public pages, housekeeping, shutdown and logging."""
    listen: str = setting("127.0.0.1:8780", "HOST:PORT of the public pages: /healthz, /metrics, /unsubscribe, "
                          "/subscribe, /feeds/")
    max_connections: int = setting(256, "more open connections are turned away (a 503, then closed)",
                                   between=(1, 10_000))
    retention: timedelta = setting(timedelta(days=180), "delivered events and superseded versions older than this "
                                   "are pruned", between=("1h", LONGEST_DURATION))
    shutdown_grace: timedelta = setting(timedelta(seconds=8), "on SIGTERM, messages being sent finish within this",
                                        between=("0s", "10m"))
    housekeeping: str = setting("30 3 * * *", "a cron expression (UTC): when pruning runs")
    outbox_every: timedelta = setting(timedelta(seconds=60), "how often the daemon sends what is due",
                                      between=("1s", "1d"))
    log_format: str = setting("text", "run and worker log as text or as JSON lines (--log-format wins)",
                              choices=LOG_FORMATS)

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if self.log_format not in LOG_FORMATS:
            found.append(f"log_format must be {' or '.join(LOG_FORMATS)}, not {self.log_format!r}")
        found += filter(None, [_listen_problem(self.listen)])
        try:
            if self.housekeeping != DaemonConfig.housekeeping:    # the default is one (APScheduler: 15 ms)
                from apscheduler.triggers.cron import CronTrigger

                CronTrigger.from_crontab(self.housekeeping, timezone="UTC")
        except ValueError as exc:
            found.append(f"housekeeping {self.housekeeping!r} is not a cron expression: {exc}")
        return found


@dataclass
class ConsoleConfig(Section):
    """The operator's console (postwatch/console): pages to see and steer the service, signed in
    (accounts: postwatch operators add). Off unless listen is set; on an address of its own."""
    listen: str = setting("", "HOST:PORT of the operator's console (never [daemon] listen); off when empty")
    public_url: str | None = setting(None, "where operators reach it; an https URL makes the session cookie Secure")
    idle_timeout: timedelta = setting(timedelta(minutes=30), "a session unused this long is signed out",
                                      between=("1s", "1d"))
    session_lifetime: timedelta = setting(timedelta(hours=12), "any session this old is signed out",
                                          between=("1s", "30d"))
    max_failures: int = setting(5, "failed sign-ins per account and per client address within throttle_window "
                                "before more are refused", between=(1, 1000))
    throttle_window: timedelta = setting(timedelta(minutes=15), "the window of max_failures", between=("1s", "1d"))
    # The name must be an operator's (postwatch operators add).
    trusted_user_header: str = setting("", "behind an authenticating proxy: the request header naming the operator")
    trusted_proxies: list[str] = setting(doc="the addresses or CIDR networks believed to set trusted_user_header",
                                         factory=list)

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config) + self._listen_problems(config)
        if self.public_url and not is_http_url(self.public_url):
            found.append("public_url must be an http(s) URL")
        if self.session_lifetime < self.idle_timeout:
            found.append(f"session_lifetime ({format_duration(self.session_lifetime)}) must not be shorter than "
                         f"idle_timeout ({format_duration(self.idle_timeout)})")
        return found + self._proxy_problems()

    def _listen_problems(self, config: Config) -> list[str]:
        if not self.listen:
            return []
        problem = _listen_problem(self.listen)
        if problem:
            return [problem]
        if self.listen == config.daemon.listen:
            return [f"listen {self.listen} is [daemon] listen, the public pages' address: give the "
                    "console an address of its own (e.g. 127.0.0.1:8781)"]
        return []

    def _proxy_problems(self) -> list[str]:
        import ipaddress

        found = []
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                found.append(f"trusted_proxies: {proxy!r} is not an IP address or CIDR network")
        if self.trusted_user_header and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.trusted_user_header):
            found.append("trusted_user_header must be a header name (letters, digits, '-')")
        if self.trusted_user_header and not self.trusted_proxies:
            found.append("trusted_user_header needs trusted_proxies: the addresses of the proxies allowed to set it")
        return found


@dataclass
class FeedsConfig(Section):
    """Atom feeds of changes, served at /feeds/SOURCE.atom and /feeds/all.atom on [daemon] listen."""
    public_url: str | None = setting(None, "where /feeds/ is reachable from outside (the feeds' self links); "
                                     "default: http://[daemon] listen/feeds/")
    entries: int = setting(50, "newest changes in each feed", between=(1, 10_000))

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if self.public_url and not is_http_url(self.public_url):
            found.append("public_url must be an http(s) URL")
        return found


@dataclass
class AlertConfig(Section):
    """Mails to the operator when sources keep failing or messages cannot be delivered."""
    operator: str | None = setting(None, "the address that gets one email per problem per alert period")
    failures_before_alert: int = setting(3, "failed checks of a source in a row before the operator is told",
                                         between=(1, 1000))
    undeliverable_after: timedelta = setting(timedelta(hours=6), "a message still not delivered after this is "
                                             "reported", between=("1m", "30d"))
    every: timedelta = setting(timedelta(days=1), "the same problem is reported at most this often",
                               between=("1m", "30d"))


_DNS_LABELS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*")


def dkim_name_problems(selector: str | None, domain: str | None) -> list[str]:
    """What is wrong with a DKIM selector and signing domain as names in DNS."""
    problems = []
    if selector and not _DNS_LABELS.fullmatch(selector):
        problems.append(f"selector {selector!r} must be DNS labels (letters, digits, - and _)")
    if domain is not None and ("." not in domain.strip(".") or re.search(r"[\s@/:]", domain)):
        problems.append(f"domain {domain!r} is not a domain name with a dot")
    return problems


@dataclass
class DkimConfig(Section):
    """DKIM signing of every digest (rsa-sha256, relaxed/relaxed); off unless selector and key_file are set."""
    selector: str | None = setting(None, "the DKIM selector (postwatch dkim keygen makes a key and its DNS record)")
    domain: str | None = setting(None, "the signing domain; default: the domain of [digest] from")
    key_file: Path | None = setting(None, "the private key (PEM), relative to the config file")

    def problems(self, config: Config) -> list[str]:
        found = super().problems(config)
        if bool(self.selector) != bool(self.key_file) or (self.domain and not self.selector):
            found.append("needs both selector and key_file (domain defaults to the domain of [digest] from)")
        return found + dkim_name_problems(self.selector, self.domain)


@dataclass
class WebhookConfig(Section):
    """Webhook and Apprise deliveries: subscribers and routes whose address is a URL."""
    # The master secret each receiver's signing secret is derived from (`postwatch webhook secret URL`).
    secret_env: str = setting("POSTWATCH_WEBHOOK_SECRET", "the environment variable holding the master secret of "
                              "webhook signatures; unset or empty: derived from the unsubscribe secret")
    timeout: float = setting(10.0, "seconds for one whole webhook or Apprise delivery", between=(1, 120))


@dataclass
class Config:
    path: Path | None = None
    database: str = setting("postwatch.db", "a SQLite file (relative to the config file) or a postgresql:// URL")
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

    def sections(self) -> dict[str, Section]:
        """Each [section] by its name, in the order of the schema."""
        return {name: getattr(self, name) for name in SECTIONS}

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
        return keys.read_or_create_secret(self.secret_path, self.unsubscribe.secret_env)

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
        return keys.dkim_signer(self.base_dir / self.dkim.key_file, self.dkim.domain or self.from_domain,
                                self.dkim.selector)


# Each [section] by its name, in the order of Config's fields.
SECTIONS: dict[str, type[Section]] = {
    spec.name: spec.default_factory for spec in fields(Config)
    if isinstance(spec.default_factory, type) and issubclass(spec.default_factory, Section)
}
# The keys of the file's top level and of its arrays of tables.
TOP_LEVEL_KEYS = {"database", "sources", "routes", *SECTIONS}
SOURCE_KEYS = {spec.name for spec in fields(SourceConfig)} | set(SOURCE_ALIASES)
