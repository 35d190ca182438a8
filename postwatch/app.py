"""The application context shared by the CLI and the daemon: config, store, metrics and mail
settings, and the work both do (check sources, compose and send digests, alerts, housekeeping)."""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

from crawler.plan import CrawlPlan, CrawlReport, SourceSpec, feed_alone
from digest.settings import DigestSettings, SmtpSettings
from postwatch.config import Config, scrapy_overrides
from state import SourceRecord, StorageError

if TYPE_CHECKING:
    from digest.delivery import Channel
    from postwatch.metrics import Metrics
    from state import Store

# Imported where they are used, not here: Scrapy and Twisted (crawler.run, 0.5-1.2 s measured on
# this 2-core machine) and the digest's rendering stack (digest.sender / digest.compose: Jinja2,
# css-inline, nh3, 0.1-0.25 s) would slow every command that neither crawls nor mails
# (status, history, subscribers list...).

log = logging.getLogger("postwatch")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------
# The application context every job works in
# --------------------------------------------------------------------------------------------
@dataclass
class CheckSummary:
    source: str
    ok: bool
    error: str | None = None
    baseline: bool = False
    held: bool = False
    hold_reason: str | None = None
    full_sweep: bool = False
    not_modified: bool = False
    posts_seen: int = 0
    requests: int = 0
    response_bytes: int = 0
    events: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    pending_edits: int = 0            # new content seen once: an edit if the next check sees it again
    published_held: int = 0           # held changes this check confirmed (they go out like new events)
    became_volatile: list[str] = field(default_factory=list)

    def then(self, confirming: "CheckSummary") -> "CheckSummary":
        """This check with the confirming pass that followed it within the same check."""
        self.ok, self.error = confirming.ok, confirming.error or self.error
        self.events = [*self.events, *confirming.events]
        self.requests += confirming.requests
        self.response_bytes += confirming.response_bytes
        self.pending_edits = confirming.pending_edits
        self.published_held += confirming.published_held
        self.became_volatile = [*self.became_volatile, *confirming.became_volatile]
        self.held, self.hold_reason = self.held or confirming.held, self.hold_reason or confirming.hold_reason
        return self


class App:
    """Config, store, metrics and mail settings shared by the CLI and the daemon's jobs."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None):
        """The application around an open store. Building it reads and writes nothing; see
        `App.open` for the config's own database."""
        self.config = config
        self.store = store
        if metrics is None:
            from postwatch.metrics import Metrics     # prometheus_client: not for --help

            metrics = Metrics()
        self.metrics = metrics
        self.crawl_settings = scrapy_overrides(config)
        self.last_cycle_end: float | None = None
        # Per kind of outbox message (email, webhook...), monotonic times: when the flush under
        # way began, and when the last one ended (or this App was made). Written by the flushing
        # threads, read by /healthz (outbox_health).
        self.flush_began: dict[str, float] = {}
        self.flush_ended: dict[str, float] = {}
        self._made = time.monotonic()
        self.sweep_started: float | None = None        # time.time() of the check_many under way
        self.crash_streaks: dict[str, int] = {}        # source -> checks crashed in a row (this process)
        self.alerts_queued = 0
        self.log_failures = True      # the CLI prints its own one line per failed source

    @classmethod
    def open(cls, config: Config, *, read_only: bool = False) -> "App":
        """The application on the config's database. `read_only`: the database is opened as it
        is (no migration, no file created) and the config's sources are not synced into it, so a
        command that only reads writes nothing. Otherwise the database is created or migrated
        as needed and the config's sources are synced into it."""
        from state import Store                  # SQLAlchemy: loaded by commands that open a database
        from state.changes import RevisitSchedule

        store = Store(
            config.database_url,
            removal_confirm_after=config.crawl.removal_confirm_after,
            flood_share=config.crawl.flood_share,
            send_lease=config.digest.send_lease,
            read_only=read_only,
            revisit=RevisitSchedule(every_check_under=config.crawl.revisit_every_check_under,
                                    daily_under=config.crawl.revisit_daily_under,
                                    older_every=config.crawl.revisit_older_every,
                                    per_check=config.crawl.revisits_per_check),
        )
        app = cls(config, store)
        if not read_only:
            try:
                if config.smtp.host:
                    app.dkim_signer         # a DKIM key that cannot be used stops the command at once, not each send
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

    def sync_sources(self) -> None:
        """The config's [[sources]] into the store: added or updated, and those no longer in the
        config disabled; sources added with `postwatch sources add` stay as they are."""
        self.store.sync_sources(self.source_records_from_config())

    def sync_routes(self) -> None:
        """The config's [[routes]] into the store as subscribers of origin "config": added or
        updated, and those no longer in the config removed."""
        self.store.sync_routes([{"email": route.to, **route.options} for route in self.config.routes])

    # -- configuration views -------------------------------------------------------------
    def source_records_from_config(self) -> list[SourceRecord]:
        return [
            SourceRecord(name=s.name, url=s.url, kind=s.kind, feed_url=s.feed_url, sitemap_url=s.sitemap_url,
                         selectors=dict(s.selectors), title=s.title, origin="config")
            for s in self.config.sources
        ]

    def source_interval(self, name: str) -> timedelta:
        for source in self.config.sources:
            if source.name == name and source.interval:
                return source.interval
        stored = self.stored_source_settings().get(name)
        return (stored and stored["interval"]) or self.config.crawl.interval

    STORED_SETTINGS_TTL = 2.0

    def stored_source_settings(self) -> dict[str, dict]:
        """The interval and filters of sources added with the CLI or the console (edited in the
        console), read again at most every STORED_SETTINGS_TTL seconds: a sweep asks for every
        source's interval, and another process (a cluster worker, the console) may edit them."""
        cached = getattr(self, "_stored_settings", None)
        now = time.monotonic()
        if cached is None or now - cached[0] > self.STORED_SETTINGS_TTL:
            cached = (now, self.store.stored_source_settings())
            self._stored_settings = cached
        return cached[1]

    def forget_stored_source_settings(self) -> None:
        self._stored_settings = None

    def digest_settings(self):
        cfg = self.config
        from_domain = cfg.from_domain or "localhost"
        sources = self.store.list_sources()
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

    def verp_return_path(self, item) -> str | None:
        """MAIL FROM of a message to a subscriber while the inbound listener runs: an address
        that names them, so that a bounce says whose address failed (others: None, the usual).
        The subscriber is read for the start of their subscription, which the address signs."""
        if item.subscriber_id is None:
            return None
        from digest.tokens import make_address_token

        subscriber = self.store.get_subscriber(item.subscriber_id)
        if subscriber is None:
            return None
        token = make_address_token(subscriber, self._secret, "bounce")
        return f"{self.config.inbound.bounce_prefix}+{token}@{self.config.inbound_domain}"

    @functools.cached_property
    def _secret(self) -> bytes:
        return self.config.unsubscribe_secret()

    @functools.cached_property
    def dkim_signer(self):
        """Loaded once, not for every batch of mail."""
        return self.config.dkim_signer()

    def delivery_channel(self) -> Channel:
        """The channel of [delivery] channel: SMTP when a host is configured, else .eml files in
        the outbox folder, or any other registered channel with its [delivery] options."""
        from digest.delivery import make_channel

        channel = self.config.delivery_channel
        if channel == "smtp":
            smtp = self.config.smtp
            return make_channel("smtp", settings=SmtpSettings(
                host=smtp.host, port=smtp.effective_port, security=smtp.security,
                username=smtp.username, password=self.config.smtp_password, timeout=smtp.timeout,
                connections=smtp.connections, envelope_from=self.config.envelope_sender or None, dkim=self.dkim_signer,
                return_path=self.verp_return_path if self.config.inbound_domain else None,
            ))
        if channel == "folder":
            return make_channel("folder", path=self.config.outbox_path)
        return make_channel(channel, **self.config.delivery.options)

    def channel_for(self, kind: str) -> Channel:
        """The channel that delivers the outbox messages of `kind`: the mail channel for
        "email", else the registered channel that carries that kind, as the config sets it up."""
        from digest.delivery import CHANNELS

        if kind == "email":
            return self.delivery_channel()
        for cls in CHANNELS.values():
            if cls.carries == kind:
                return cls.configured(self.config)
        raise ValueError(f"no delivery channel carries {kind!r} messages (known: {', '.join(sorted(CHANNELS))})")

    def source_filters(self):
        """Source name -> its keyword filter, for the sources of the config that have one."""
        from digest.filters import KeywordFilter

        filters = {name: KeywordFilter(tuple(stored["include"]), tuple(stored["exclude"]), owner=f"source {name!r}")
                   for name, stored in self.stored_source_settings().items() if stored["include"] or stored["exclude"]}
        filters.update({s.name: KeywordFilter(tuple(s.include), tuple(s.exclude), owner=f"source {s.name!r}")
                        for s in self.config.sources if s.include or s.exclude})
        return filters

    def feed_settings(self):
        from digest.feed import FeedSettings
        from postwatch import __version__

        cfg = self.config
        public = cfg.feeds.public_url or f"http://{cfg.daemon.listen}/feeds/"
        return FeedSettings(public_url=public.rstrip("/") + "/", site_name=cfg.digest.site_name,
                            templates_dir=cfg.digest.templates_dir and (cfg.base_dir / cfg.digest.templates_dir),
                            version=__version__)

    def feed(self, name: str):
        """The Atom feed (digest.feed.AtomFeed) of a source's newest changes, or of every
        source's for "all". Raises digest.feed.UnknownFeed for any other name."""
        from digest.feed import UnknownFeed, render_feed
        from postwatch.config import ALL_SOURCES

        settings = self.feed_settings()
        sources = {s.name: s for s in self.store.list_sources()}
        if name == ALL_SOURCES:
            events = self.store.feed_events(None, self.config.feeds.entries)
            return render_feed(events, settings, self_url=settings.url(name), sources=sources)
        if name not in sources:
            raise UnknownFeed(name)
        events = self.store.feed_events(name, self.config.feeds.entries)
        return render_feed(events, settings, self_url=settings.url(name), source=sources[name])

    def close(self) -> None:
        self.store.close()

    # -- jobs ------------------------------------------------------------------------------
    async def check_source(self, name: str, *, full: bool | None = None) -> CheckSummary:
        """Check one source (a sweep of one)."""
        return (await self.check_many([name], full=full))[0]

    async def check_many(self, names: Iterable[str], *, full: bool | None = None, progress=None) -> list[CheckSummary]:
        """Check the named sources in one sweep. Sources where an edit was seen once are looked
        at again `[crawl] confirm_edits_after` later, within the same check: the edit is mailed
        when that fetch sees the same content (a rotating ad or counter would differ), without
        waiting for the next interval."""
        started = time.monotonic()
        self.sweep_started = time.time()
        names = list(dict.fromkeys(names))
        if progress:
            for name in names:
                progress(f"checking {name} …")
        try:
            summaries = await self._sweep(names, full)
            confirm = [n for n, s in summaries.items() if s.ok and s.pending_edits]
            if confirm:
                import asyncio

                await asyncio.sleep(self.config.crawl.confirm_edits_after.total_seconds())
                for name, confirming in (await self._sweep(confirm, False)).items():
                    summaries[name].then(confirming)
        finally:
            self.sweep_started = None
        seconds = time.monotonic() - started
        for summary in summaries.values():
            summary.seconds = seconds
        self.last_cycle_end = time.time()
        self.metrics.check_cycle_end.set(self.last_cycle_end)
        return [summaries[n] for n in names]

    async def _sweep(self, names: list[str], full: bool | None) -> dict[str, CheckSummary]:
        """One sweep: the named sources' state read at once, their first conditional GETs asked by
        the lean client (crawler.revalidate), one Scrapy crawl for the sources that need more,
        and every source's result applied in a transaction of its own (the checks that saw
        nothing new share one), so one source's failure changes no other source's result."""
        from crawler.revalidate import revalidator

        records = {r.name: r for r in self.store.list_sources() if r.name in set(names)}
        summaries = {n: CheckSummary(source=n, ok=False, error=f"{n}: no such source") for n in names if n not in records}
        now = utcnow()
        states = self._crawl_states(records, summaries, posts_too=False, now=now)
        kinds = {name: self._check_kind(state, full, now) for name, state in states.items()}
        lean = [self._plan(records[n], states[n], *kinds[n], now=now) for n in states if not any(kinds[n])]
        revalidations = (await revalidator(self.config.crawl.parallel_sources).revalidate(lean, self.crawl_settings)
                         if lean else {})
        reports = {n: r.settled_report() for n, r in revalidations.items() if r.settled}
        # A site too slow for its first exchange's deadline: the check failed, and the sweep goes on.
        reports.update({n: CrawlReport(source_name=n, ok=False, error=f"{n}: {r.reason}", requests=r.attempts)
                        for n, r in revalidations.items() if r.timed_out})
        to_crawl = [n for n in states if n not in reports]
        if to_crawl:
            from crawler.run import crawl_sources    # Scrapy and Twisted: only a sweep with more to read loads them

            full_states = self._crawl_states({n: records[n] for n in to_crawl}, summaries, now=now)
            states.update(full_states)
            to_crawl = [n for n in to_crawl if n in full_states]
            plans = []
            for name in to_crawl:
                plan = self._plan(records[name], states[name], *kinds[name], now=now)
                if name in revalidations:
                    plan.prefetched = dict(revalidations[name].answers)
                plans.append(plan)
            try:
                crawled = await crawl_sources(plans, self.crawl_settings) if plans else {}
            except StorageError:
                raise
            except Exception as exc:    # a bug in the crawl: each of its sources' checks crashed
                crawled = {}
                for name in to_crawl:
                    summaries[name] = self._crashed(records[name], exc)
            for name, report in crawled.items():
                if name in revalidations:
                    report.requests += revalidations[name].unanswered
            reports.update(crawled)
        quiet = [n for n, report in reports.items() if n in revalidations and revalidations[n].settled and states[n].quiet]
        try:
            # Checked when the sweep began, not when its slowest source gave up: a slow host's
            # deadline must not push the other sources' next checks later at every sweep.
            self.store.record_quiet_checks(quiet, now, listing_read=[n for n in quiet if revalidations[n].listing_read])
        except StorageError as exc:
            for name in quiet:
                summaries[name] = self._storage_failure(name, exc)
        for name in records:
            if name in summaries or name not in reports:
                continue
            baseline, sweep = kinds[name]
            try:
                summaries[name] = self._conclude(records[name], reports[name], baseline=baseline, sweep=sweep,
                                                 quiet=name in quiet, failures_before=states[name].failures)
            except StorageError as exc:     # the database may come back: one line, no traceback
                summaries[name] = self._storage_failure(name, exc)
            except Exception as exc:  # a bug in one source must not stop the others
                summaries[name] = self._crashed(records[name], exc)
        return summaries

    def _crawl_states(self, records: dict[str, SourceRecord], summaries: dict[str, CheckSummary], **options) -> dict:
        """The sources' crawl states in one read; when that read crashes (a malformed row of one
        source), each source's on its own, so that only the sources it crashes on fail their
        check (recorded in `summaries`)."""
        try:
            return self.store.crawl_states(records, **options)
        except StorageError:
            raise
        except Exception:
            states = {}
            for name, record in records.items():
                try:
                    states.update(self.store.crawl_states([name], **options))
                except StorageError:
                    raise
                except Exception as exc:
                    summaries[name] = self._crashed(record, exc)
            return states

    def _crashed(self, record: SourceRecord, exc: Exception) -> CheckSummary:
        """A check that crashed is a failed check like any other: recorded (so it waits its
        interval, not the next tick), counted, alerted; its traceback logged at the first crash."""
        name = record.name
        streak = self.crash_streaks[name] = self.crash_streaks.get(name, 0) + 1
        self.metrics.check_crashes.labels(name).inc()
        error = f"{name}: check crashed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        try:
            self._record_failure(record, error, traceback_of=exc if streak == 1 else None)
        except StorageError as storage:
            return self._storage_failure(name, storage)
        return CheckSummary(source=name, ok=False, error=error)

    def _record_failure(self, record: SourceRecord, error: str, traceback_of: Exception | None = None) -> int:
        """One more failed check of `record`'s source: stored, counted, told once when it starts
        failing (with the traceback of a first crash: a bug to report), and alerted after
        [alerts] failures_before_alert in a row."""
        name = record.name
        failures = self.store.record_check_failure(name, error, utcnow())
        self.metrics.checks.labels(name, "error").inc()
        if traceback_of is not None:
            log.error("%s", error, exc_info=traceback_of, extra={"source": name})
        elif self.log_failures:
            if failures == 1:
                log.error("%s (started failing)", error, extra={"source": name})
            else:
                log.info("%s (%d failed checks in a row)", error, failures, extra={"source": name})
        if failures >= self.config.alerts.failures_before_alert:
            self.alert(f"source-failing:{name}", f"postwatch: source '{name}' failed {failures} checks in a row",
                       [error, f"URL: {record.url}", "Nothing was changed in the stored posts."])
        return failures

    def _storage_failure(self, name: str, exc: StorageError) -> CheckSummary:
        log.error("%s: %s", name, exc, extra={"source": name})
        return CheckSummary(source=name, ok=False, error=f"{name}: {exc}")

    def _check_kind(self, state, full: bool | None, now: datetime) -> tuple[bool, bool]:
        """(baseline, full sweep) for a source's check now. A baseline is never a sweep; a
        sweep is asked for (`full`) or due ([crawl] full_sweep_every)."""
        if not state.baseline_done:
            return True, False
        if full is not None:
            return False, full
        last = state.last_full_sweep_at
        return False, last is not None and now - last >= self.config.crawl.full_sweep_every

    @staticmethod
    def _plan(record: SourceRecord, state, baseline: bool, sweep: bool, now: datetime | None = None) -> CrawlPlan:
        """What the crawl of one source is asked to do. An edit seen once (or held as suspect) is
        looked at again at this very check, and a sweep re-reads volatile posts in full to see
        whether they settled."""
        awaiting = {} if baseline else state.awaiting_confirmation
        recheck_urls = {url for url, origins in awaiting.items() if "page" in origins}
        if sweep:
            recheck_urls |= state.volatile_pages
        if not baseline:
            recheck_urls |= set(state.removals_to_confirm)
        return CrawlPlan(
            source=SourceSpec(name=record.name, url=record.url, kind=record.kind, feed_url=record.read_feed_url,
                              sitemap_url=record.sitemap_url, selectors=dict(record.selectors or {}),
                              feed_discovered=not record.feed_url and bool(record.discovered_feed_url)),
            known_urls={url for url, post in state.known.items() if post.status != "removed"},
            known_published={url: post.published_at for url, post in state.known.items()
                             if post.status != "removed" and post.published_at},
            validators=state.validators,
            robots=state.robots,
            baseline=baseline,
            # A full sweep reads every known page; otherwise those the revisit schedule says.
            sweep_urls=list(state.known) if sweep else ([] if baseline else list(state.revisits)),
            recheck_urls=sorted(recheck_urls),
            recheck_feed=any("feed" in origins for origins in awaiting.values()),
            # An "auto" source between two reads of its listing asks its discovered feed alone
            # (crawler.plan.feed_alone); a baseline and a full sweep read the listing too.
            feed_alone=not (baseline or sweep) and feed_alone(record.kind, record.feed_url, record.discovered_feed_url,
                                                              state.listing_read_at, now or utcnow()),
        )

    def _conclude(self, record: SourceRecord, report, *, baseline: bool, sweep: bool, quiet: bool,
                  failures_before: int = 0) -> CheckSummary:
        """Apply one source's report to the stored state (unless it was a quiet check, already
        recorded) and tell the operator what needs telling (`failures_before`: failed checks in a
        row before this one)."""
        name = record.name
        summary = CheckSummary(source=name, ok=report.ok, error=report.error, baseline=baseline, full_sweep=sweep,
                               not_modified=report.not_modified, posts_seen=len(report.posts),
                               requests=report.requests, response_bytes=report.response_bytes)
        self.metrics.requests.labels(name).inc(report.requests)
        self.metrics.not_modified.labels(name).inc(report.not_modified_count)
        self.metrics.response_bytes.labels(name).inc(report.response_bytes)
        now = utcnow()
        self.store.record_check_traffic(name, report.traffic(), now)     # the console's figures (state.traffic)
        if not report.ok:
            self.crash_streaks.pop(name, None)
            self._record_failure(record, report.error or f"{name}: check failed")
            return summary
        if not quiet:
            result = self.store.apply_check(name, report, now)
        self.crash_streaks.pop(name, None)
        self.metrics.checks.labels(name, "ok").inc()
        self.metrics.last_success.labels(name).set(now.timestamp())
        if failures_before and self.log_failures:
            log.info("%s: stopped failing after %d checks", name, failures_before, extra={"source": name})
        if report.feed_problem:
            self.alert(f"source-feed:{name}", f"postwatch: the feed of source '{name}' cannot be read",
                       [f"{name}: {report.feed_problem}", f"URL: {record.url}",
                        "The listing's posts are read without it, so new posts are still found; posts "
                        "that only the feed carries are not. Fix or remove the feed in the config (feed_url), "
                        "or ignore this if the site's feed is gone for good."])
        if quiet:
            return summary
        if sweep or baseline:
            self.store.mark_full_sweep(name, now)
        summary.events, summary.held, summary.hold_reason = result.events, result.held, result.hold_reason
        summary.baseline = result.baseline
        summary.pending_edits, summary.became_volatile = result.pending_edits, result.became_volatile
        summary.published_held = result.published_held
        for event in result.events:
            self.metrics.events.labels(name, event.kind).inc()
        if result.held:
            log.warning("%s: %d changes held as suspect: %s", name, len(result.events), result.hold_reason,
                        extra={"source": name})
            self.alert(f"source-suspect:{name}", f"postwatch: changes of source '{name}' held as suspect",
                       [f"{name}: {result.hold_reason}", f"{len(result.events)} events held.",
                        f"Release them with: postwatch sources release {name}"])
        if result.became_volatile:
            self.alert_volatile(name, result.became_volatile)
        for url, error in report.failed.items():
            log.warning("%s: %s: %s", name, url, error, extra={"source": name})
        return summary

    def compose_digests(self, subscriber_ids: Iterable[int] | None = None) -> list[int]:
        if not self.store.digests_pending(subscriber_ids):
            return []       # every cursor is at the newest event: the rendering stack stays unloaded
        from digest.sender import compose_and_queue

        return compose_and_queue(self.store, self.digest_settings(), utcnow(), subscriber_ids=subscriber_ids,
                                 source_filters=self.source_filters())

    def flush_outbox(self, stop: threading.Event | None = None):
        """Send what is due, channel by channel (email first, then every other channel that has
        a message due): the totals of all of them."""
        from digest.settings import FlushStats

        total = FlushStats()
        due = self.store.due_channels(utcnow())
        journal = self.store.accepted
        if not due and not (journal is not None and journal.waiting()):
            # Nothing to send nor to reconcile: the delivery stack (digest.sender) stays unloaded.
            self.update_outbox_gauges()
            return total
        kinds = ["email", *(kind for kind in due if kind != "email")]
        for kind in kinds:
            if stop is not None and stop.is_set():
                break
            total.add(kind, self.flush_channel(kind, stop))
        return total

    def flush_channel(self, kind: str, stop: threading.Event | None = None):
        """Send what is due of the messages of one kind ("email", "webhook"...): the daemon
        flushes each kind on its own, so that one whose receivers hang holds up no other."""
        from digest.sender import flush_outbox

        self.flush_began[kind] = time.monotonic()
        try:
            with self.channel_for(kind) as channel:
                stats = flush_outbox(self.store, channel, utcnow(), max_attempts=self.config.digest.max_attempts,
                                     retry_after=self.config.digest.retry_after, stop=stop,
                                     bounce_limit=self.config.digest.bounce_limit)
        finally:
            self.flush_ended[kind] = time.monotonic()
            del self.flush_began[kind]
        for result in ("sent", "failed", "retried"):
            self.metrics.deliveries.labels(kind, result).inc(getattr(stats, result))
        self.metrics.digests_sent.inc(stats.sent)
        self.metrics.digests_failed.inc(stats.failed)
        self.metrics.digests_retried.inc(stats.retried)
        self.update_outbox_gauges()
        return stats

    @property
    def largest_deadline(self) -> float:
        """The longest a single outbound exchange may take: one message's SMTP conversation, or
        one webhook or Apprise delivery ([smtp] timeout, [webhook] timeout)."""
        return max(self.config.smtp.timeout, self.config.webhook.timeout)

    def outbox_health(self) -> tuple[bool, str]:
        """(ok, detail) of the outbox for /healthz: unhealthy when a kind of message has been due
        without a flush of that kind ending for longer than three outbox periods and a deadline
        (or one flush has been running that long: a hung one holds its messages' leases, so they
        no longer look due)."""
        allowed = 3 * self.config.daemon.outbox_every.total_seconds() + self.largest_deadline
        now = time.monotonic()
        for kind, began in list(self.flush_began.items()):
            if now - began > allowed:
                return False, f"outbox: a {kind} flush has been running for {now - began:.0f}s (limit {allowed:.0f}s)"
        for kind in self.store.due_channels(utcnow()):
            age = now - self.flush_ended.get(kind, self._made)
            if age > allowed and kind not in self.flush_began:
                return False, f"outbox: {kind} messages due and no {kind} flush ended for {age:.0f}s (limit {allowed:.0f}s)"
        return True, "outbox flushing"

    def update_outbox_gauges(self) -> None:
        by_channel = self.store.outbox_stats_by_channel()
        self.metrics.outbox_depth.set(sum(counts.get("pending", 0) for counts in by_channel.values()))
        for kind in {"email", *by_channel}:
            self.metrics.outbox_pending.labels(kind).set(by_channel.get(kind, {}).get("pending", 0))

    def send_digests(self, subscriber_ids: Iterable[int] | None = None):
        queued = self.compose_digests(subscriber_ids)
        return queued, self.flush_outbox()

    def alert(self, key: str, subject: str, lines: list[str]) -> bool:
        """One email to the operator per problem per day, through the same outbox."""
        operator = self.config.alerts.operator
        if not operator:
            return False
        now = utcnow()
        if not self.store.alert_due(key, now, self.config.alerts.every):
            return False
        from digest.compose import build_alert

        self.store.enqueue_message(build_alert(operator, subject, lines, self.digest_settings(), now), now)
        self.alerts_queued += 1
        log.warning("alert queued for %s: %s", operator, subject)
        return True

    def alert_volatile(self, source: str, urls: list[str]) -> None:
        """Once per post that starts changing on every fetch (the key names the posts, so the
        daily limit does not swallow other posts that turn volatile later)."""
        log.warning("%s: %d posts change on every fetch; their edits are not mailed: %s", source, len(urls),
                    ", ".join(urls), extra={"source": source})
        key = hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:16]
        self.alert(f"post-volatile:{source}:{key}",
                   f"postwatch: {len(urls)} post(s) of '{source}' change on every fetch",
                   [f"{source}: these posts show different content every time they are fetched (a rotating ad, "
                    "a counter or a timestamp inside the article?):", *(f"  {url}" for url in urls),
                    "Their edits are not mailed while this lasts. Add an `exclude` selector for the changing "
                    f"part to source '{source}' in the config, or ignore this if it stops by itself."])

    def check_outbox_health(self) -> None:
        stats = self.store.outbox_stats()
        oldest = stats.get("oldest_pending_age_s", 0) or 0
        if oldest >= self.config.alerts.undeliverable_after.total_seconds():
            self.alert("outbox-stuck", "postwatch: digests undeliverable",
                       [f"{stats.get('pending', 0)} messages waiting; the oldest for {oldest / 3600:.1f} h.",
                        "Check the [smtp] settings and the mail server."])

    def housekeeping(self, now: datetime | None = None) -> dict[str, int]:
        """Prune what is no longer needed; remind unconfirmed signups once, and expire them."""
        from postwatch.signup import remind_and_expire

        now = now or utcnow()
        pruned = {**self.store.prune(now, self.config.daemon.retention), **remind_and_expire(self, now)}
        if any(pruned.values()):
            log.info("pruned %s", ", ".join(f"{v} {k}" for k, v in pruned.items()))
        return pruned

    def sweep_limit(self) -> float:
        """How long a sweep may run before /healthz calls the daemon stuck: twice the longest
        interval plus the jitter (as for the age of the last sweep), or, when that is shorter,
        what a sweep's timeouts allow — every exchange ([crawl] timeout, the whole of it) tried
        1 + [crawl] retries times, four rounds of them (the lean first GETs, the listing, the posts,
        robots.txt), plus the wait before an edit is confirmed."""
        crawl = self.config.crawl
        intervals = [self.source_interval(s.name) for s in self.config.sources] or [crawl.interval]
        by_interval = 2 * max([*intervals, crawl.interval]).total_seconds() + crawl.jitter.total_seconds()
        by_timeouts = 4 * crawl.timeout * (crawl.retries + 1) + crawl.confirm_edits_after.total_seconds()
        return max(by_interval, by_timeouts)

    def check_problem(self) -> str | None:
        """Why the check side is unhealthy, in one line: a sweep running past sweep_limit(), or
        sources whose last [alerts] failures_before_alert checks (or more) all crashed."""
        if self.sweep_started is not None:
            running, limit = time.time() - self.sweep_started, self.sweep_limit()
            if running > limit:
                return f"a sweep has been running for {running:.0f}s (limit {limit:.0f}s)"
        crashing = sorted(n for n, streak in self.crash_streaks.items()
                          if streak >= self.config.alerts.failures_before_alert)
        if crashing:
            return f"checks crashed {self.config.alerts.failures_before_alert}+ times in a row: {', '.join(crashing)}"
        return None

    def healthy(self) -> tuple[bool, str]:
        problem = self.check_problem()
        if problem:
            return False, problem
        outbox_ok, outbox_detail = self.outbox_health()
        if not outbox_ok:
            return False, outbox_detail
        if self.last_cycle_end is None:
            return True, "starting"
        intervals = [self.source_interval(s.name) for s in self.store.list_sources()] or [self.config.crawl.interval]
        allowed = 2 * max(intervals).total_seconds() + self.config.crawl.jitter.total_seconds()
        age = time.time() - self.last_cycle_end
        if age > allowed:
            return False, f"last check ended {age:.0f}s ago (limit {allowed:.0f}s)"
        return True, f"last check ended {age:.0f}s ago"


def describe_summary(summary: CheckSummary) -> str:
    if not summary.ok:
        return summary.error or f"{summary.source}: check failed"
    if summary.baseline:
        return f"{summary.source}: baseline recorded, {summary.posts_seen} posts ({summary.requests} requests)"
    counts: dict[str, int] = {}
    for event in summary.events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    changes = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no changes"
    held = f" — HELD as suspect: {summary.hold_reason}" if summary.held else ""
    if summary.published_held:
        held += f"; {summary.published_held} held change(s) confirmed and published"
    if summary.pending_edits:
        held += f"; {summary.pending_edits} edit(s) seen once, to be confirmed by the next check"
    if summary.became_volatile:
        held += f"; {len(summary.became_volatile)} post(s) change on every fetch (volatile, not mailed)"
    sweep = ", full sweep" if summary.full_sweep else ""
    return f"{summary.source}: {changes}{held} ({summary.requests} requests, {summary.response_bytes} bytes{sweep})"
