"""The jobs (check a source, compose and send digests, flush the outbox, housekeeping) and the
APScheduler daemon that runs them.

Why one process with Scrapy's AsyncCrawlerRunner rather than a subprocess per crawl: a crawl in
a subprocess costs about 0.6 s and ~77 MB more each time (engineering-notes.md), and a 100-source
sweep would pay it 100 times. Scrapy's reactor cannot be restarted, so the asyncio reactor is
installed once and both Scrapy and APScheduler's AsyncIOScheduler run on its event loop.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs

from postwatch.config import Config, scrapy_settings

log = logging.getLogger("postwatch")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
class Metrics:
    """Prometheus series for one process (own registry, so tests can build several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.checks = Counter("postwatch_checks", "Source checks by result", ["source", "result"], registry=self.registry)
        self.requests = Counter("postwatch_http_requests", "HTTP requests sent to watched sites", ["source"], registry=self.registry)
        self.not_modified = Counter("postwatch_http_not_modified", "HTTP 304 answers", ["source"], registry=self.registry)
        self.response_bytes = Counter("postwatch_http_response_bytes", "Body bytes received", ["source"], registry=self.registry)
        self.events = Counter("postwatch_events", "Change events by kind", ["source", "kind"], registry=self.registry)
        self.digests_sent = Counter("postwatch_digests_sent", "Messages accepted by the mail channel", registry=self.registry)
        self.digests_failed = Counter("postwatch_digests_failed", "Messages refused permanently", registry=self.registry)
        self.digests_retried = Counter("postwatch_digests_retried", "Send attempts put off for a retry", registry=self.registry)
        self.outbox_depth = Gauge("postwatch_outbox_depth", "Messages waiting in the outbox", registry=self.registry)
        self.last_success = Gauge("postwatch_source_last_success_timestamp_seconds", "Last successful check", ["source"], registry=self.registry)
        self.check_cycle_end = Gauge("postwatch_last_check_cycle_end_timestamp_seconds", "When the last check ended", registry=self.registry)


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


class App:
    """Config, store, metrics and mail settings shared by the CLI and the daemon's jobs."""

    def __init__(self, config: Config, store=None, metrics: Metrics | None = None):
        from state import Store

        self.config = config
        self.store = store or Store(
            config.database_url,
            removal_confirm_after=config.crawl.removal_confirm_after,
            flood_share=config.crawl.flood_share,
            send_lease=config.digest.send_lease,
        )
        self.metrics = metrics or Metrics()
        self.crawl_settings = scrapy_settings(config)
        self.last_cycle_end: float | None = None
        self.alerts_queued = 0
        self.log_failures = True      # the CLI prints its own one line per failed source
        self.store.sync_sources(self.source_records_from_config())

    # -- configuration views -------------------------------------------------------------
    def source_records_from_config(self):
        from state import SourceRecord

        return [
            SourceRecord(name=s.name, url=s.url, kind=s.kind, feed_url=s.feed_url, sitemap_url=s.sitemap_url,
                         selectors=dict(s.selectors), title=s.title, origin="config")
            for s in self.config.sources
        ]

    def source_interval(self, name: str) -> timedelta:
        for source in self.config.sources:
            if source.name == name and source.interval:
                return source.interval
        return self.config.crawl.interval

    def digest_settings(self):
        from digest.settings import DigestSettings

        cfg = self.config
        public = cfg.unsubscribe.public_url or f"http://{cfg.daemon.listen}/unsubscribe"
        from_domain = cfg.digest.from_addr.rpartition("@")[2].strip(">") or "localhost"
        return DigestSettings(
            from_addr=cfg.digest.from_addr,
            reply_to=cfg.digest.reply_to,
            list_id=f"postwatch.{from_domain}",
            site_name=cfg.digest.site_name,
            unsubscribe_base_url=public,
            unsubscribe_mailto=cfg.unsubscribe.mailto or f"unsubscribe@{from_domain}",
            secret=cfg.unsubscribe_secret(),
            templates_dir=cfg.digest.templates_dir and (cfg.base_dir / cfg.digest.templates_dir),
            timezone=cfg.digest.default_timezone,
            source_titles={s.name: (s.title or s.name) for s in self.store.list_sources()},
        )

    def delivery_channel(self):
        """SMTP when a host is configured, else .eml files in the outbox folder."""
        from digest.delivery import make_channel
        from digest.settings import SmtpSettings

        smtp = self.config.smtp
        if smtp.host:
            return make_channel("smtp", settings=SmtpSettings(
                host=smtp.host, port=smtp.effective_port, security=smtp.security,
                username=smtp.username, password=self.config.smtp_password, timeout=smtp.timeout,
                connections=smtp.connections,
            ))
        return make_channel("folder", path=self.config.outbox_path)

    def close(self) -> None:
        self.store.close()

    # -- jobs ------------------------------------------------------------------------------
    async def check_source(self, name: str, *, full: bool | None = None) -> CheckSummary:
        """Crawl one source and apply what it saw to the stored state (one transaction)."""
        from crawler.run import CrawlPlan, SourceSpec, crawl
        from state import CheckInput

        started = time.monotonic()
        record = self.store.get_source(name)
        if record is None:
            return CheckSummary(source=name, ok=False, error=f"{name}: no such source")
        crawl_state = self.store.crawl_state(name)
        baseline = not crawl_state.baseline_done
        now = utcnow()
        if baseline:
            sweep = False
        elif full is not None:
            sweep = full
        else:
            last = crawl_state.last_full_sweep_at
            sweep = last is not None and now - last >= self.config.crawl.full_sweep_every
        sweep_urls = [url for url, post in crawl_state.known.items()] if sweep else []
        plan = CrawlPlan(
            source=SourceSpec(name=record.name, url=record.url, kind=record.kind, feed_url=record.feed_url,
                              sitemap_url=record.sitemap_url, selectors=dict(record.selectors or {})),
            known_urls={url for url, post in crawl_state.known.items() if post.status != "removed"},
            validators=crawl_state.validators,
            robots=crawl_state.robots,
            baseline=baseline,
            sweep_urls=sweep_urls,
        )
        report = await crawl(plan, self.crawl_settings)
        summary = CheckSummary(source=name, ok=report.ok, error=report.error, baseline=baseline, full_sweep=sweep,
                               not_modified=report.not_modified, posts_seen=len(report.posts),
                               requests=report.requests, response_bytes=report.response_bytes)
        self.metrics.requests.labels(name).inc(report.requests)
        self.metrics.not_modified.labels(name).inc(report.not_modified_count)
        self.metrics.response_bytes.labels(name).inc(report.response_bytes)
        now = utcnow()
        if not report.ok:
            failures = self.store.record_check_failure(name, report.error or f"{name}: check failed", now)
            self.metrics.checks.labels(name, "error").inc()
            if self.log_failures:
                log.error("%s", report.error, extra={"source": name})
            if failures >= self.config.alerts.failures_before_alert:
                self.alert(f"source-failing:{name}", f"postwatch: source '{name}' failed {failures} checks in a row",
                           [report.error or "", f"URL: {record.url}", "Nothing was changed in the stored posts."])
        else:
            result = self.store.apply_check(name, CheckInput(
                posts=report.posts, not_modified=report.not_modified, unchanged_urls=report.unchanged_urls,
                gone=report.gone, failed=report.failed, validators=report.validators, robots=report.robots,
                full_sweep=sweep, baseline=baseline,
            ), now)
            if sweep or baseline:
                self.store.mark_full_sweep(name, now)
            summary.events, summary.held, summary.hold_reason = result.events, result.held, result.hold_reason
            summary.baseline = result.baseline
            self.metrics.checks.labels(name, "ok").inc()
            self.metrics.last_success.labels(name).set(now.timestamp())
            for event in result.events:
                self.metrics.events.labels(name, event.kind).inc()
            if result.held:
                log.warning("%s: %d changes held as suspect: %s", name, len(result.events), result.hold_reason,
                            extra={"source": name})
                self.alert(f"source-suspect:{name}", f"postwatch: changes of source '{name}' held as suspect",
                           [f"{name}: {result.hold_reason}", f"{len(result.events)} events held.",
                            f"Release them with: postwatch sources release {name}"])
            for url, error in report.failed.items():
                log.warning("%s: %s: %s", name, url, error, extra={"source": name})
        summary.seconds = time.monotonic() - started
        self.last_cycle_end = time.time()
        self.metrics.check_cycle_end.set(self.last_cycle_end)
        return summary

    async def check_many(self, names: Iterable[str], *, full: bool | None = None, progress=None) -> list[CheckSummary]:
        limit = asyncio.Semaphore(self.config.crawl.parallel_sources)

        async def one(name: str) -> CheckSummary:
            async with limit:
                if progress:
                    progress(f"checking {name} …")
                try:
                    return await self.check_source(name, full=full)
                except Exception as exc:  # a bug in one source must not stop the others
                    log.exception("%s: check crashed", name, extra={"source": name})
                    return CheckSummary(source=name, ok=False, error=f"{name}: internal error: {exc}")

        return list(await asyncio.gather(*(one(n) for n in names)))

    def compose_digests(self, subscriber_ids: Iterable[int] | None = None) -> list[int]:
        from digest.sender import compose_and_queue

        return compose_and_queue(self.store, self.digest_settings(), utcnow(), subscriber_ids=subscriber_ids)

    def flush_outbox(self):
        from digest.sender import flush_outbox

        with self.delivery_channel() as channel:
            stats = flush_outbox(self.store, channel, utcnow(), max_attempts=self.config.digest.max_attempts)
        self.metrics.digests_sent.inc(stats.sent)
        self.metrics.digests_failed.inc(stats.failed)
        self.metrics.digests_retried.inc(stats.retried)
        self.metrics.outbox_depth.set(self.store.outbox_stats().get("pending", 0))
        if stats.retried:
            log.warning("mail: %d messages put off for a retry", stats.retried)
        return stats

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

    def check_outbox_health(self) -> None:
        stats = self.store.outbox_stats()
        oldest = stats.get("oldest_pending_age_s", 0) or 0
        if oldest >= self.config.alerts.undeliverable_after.total_seconds():
            self.alert("outbox-stuck", "postwatch: digests undeliverable",
                       [f"{stats.get('pending', 0)} messages waiting; the oldest for {oldest / 3600:.1f} h.",
                        "Check the [smtp] settings and the mail server."])

    def housekeeping(self) -> dict[str, int]:
        pruned = self.store.prune(utcnow(), self.config.daemon.retention)
        if any(pruned.values()):
            log.info("pruned %s", ", ".join(f"{v} {k}" for k, v in pruned.items()))
        return pruned

    def healthy(self) -> tuple[bool, str]:
        if self.last_cycle_end is None:
            return True, "starting"
        intervals = [self.source_interval(s.name) for s in self.store.list_sources()] or [self.config.crawl.interval]
        allowed = 2 * max(intervals).total_seconds() + self.config.crawl.jitter.total_seconds()
        age = time.time() - self.last_cycle_end
        if age > allowed:
            return False, f"last check ended {age:.0f}s ago (limit {allowed:.0f}s)"
        return True, f"last check ended {age:.0f}s ago"


# --------------------------------------------------------------------------------------------
# Module-level job functions: APScheduler's persistent job store keeps only their names and
# plain arguments, so they look the running daemon up instead of closing over it.
# --------------------------------------------------------------------------------------------
_daemon: "Daemon | None" = None


async def check_job(source_name: str) -> None:
    daemon = _require_daemon()
    summary = await daemon.app.check_many([source_name])
    immediate = [s.id for s in daemon.app.store.list_subscribers(active_only=True) if s.cadence == "immediate"]
    if immediate and any(s.events and not s.held for s in summary):
        daemon.app.send_digests(immediate)
    elif daemon.app.alerts_queued:
        daemon.app.flush_outbox()
    daemon.app.alerts_queued = 0


async def digest_job(cadence_key: str) -> None:
    daemon = _require_daemon()
    ids = [s.id for s in daemon.app.store.list_subscribers(active_only=True) if cadence_key_of(s) == cadence_key]
    if ids:
        queued, stats = daemon.app.send_digests(ids)
        log.info("digest %s: %d composed, %d sent, %d retrying", cadence_key, len(queued), stats.sent, stats.retried)


async def outbox_job() -> None:
    daemon = _require_daemon()
    if daemon.app.store.due_outbox(utcnow(), limit=1):
        daemon.app.flush_outbox()
    daemon.app.check_outbox_health()


async def maintenance_job() -> None:
    _require_daemon().app.housekeeping()


async def reconcile_job() -> None:
    """Subscribers and sources added with the CLI while the daemon runs get their jobs."""
    _require_daemon().reconcile_jobs()


def _require_daemon() -> "Daemon":
    if _daemon is None:
        raise RuntimeError("no postwatch daemon is running in this process")
    return _daemon


def cadence_key_of(subscriber) -> str | None:
    """Subscribers who share a schedule share one digest job."""
    if subscriber.cadence == "daily":
        return f"daily@{subscriber.send_time}@{subscriber.timezone}"
    if subscriber.cadence == "weekly":
        return f"weekly@{subscriber.weekday}@{subscriber.send_time}@{subscriber.timezone}"
    return None


def trigger_for_cadence(key: str):
    from apscheduler.triggers.cron import CronTrigger

    parts = key.split("@")
    if parts[0] == "daily":
        hour, minute = parts[1].split(":")
        return CronTrigger(hour=int(hour), minute=int(minute), timezone=parts[2])
    _, weekday, at, tz = parts
    hour, minute = at.split(":")
    return CronTrigger(day_of_week=int(weekday), hour=int(hour), minute=int(minute), timezone=tz)


# --------------------------------------------------------------------------------------------
# Health, metrics and unsubscribe over HTTP (stdlib WSGI server in a thread)
# --------------------------------------------------------------------------------------------
class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)


def make_wsgi_app(app: App, scheduler_running=lambda: True):
    from prometheus_client import generate_latest, CONTENT_TYPE_LATEST
    from digest import unsubscribe

    def wsgi(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            ok, detail = app.healthy()
            ok = ok and scheduler_running()
            body = json.dumps({"status": "ok" if ok else "unhealthy", "detail": detail}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        if path == "/metrics":
            app.metrics.outbox_depth.set(app.store.outbox_stats().get("pending", 0))
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(app.metrics.registry)]
        if path.rstrip("/") == "/unsubscribe":
            params = parse_qs(environ.get("QUERY_STRING", ""))
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                form = parse_qs(environ["wsgi.input"].read(min(length, 65536)).decode("utf-8", "replace"))
                params = {**params, **form}
            token = (params.get("token") or [""])[0]
            status, content_type, body = unsubscribe.handle(method, token, app.store, app.digest_settings())
            start_response(f"{status} {_REASONS.get(status, 'OK')}", [("Content-Type", content_type)])
            return [body if isinstance(body, bytes) else body.encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return wsgi


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


class HttpEndpoint:
    def __init__(self, wsgi_app, host: str, port: int):
        self.server = make_server(host, port, wsgi_app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="postwatch-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------
class Daemon:
    OUTBOX_EVERY = 60
    RECONCILE_EVERY = 60

    def __init__(self, config: Config):
        self.config = config
        self.app = App(config)
        self.scheduler = None
        self.http: HttpEndpoint | None = None
        self.stopping: asyncio.Event | None = None

    def _build_scheduler(self):
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        jobstore = SQLAlchemyJobStore(url=_jobstore_url(self.config.database_url), tablename="apscheduler_jobs")
        return AsyncIOScheduler(
            jobstores={"default": jobstore},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600},
            timezone="UTC",
        )

    def desired_jobs(self) -> dict[str, tuple[Any, tuple, Any]]:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        jitter = int(self.config.crawl.jitter.total_seconds()) or None
        jobs: dict[str, tuple[Any, tuple, Any]] = {}
        for source in self.app.store.list_sources():
            interval = self.app.source_interval(source.name)
            jobs[f"check:{source.name}"] = (check_job, (source.name,),
                                            IntervalTrigger(seconds=int(interval.total_seconds()), jitter=jitter, timezone="UTC"))
        for subscriber in self.app.store.list_subscribers(active_only=True):
            key = cadence_key_of(subscriber)
            if key:
                jobs[f"digest:{key}"] = (digest_job, (key,), trigger_for_cadence(key))
        jobs["outbox"] = (outbox_job, (), IntervalTrigger(seconds=self.OUTBOX_EVERY, timezone="UTC"))
        jobs["maintenance"] = (maintenance_job, (), CronTrigger.from_crontab(self.config.daemon.housekeeping, timezone="UTC"))
        jobs["reconcile"] = (reconcile_job, (), IntervalTrigger(seconds=self.RECONCILE_EVERY, timezone="UTC"))
        return jobs

    def reconcile_jobs(self) -> None:
        """Add missing jobs, replace changed ones, remove stale ones. A job whose trigger is
        unchanged keeps its stored next run time: a run missed while the daemon was down is
        then run once (coalesced) at start."""
        desired = self.desired_jobs()
        existing = {job.id: job for job in self.scheduler.get_jobs()}
        for job_id, (func, args, trigger) in desired.items():
            current = existing.get(job_id)
            if current is not None and str(current.trigger) == str(trigger) and tuple(current.args) == args:
                continue
            self.scheduler.add_job(func, trigger, args=args, id=job_id, name=job_id, replace_existing=True)
        for job_id in existing.keys() - desired.keys():
            self.scheduler.remove_job(job_id)

    async def serve(self, *, once: bool = False) -> int:
        global _daemon
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        _daemon = self
        try:
            if once:
                return await self._run_once()
            self.scheduler = self._build_scheduler()
            self.scheduler.start(paused=True)
            self.reconcile_jobs()
            host, port = self.config.listen_address()
            try:
                self.http = HttpEndpoint(make_wsgi_app(self.app, lambda: bool(self.scheduler and self.scheduler.running)),
                                         host, port)
            except OSError as exc:
                self.scheduler.shutdown(wait=False)
                raise SystemExit(f"postwatch: cannot listen on {host}:{port} ([daemon] listen): {exc.strerror or exc}") from None
            self.http.start()
            self.scheduler.resume()
            log.info("postwatch daemon started: %d sources, database %s, health on http://%s/healthz",
                     len(self.app.store.list_sources()), _redact(self.config.database_url), self.http.address)
            await self.stopping.wait()
            await self._shutdown()
            return 0
        finally:
            _daemon = None
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run_once(self) -> int:
        summaries = await self.app.check_many([s.name for s in self.app.store.list_sources()])
        queued, stats = self.app.send_digests()
        for summary in summaries:
            if summary.ok:      # failures were logged as errors already
                log.info("%s", describe_summary(summary), extra={"source": summary.source})
        log.info("digest: %d composed, %d sent, %d waiting for a retry", len(queued), stats.sent, stats.retried)
        return 0 if all(s.ok for s in summaries) else 1

    def _request_stop(self, sig) -> None:
        log.info("received %s: stopping", signal.Signals(sig).name)
        if self.scheduler and self.scheduler.running:
            self.scheduler.pause()
        if self.stopping:
            self.stopping.set()

    async def _shutdown(self) -> None:
        """No new jobs; running crawls are stopped within the grace period (a stopped crawl's
        results are discarded, so state is never half-written); then exit."""
        from crawler.run import stop_all_crawls

        grace = self.config.daemon.shutdown_grace.total_seconds()
        try:
            await asyncio.wait_for(stop_all_crawls(), timeout=grace)
        except asyncio.TimeoutError:
            log.warning("crawls did not stop within %.0fs", grace)
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and _is_job_task(t)]
        if running:
            done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
        if self.scheduler and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.http:
            self.http.stop()
        log.info("postwatch daemon stopped")


def _is_job_task(task: asyncio.Task) -> bool:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", "") or ""
    return name.split(".")[-1] in {"check_job", "digest_job", "outbox_job", "maintenance_job", "reconcile_job", "run_coroutine_job"}


def _jobstore_url(database_url: str) -> str:
    if database_url.startswith("postgresql://"):
        return database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return database_url


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


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
    sweep = ", full sweep" if summary.full_sweep else ""
    return f"{summary.source}: {changes}{held} ({summary.requests} requests, {summary.response_bytes} bytes{sweep})"


def run_daemon(config: Config, *, once: bool = False) -> int:
    """Entry point of `postwatch run`: the asyncio reactor carries Scrapy and APScheduler."""
    from crawler.runtime import run_main
    from state import AlreadyRunning

    daemon = Daemon(config)
    try:
        lock = daemon.app.store.instance_lock()
        lock.__enter__()
    except AlreadyRunning as exc:
        daemon.app.close()
        raise SystemExit(f"postwatch: {exc}") from None
    try:
        return run_main(functools.partial(daemon.serve, once=once))
    finally:
        lock.__exit__(None, None, None)
        daemon.app.close()
