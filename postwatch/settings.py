"""The settings objects the other layers are handed, built from the config: pure functions of
`Config` (and, where the stored sources matter, of what was read from the store), plus
`SourceSettings`, each source's interval and keyword filter (the config's over the stored ones)."""
from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from digest.settings import DigestSettings, SmtpSettings
from postwatch.config import Config
from state import SourceRecord

if TYPE_CHECKING:
    from digest.feed import FeedSettings
    from digest.filters import KeywordFilter
    from state import Store
    from state.changes import RevisitSchedule


def source_records(config: Config) -> list[SourceRecord]:
    """The config's [[sources]] as the store keeps them."""
    return [
        SourceRecord(name=s.name, url=s.url, kind=s.kind, feed_url=s.feed_url, sitemap_url=s.sitemap_url,
                     selectors=dict(s.selectors), title=s.title, origin="config")
        for s in config.sources
    ]


def route_rows(config: Config) -> list[dict]:
    """The config's [[routes]] as the store keeps them (subscribers of origin "config")."""
    return [{"email": route.to, **route.options} for route in config.routes]


def revisit_schedule(config: Config) -> RevisitSchedule:
    from state.changes import RevisitSchedule

    crawl = config.crawl
    return RevisitSchedule(every_check_under=crawl.revisit_every_check_under, daily_under=crawl.revisit_daily_under,
                           older_every=crawl.revisit_older_every, per_check=crawl.revisits_per_check)


def digest_settings(config: Config, sources: list[SourceRecord]) -> DigestSettings:
    """What rendering a digest, an alert or a reader's page needs; `sources` are the stored ones."""
    cfg = config
    from_domain = cfg.from_domain or "localhost"
    return DigestSettings(
        from_addr=cfg.digest.from_addr,
        reply_to=cfg.digest.reply_to,
        list_id=f"postwatch.{from_domain}",
        site_name=cfg.digest.site_name,
        unsubscribe_base_url=cfg.unsubscribe_url,
        unsubscribe_mailto=cfg.unsubscribe.mailto or "",
        preferences_base_url=cfg.page_url("/preferences") if cfg.signup.enabled else "",
        inbound_domain=cfg.inbound_domain, inbound_unsubscribe_prefix=cfg.inbound.unsubscribe_prefix,
        secret=cfg.unsubscribe_secret(),
        templates_dir=cfg.digest.templates_dir and (cfg.base_dir / cfg.digest.templates_dir),
        timezone=cfg.digest.default_timezone,
        source_titles={s.name: (s.title or s.name) for s in sources},
        source_langs={s.name: s.lang for s in cfg.sources if s.lang},
        source_urls={s.name: s.url for s in sources},
        organization=cfg.digest.organization or "",
        postal_address=cfg.digest.postal_address or "",
        max_posts=cfg.digest.max_posts, full_posts=cfg.digest.full_posts,
        lead=cfg.digest.lead,
        # The daemon serves the archive beside its other pages: [unsubscribe] public_url's
        # host and folder, else the listen address (as the unsubscribe link does).
        archive_url=cfg.page_url("/archive/"), archive_public=bool(cfg.unsubscribe.public_url),
        pages_root=cfg.page_url("") if cfg.unsubscribe.public_url else "",
    )


def smtp_settings(config: Config, dkim, return_path: Callable | None) -> SmtpSettings:
    """The SMTP channel's settings; `dkim` the loaded signer (or None), `return_path` what
    gives a message its MAIL FROM (None: the envelope sender)."""
    smtp = config.smtp
    return SmtpSettings(host=smtp.host, port=smtp.effective_port, security=smtp.security, username=smtp.username,
                        password=config.smtp_password, timeout=smtp.timeout, connections=smtp.connections,
                        envelope_from=config.envelope_sender or None, dkim=dkim, return_path=return_path)


def feed_settings(config: Config) -> FeedSettings:
    from digest.feed import FeedSettings
    from postwatch import __version__

    public = config.feeds.public_url or f"http://{config.daemon.listen}/feeds/"
    return FeedSettings(public_url=public.rstrip("/") + "/", site_name=config.digest.site_name,
                        templates_dir=config.digest.templates_dir and (config.base_dir / config.digest.templates_dir),
                        version=__version__)


def source_filters(config: Config, stored: dict[str, dict]) -> dict[str, KeywordFilter]:
    """Source name -> its keyword filter, for the sources that have one: the config's over the
    stored ones (`stored`: Store.stored_source_settings)."""
    from digest.filters import KeywordFilter

    filters = {name: KeywordFilter(tuple(s["include"]), tuple(s["exclude"]), owner=f"source {name!r}")
               for name, s in stored.items() if s["include"] or s["exclude"]}
    filters.update({s.name: KeywordFilter(tuple(s.include), tuple(s.exclude), owner=f"source {s.name!r}")
                    for s in config.sources if s.include or s.exclude})
    return filters


def configured_interval(config: Config, name: str) -> timedelta | None:
    """The interval the config's [[sources]] entry sets for the source, if any."""
    return next((s.interval for s in config.sources if s.name == name and s.interval), None)


class SourceSettings:
    """Each source's interval and keyword filter. The stored ones (sources added with the CLI
    or the console, edited in the console) are read again at most every `ttl` seconds: a sweep
    asks for every source's interval, and another process may edit them."""

    def __init__(self, config: Config, store: Store, ttl: float = 2.0):
        self.config, self.store, self.ttl = config, store, ttl
        self._stored: tuple[float, dict[str, dict]] | None = None

    def stored(self) -> dict[str, dict]:
        now = time.monotonic()
        if self._stored is None or now - self._stored[0] > self.ttl:
            self._stored = (now, self.store.stored_source_settings())
        return self._stored[1]

    def forget(self) -> None:
        """Read the stored settings again at the next question (they were just edited)."""
        self._stored = None

    def interval(self, name: str) -> timedelta:
        """The config's interval for the source, else the stored one, else [crawl] interval."""
        configured = configured_interval(self.config, name)
        if configured:
            return configured
        stored = self.stored().get(name)
        return (stored and stored["interval"]) or self.config.crawl.interval

    def filters(self) -> dict[str, KeywordFilter]:
        return source_filters(self.config, self.stored())
