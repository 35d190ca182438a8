"""The `postwatch run` daemon and its jobs (sweep the due sources, compose and send the digests
due, flush the outbox, housekeeping), which call on the application context in postwatch/app.py.

APScheduler only ticks, from its memory job store: what is due is in the database, planned as
`postwatch worker` plans it (postwatch/planner.py's rules, state/planning.py's queries): a sweep
takes the sources whose `next_check_at` has come and moves it on; each minute the daemon takes
the digests due in the stored window since the last planning, so a digest missed while the
daemon was down goes out once at start, and one is never planned twice across a restart.

Why one process with Scrapy's AsyncCrawlerRunner rather than a subprocess per crawl: a crawl in
a subprocess costs about 0.6 s and ~77 MB more each time (engineering-notes.md), and a 100-source
sweep would pay it 100 times. Scrapy's reactor cannot be restarted, so the asyncio reactor is
installed once and both Scrapy and APScheduler's AsyncIOScheduler run on its event loop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from postwatch.app import App, utcnow
from postwatch.checker import describe_summary
from postwatch.config import Config
from postwatch.planner import digest_due_between, next_check, sweep_period
from postwatch.stopping import grace_seconds, stop_signals
from digest.render import TemplateProblem
from state import StorageError

log = logging.getLogger("postwatch")


# --------------------------------------------------------------------------------------------
# Module-level job functions, which look the running daemon up (the console's "check now" and
# the ticks start the same sweep).
# --------------------------------------------------------------------------------------------
_daemon: "Daemon | None" = None


def _logs_storage_errors(job):
    """A job that meets a database failure (or an operator's broken template) logs one line and
    leaves the daemon running: the database may come back, the template may be fixed, before the
    next run. (APScheduler would log a traceback.)"""
    @functools.wraps(job)
    async def wrapper(*args, **kwargs):
        try:
            return await job(*args, **kwargs)
        except (StorageError, TemplateProblem) as exc:
            log.error("%s: %s", job.__name__.removesuffix("_job"), exc)

    return wrapper


async def sweep_job() -> None:
    """Starts a sweep unless one is under way, and returns at once: a long sweep (many sources
    on one polite host) then neither makes APScheduler skip runs with a warning on every tick
    nor delays what falls due meanwhile beyond the tick after it ends."""
    daemon = _require_daemon()
    if daemon.sweep is None or daemon.sweep.done():
        daemon.sweep = asyncio.ensure_future(sweep())
        daemon.sweep.add_done_callback(_log_crash)


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sweep crashed", exc_info=task.exception())


@_logs_storage_errors
async def sweep() -> None:
    """Every source that is due, checked in one sweep (one batched read, one crawl, per-host
    politeness across all of them)."""
    daemon = _require_daemon()
    started = utcnow()
    due = await asyncio.to_thread(daemon.take_due_sources, started)
    if not due:
        return
    try:
        summaries = await daemon.app.checker.check_many(due)
    except BaseException:
        # Cut off (the grace ran out) or crashed: their next check was moved an interval on
        # when they were taken; those it did not record are due again now.
        await asyncio.to_thread(daemon.app.store.make_due_unless_checked_since, due, started)
        raise
    await asyncio.to_thread(daemon.count_next_checks_from_last_check, due)
    narrate(summaries)
    # Immediate subscribers get what this sweep published, and alerts it queued go out (only
    # composing is waited for: each kind of message is sent in its own compartment).
    await daemon.deliver()
    daemon.app.alerts.queued = 0


def narrate(summaries) -> None:
    """One INFO line per check that found something (what, and what it cost); a quiet check at
    DEBUG only (-vv). Failed checks were told by the checker: when they start, and when they stop."""
    for summary in summaries:
        if not summary.ok:
            continue
        found = summary.events or summary.baseline or summary.held or summary.published_held or summary.became_volatile
        log.log(logging.INFO if found else logging.DEBUG, "%s", describe_summary(summary),
                extra={"source": summary.source})


@_logs_storage_errors
async def plan_job() -> None:
    """Each minute, and once at start: the daily and weekly digests due since the last planning
    (the window is stored, so those missed while the daemon was down go out now, once), and the
    sweep's period for the sources as they are now (added, removed, re-timed with the CLI)."""
    daemon = _require_daemon()
    if daemon.stop_sending.is_set():
        return          # the window stays where it is: the next start plans it
    store = daemon.app.store
    ids, until = await asyncio.to_thread(store.due_digests, utcnow(), digest_due_between)
    if ids:
        queued = await daemon.deliver(ids)
        if queued:        # what is sent is said by each kind's flush (Compartment)
            log.info("digests: %d composed", len(queued))
    if until is not None and not daemon.stop_sending.is_set():   # stopped before composing: planned again at start
        await asyncio.to_thread(store.digests_planned, until)
    daemon.retime_sweep(await asyncio.to_thread(daemon.sweep_period))


@_logs_storage_errors
async def outbox_job() -> None:
    """Retries fall due, a crashed sender's leases run out, and events are published by other
    processes (a CLI check, `sources release`): each period catches up on all of them."""
    daemon = _require_daemon()
    await daemon.deliver()
    await asyncio.to_thread(daemon.app.alerts.outbox_stuck)


@_logs_storage_errors
async def maintenance_job() -> None:
    _require_daemon().app.housekeeping()


def _require_daemon() -> "Daemon":
    if _daemon is None:
        raise RuntimeError("no postwatch daemon is running in this process")
    return _daemon


# --------------------------------------------------------------------------------------------
# Compartments: each kind of outbox message flushed on its own
# --------------------------------------------------------------------------------------------
def in_daemon_thread(name: str, func, *args) -> tuple[asyncio.Future, threading.Thread]:
    """`func(*args)` in a daemon thread of its own, and the future of its result. Not asyncio.to_thread:
    the default executor's threads are joined when the interpreter exits, so one stuck in a
    receiver's answer kept a stopped daemon alive, holding its database lock. The daemon waits
    for these threads at a stop, bounded (Daemon._shutdown); the interpreter never does."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: str, value) -> None:
        if not future.done():
            getattr(future, outcome)(value)

    def run() -> None:
        try:
            result, outcome = func(*args), "set_result"
        except BaseException as exc:  # handed to the awaiting task
            result, outcome = exc, "set_exception"
        try:
            loop.call_soon_threadsafe(settle, outcome, result)
        except RuntimeError:
            pass          # the loop has closed: the daemon stopped without waiting for this thread

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return future, thread


class Compartment:
    """The flushes of one kind of outbox message ("email", "webhook", "apprise"): one at a time,
    so that two digests to one address still leave in the order they were composed, in a thread
    of their own, so that no other kind waits behind them. A kick while a flush runs makes it
    run once more when it ends (what was composed meanwhile may be past the page it read)."""

    def __init__(self, kind: str, daemon: "Daemon"):
        self.kind, self.daemon = kind, daemon
        self.what = "mail" if kind == "email" else kind
        self.task: asyncio.Task | None = None
        self.flushing: threading.Thread | None = None      # the last flush's thread
        self.again = False

    def kick(self) -> None:
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.ensure_future(self._flushes())

    async def _flushes(self) -> None:
        stop = self.daemon.stop_sending
        while not stop.is_set():
            self.again = False
            flushed, self.flushing = in_daemon_thread(f"postwatch-flush-{self.kind}", self.daemon.app.mailer.flush_channel,
                                                      self.kind, stop)
            try:
                stats = await flushed
            except (StorageError, TemplateProblem) as exc:
                log.error("%s: %s", self.what, exc)
                return
            except Exception:
                log.exception("%s: flush crashed", self.what)
                return
            if stats.sent:
                log.info("%s: %d sent", self.what, stats.sent)
            if not self.again:
                return

    def thread(self) -> threading.Thread | None:
        """The flush thread still running, if any."""
        return self.flushing if self.flushing is not None and self.flushing.is_alive() else None


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------
class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.app = App.open(config)
        self.scheduler = None
        self.http = None     # postwatch.web.WebEndpoint while serving
        self.inbound = None  # postwatch.inbound.InboundListener while serving, when [inbound] listen is set
        self.console = None  # postwatch.web.WebEndpoint of the operator's console, when [console] listen is set
        self.stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lease_lost_line: str | None = None
        self._once_task: asyncio.Task | None = None
        # Seen by the sending threads between messages: SIGTERM lets the ones in flight finish.
        self.stop_sending = threading.Event()
        self._composing: asyncio.Lock | None = None
        self.compartments: dict[str, Compartment] = {}
        self.sweep: asyncio.Task | None = None     # the sweep under way, if any
        self._soon_tasks: set[asyncio.Task] = set()
        self._sweep_every = 0.0     # the sweep tick's period, in seconds (retime_sweep)

    async def deliver(self, subscriber_ids: Iterable[int] = ()) -> list[int]:
        """Compose for `subscriber_ids` and for the immediate subscribers behind the newest
        published event, then start a flush of each kind of message that is due, in its own
        compartment; returns the ids composed, without waiting for the flushes. Composing runs in
        a worker thread (with its own database connections), one at a time: a big digest must
        not stop the loop from crawling, answering /healthz and seeing SIGTERM."""
        if self._composing is None:
            self._composing = asyncio.Lock()
        async with self._composing:
            if self.stop_sending.is_set():
                return []
            store = self.app.store
            ids = sorted(set(subscriber_ids) | set(await asyncio.to_thread(store.immediate_subscribers_behind)))
            queued = await asyncio.to_thread(self.app.mailer.compose_digests, ids) if ids else []
            kinds = await asyncio.to_thread(store.due_channels, utcnow())
        if not self.stop_sending.is_set():
            for kind in kinds:
                self.compartments.setdefault(kind, Compartment(kind, self)).kick()
        return queued

    def intervals(self) -> dict[str, timedelta]:
        return {source.name: self.app.sources.interval(source.name) for source in self.app.store.list_sources()}

    def next_check_of(self) -> Callable[[str, datetime], datetime]:
        """planner.next_check with each source's interval: when a source checked at a time is
        next due."""
        intervals, crawl = self.intervals(), self.config.crawl
        return lambda name, at: next_check(name, at, intervals.get(name, crawl.interval), crawl.jitter)

    def take_due_sources(self, now: datetime) -> list[str]:
        """The sources due now, each one's next check moved on, as the worker's planning takes them."""
        return self.app.store.take_due_sources(now, self.next_check_of(), self.config.crawl.removal_confirm_after)

    def count_next_checks_from_last_check(self, names: list[str]) -> None:
        self.app.store.count_next_checks_from_last_check(names, self.next_check_of())

    def sweep_period(self) -> float:
        return sweep_period(self.intervals().values(), self.config.crawl.removal_confirm_after)

    def send_soon(self) -> None:
        """A page queued a message (a signup's confirmation): send it now, not at the next
        outbox period. The delivery lock keeps it one delivery at a time."""
        if self.stopping is not None and not self.stopping.is_set() and not self.stop_sending.is_set():
            task = asyncio.ensure_future(self._send_soon())
            self._soon_tasks.add(task)
            task.add_done_callback(self._soon_tasks.discard)

    async def _send_soon(self) -> None:
        try:
            await self.deliver()
        except StorageError as exc:
            log.warning("mail: %s", exc)

    async def _start_console(self) -> None:
        """The operator's console on [console] listen, on this loop (postwatch/console)."""
        from postwatch.console.pages import make_console_app
        from postwatch.web import WebEndpoint

        host, port = self.config.console_address()
        self.console = WebEndpoint(self.app, host, port, max_connections=64, outbox_queued=self.send_soon,
                                   factory=make_console_app, check_requested=self.check_soon)
        try:
            await self.console.start()
        except OSError as exc:
            self.console = None
            await self.http.stop()
            self.scheduler.shutdown(wait=False)
            raise SystemExit(f"postwatch: cannot listen on {host}:{port} ([console] listen): {exc.strerror or exc}") from None
        log.info("operator's console on http://%s/", self.console.address)

    def check_soon(self) -> None:
        """The console asked for a check: a sweep now (it takes the sources marked due), or, when
        one is under way, the next tick's."""
        if self.stopping is not None and not self.stopping.is_set() and (self.sweep is None or self.sweep.done()):
            self.sweep = asyncio.ensure_future(sweep())
            self.sweep.add_done_callback(_log_crash)

    def _build_scheduler(self):
        """The ticks, in APScheduler's memory job store: the sweep (at start, then every sweep
        period), the planning (at start, then on every minute), the outbox and housekeeping."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
                                     timezone="UTC")
        now = datetime.now(timezone.utc)
        self._sweep_every = self.sweep_period()
        scheduler.add_job(sweep_job, IntervalTrigger(seconds=self._sweep_every, timezone="UTC"), id="sweep",
                          next_run_time=now)
        scheduler.add_job(plan_job, CronTrigger(second=0, timezone="UTC"), id="plan", next_run_time=now)
        scheduler.add_job(outbox_job, IntervalTrigger(seconds=max(1, int(self.config.daemon.outbox_every.total_seconds())),
                                                      timezone="UTC"), id="outbox")
        scheduler.add_job(maintenance_job, CronTrigger.from_crontab(self.config.daemon.housekeeping, timezone="UTC"),
                          id="maintenance")
        return scheduler

    def retime_sweep(self, period: float) -> None:
        if period != self._sweep_every and self.scheduler is not None and self.scheduler.running:
            from apscheduler.triggers.interval import IntervalTrigger

            self._sweep_every = period
            self.scheduler.reschedule_job("sweep", trigger=IntervalTrigger(seconds=period, timezone="UTC"))

    async def serve(self, *, once: bool = False) -> int:
        global _daemon
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        with stop_signals(self.loop, self._request_stop):
            _daemon = self
            try:
                return await self._serve(once)
            finally:
                _daemon = None

    async def _serve(self, once: bool) -> int:
        if self.lease_lost_line:
            return 1
        if once:
            self._once_task = asyncio.ensure_future(self._run_once())
            try:
                return await self._once_task
            except asyncio.CancelledError:
                if self.lease_lost_line is None:
                    raise
                await self._shutdown()
                return 1
        self.scheduler = self._build_scheduler()
        self.scheduler.start(paused=True)
        host, port = self.config.listen_address()
        from postwatch.web import WebEndpoint, raise_open_file_limit

        raise_open_file_limit()
        self.http = WebEndpoint(self.app, host, port, max_connections=self.config.daemon.max_connections,
                                scheduler_running=lambda: bool(self.scheduler and self.scheduler.running),
                                outbox_queued=self.send_soon)
        try:
            await self.http.start()
        except OSError as exc:
            self.http = None
            self.scheduler.shutdown(wait=False)
            raise SystemExit(f"postwatch: cannot listen on {host}:{port} ([daemon] listen): "
                             f"{exc.strerror or exc}") from None
        if self.config.console.listen:
            await self._start_console()
        if self.config.inbound.listen:
            from postwatch.inbound import InboundListener

            inbound_host, inbound_port = self.config.inbound_address()
            self.inbound = InboundListener(self.app, inbound_host, inbound_port, self.config.inbound_domain)
            try:
                await self.inbound.start()
            except OSError as exc:
                self.inbound = None
                await self.http.stop()
                if self.console:
                    await self.console.stop()
                self.scheduler.shutdown(wait=False)
                raise SystemExit(f"postwatch: cannot listen on {inbound_host}:{inbound_port} ([inbound] listen): "
                                 f"{exc.strerror or exc}") from None
            log.info("inbound mail for @%s on %s", self.config.inbound_domain, self.inbound.address)
        self.scheduler.resume()
        log.info("postwatch daemon started: %d sources, database %s, health on http://%s/healthz",
                 len(self.app.store.list_sources()), self.app.store.display_name, self.http.address)
        await self.stopping.wait()
        await self._shutdown()
        return 1 if self.lease_lost_line else 0

    async def _run_once(self) -> int:
        summaries = await self.app.checker.check_many([s.name for s in self.app.store.list_sources()])
        queued, stats = self.app.mailer.send_digests()
        for summary in summaries:
            if summary.ok:      # failures were logged as errors already
                log.info("%s", describe_summary(summary), extra={"source": summary.source})
        log.info("digest: %d composed, %d sent, %d waiting for a retry", len(queued), stats.sent, stats.retried)
        return 0 if all(s.ok for s in summaries) else 1

    def lease_lost(self, line: str) -> None:
        """Called from the lease's thread (which has logged `line`): stop at once, exit 1."""
        self.lease_lost_line = line
        self.stop_sending.set()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop_for_lost_lease)

    def _stop_for_lost_lease(self) -> None:
        if self.scheduler and self.scheduler.running:
            self.scheduler.pause()
        if self._once_task is not None:
            self._once_task.cancel()
        if self.stopping:
            self.stopping.set()

    def _request_stop(self, sig) -> None:
        log.info("received %s: stopping", signal.Signals(sig).name)
        self.stop_sending.set()
        if self.scheduler and self.scheduler.running:
            self.scheduler.pause()
        if self.stopping:
            self.stopping.set()

    async def _shutdown(self) -> None:
        """No new jobs; running crawls are stopped within the grace period (a stopped crawl's
        results are discarded, so state is never half-written); then exit."""
        from crawler.run import stop_all_crawls

        grace = grace_seconds(self.config.daemon.shutdown_grace, lease_lost=bool(self.lease_lost_line))
        deadline = time.monotonic() + grace     # one grace for crawls and sending together
        try:
            await asyncio.wait_for(stop_all_crawls(), timeout=grace)
        except asyncio.TimeoutError:
            log.warning("crawls did not stop within %.0fs", grace)
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and _is_job_task(t)]
        running += [c.task for c in self.compartments.values() if c.task is not None and not c.task.done()]
        if running:
            done, pending = await asyncio.wait(running, timeout=max(0.1, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d jobs cancelled after the %.0fs grace", len(pending), grace)
        await self._end_flush_threads()
        if self.scheduler and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.http:
            await self.http.stop()
        if self.inbound:
            await self.inbound.stop()
        if self.console:
            await self.console.stop()
        if not self.lease_lost_line:      # the lease has logged the one line of this stop
            log.info("postwatch daemon stopped")


    async def _end_flush_threads(self) -> None:
        """A flush thread stops between messages once told to; the message in flight ends within
        its deadline ([smtp] / [webhook] timeout), which the watchdog enforces whatever the
        receiver does, and is recorded. The wait is bounded by that deadline: the threads are
        daemon threads, so one past it (a bug) is left behind, logged, and holds nothing."""
        threads = {c.what: c.thread() for c in self.compartments.values()}
        threads = {what: thread for what, thread in threads.items() if thread is not None}
        if not threads:
            return
        until = time.monotonic() + self.app.mailer.largest_deadline + 1.0
        while any(t.is_alive() for t in threads.values()) and time.monotonic() < until:
            await asyncio.sleep(0.05)
        for what, thread in threads.items():
            if thread.is_alive():
                log.warning("%s: a message still in flight %.0fs past its deadline is left behind (its lease runs out; "
                            "it is sent again)", what, self.app.mailer.largest_deadline)


def _is_job_task(task: asyncio.Task) -> bool:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", "") or ""
    return name.split(".")[-1] in {"sweep", "plan_job", "outbox_job", "maintenance_job", "run_coroutine_job",
                                     "_send_soon"}


def run_daemon(config: Config, *, once: bool = False) -> int:
    """Entry point of `postwatch run`: the asyncio reactor carries Scrapy and APScheduler."""
    from crawler.runtime import run_main
    from state import AlreadyRunning

    daemon = Daemon(config)
    try:
        lock = daemon.app.store.instance_lock(on_lost=daemon.lease_lost)
        lock.__enter__()
    except AlreadyRunning as exc:
        daemon.app.close()
        raise SystemExit(f"postwatch: {exc}") from None
    except BaseException:
        daemon.app.close()
        raise
    try:
        return run_main(functools.partial(daemon.serve, once=once))
    finally:
        lock.__exit__(None, None, None)
        daemon.app.close()
