"""The application context shared by the CLI and the daemon: it opens the store and holds the
services that do the work — the checker (postwatch/checker.py), the mailer (postwatch/mailer.py),
the operator's alerts (postwatch/alerts.py) and the sources' settings (postwatch/settings.py)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from postwatch import settings
from postwatch.alerts import Alerts
from postwatch.checker import Checker, CheckSummary, describe_summary
from postwatch.config import Config, scrapy_overrides
from postwatch.mailer import Mailer

if TYPE_CHECKING:
    from postwatch.metrics import Metrics
    from state import Store

# Imported where they are used, not here: Scrapy and Twisted (crawler.run, 0.5-1.2 s measured on
# this 2-core machine) and the digest's rendering stack (digest.sender / digest.compose: Jinja2,
# css-inline, nh3, 0.1-0.25 s) would slow every command that neither crawls nor mails
# (status, history, subscribers list...).

__all__ = ["App", "CheckSummary", "describe_summary", "utcnow", "atom_feed"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class App:
    """The config, the open store and the metrics, and the services built on them: `checker`,
    `mailer`, `alerts` and `sources` (each source's interval and filters)."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None):
        """The application around an open store. Building it reads and writes nothing; see
        `App.open` for the config's own database."""
        if metrics is None:
            from postwatch.metrics import Metrics     # prometheus_client: not for --help

            metrics = Metrics()
        self.config, self.store, self.metrics = config, store, metrics
        self.crawl_settings = scrapy_overrides(config)
        self.sources = settings.SourceSettings(config, store)
        self.mailer = Mailer(config, store, metrics, self.sources)
        self.alerts = Alerts(config, store, self.mailer.digest_settings)
        self.checker = Checker(config, store, metrics, self.alerts, self.sources.interval, self.crawl_settings)

    @classmethod
    def open(cls, config: Config, *, read_only: bool = False) -> "App":
        """The application on the config's database. `read_only`: the database is opened as it
        is (no migration, no file created) and the config's sources are not synced into it, so a
        command that only reads writes nothing. Otherwise the database is created or migrated
        as needed and the config's sources are synced into it."""
        from state import Store                  # SQLAlchemy: loaded by commands that open a database

        store = Store(config.database_url, removal_confirm_after=config.crawl.removal_confirm_after,
                      flood_share=config.crawl.flood_share, send_lease=config.digest.send_lease,
                      read_only=read_only, revisit=settings.revisit_schedule(config))
        app = cls(config, store)
        if not read_only:
            try:
                if config.smtp.host:
                    app.mailer.dkim_signer  # a DKIM key that cannot be used stops the command at once, not each send
                app.sync_sources()
                app.sync_routes()
            except BaseException:
                store.close()
                raise
        return app

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def sync_sources(self) -> None:
        """The config's [[sources]] into the store: added or updated, and those no longer in the
        config disabled; sources added with `postwatch sources add` stay as they are."""
        self.store.sync_sources(settings.source_records(self.config))

    def sync_routes(self) -> None:
        """The config's [[routes]] into the store as subscribers of origin "config": added or
        updated, and those no longer in the config removed."""
        self.store.sync_routes(settings.route_rows(self.config))

    def healthy(self) -> tuple[bool, str]:
        """(ok, detail) for /healthz: the check side, then the outbox, then the last sweep's age."""
        problem = self.checker.check_problem()
        if problem:
            return False, problem
        outbox_ok, outbox_detail = self.mailer.outbox_health()
        if not outbox_ok:
            return False, outbox_detail
        return self.checker.cycle_health()

    def housekeeping(self, now: datetime | None = None) -> dict[str, int]:
        from postwatch.housekeeping import housekeeping

        return housekeeping(self.config, self.store, self.mailer, now)

    def feed(self, name: str):
        return atom_feed(self.config, self.store, name)


def atom_feed(config: Config, store: Store, name: str):
    """The Atom feed (digest.feed.AtomFeed) of a source's newest changes, or of every
    source's for "all". Raises digest.feed.UnknownFeed for any other name."""
    from digest.feed import UnknownFeed, render_feed
    from postwatch.config import ALL_SOURCES

    feed_settings = settings.feed_settings(config)
    sources = {s.name: s for s in store.list_sources()}
    if name == ALL_SOURCES:
        events = store.feed_events(None, config.feeds.entries)
        return render_feed(events, feed_settings, self_url=feed_settings.url(name), sources=sources)
    if name not in sources:
        raise UnknownFeed(name)
    events = store.feed_events(name, config.feeds.entries)
    return render_feed(events, feed_settings, self_url=feed_settings.url(name), source=sources[name])
