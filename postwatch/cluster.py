"""`postwatch worker`: several processes, on one machine or many, share postwatch's work through
a procrastinate job queue in the same PostgreSQL database.

The jobs, and why they are cut this way:

- plan_checks (periodic, every `plan_every` s, deferred once per period across all workers):
  picks due sources with FOR UPDATE SKIP LOCKED, moves their next check on (interval + jitter)
  and defers batch checks of one host each, with the host as the job's procrastinate `lock`, in
  one transaction (state.cluster).
- check_batch: `Checker.check_many(batch)` on the worker's event loop (the asyncio reactor's), in the
  worker's turn at the host (state.cluster.host_turn: an advisory lock that lives as long as the
  worker's process, so a worker taken for dead but alive is never crawling beside the next one,
  and that hands the per-host delay from one worker to the next; within a worker the process
  gate, crawler.gate, spaces the requests). Then a delivery job for the immediate subscribers if
  the check published anything. Never retried by the queue: a job scheduled later would hold
  every job of its host's lock (procrastinate #1599, #1543); the next planned check is the
  retry, and Scrapy keeps its in-crawl retries.
- plan_digests (periodic, every minute): the subscribers whose daily or weekly digest fell due
  since the last planning (the window is stored), in compose batches.
- compose_batch / deliver_immediate: compose (the subscriber's cursor moves in the same
  transaction as the message enters the outbox, rows locked FOR UPDATE) and flush (the outbox
  leases each row): a job run twice composes and sends nothing twice.
- flush_outbox (periodic): retries that fell due, and mail queued or events published by other
  processes.
- recover_stalled (periodic): jobs of a worker that stopped sending heartbeats (killed). A
  stalled check is marked failed (its host's lock is released; the source is planned again at its
  next check); a stalled compose or delivery is retried (it is idempotent and holds no lock).
- remove_old_jobs (periodic, hourly): failed and aborted jobs older than a day; succeeded ones
  are deleted as they finish, so the queue stays short (procrastinate #1242).
- housekeeping (periodic, [daemon] housekeeping): the daemon's pruning and signup reminders.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from postwatch import planner
from postwatch.app import App, utcnow
from postwatch.config import Config
from postwatch.stopping import grace_seconds, stop_signals
from state import AlreadyRunning, StorageError, describe_error
from state.cluster import (CHECK_TASK, COMPOSE_TASK, DELIVER_TASK, QUEUE, HostBusy, NotPostgreSQL, database_problem,
                           host_turn, recovery_turn)
from state.database import pg_connect_args, sqlite_path

log = logging.getLogger("postwatch")

# Serialises the start-up of workers that start together (migrations, syncing the config's
# sources, installing the queue's schema): each would otherwise race the others' inserts.
_STARTUP_LOCK_KEY = 0x70777374  # "pwst"


@dataclass
class WorkerSettings:
    plan_every: int = 5             # seconds between planning runs (divides 60: a cron's seconds field)
    batch_size: int = 50            # sources per check job
    digest_batch: int = 500         # subscribers per compose job
    concurrency: int = 4            # jobs a worker runs at once (checks of different hosts, mail)
    heartbeat_every: float = 10.0   # a worker's heartbeat...
    stalled_after: float = 30.0     # ...and how long without one before its jobs are recovered
    keep_failed_hours: int = 24
    # How long a check waits for its host while a worker taken for dead still crawls it (see
    # state.cluster.host_turn); then it gives up and the host's next planned check is the retry.
    turn_wait: float = 120.0
    name: str | None = None
    metrics: str | None = None      # HOST:PORT of this worker's /metrics (None: not served)


def require_postgresql(config: Config) -> None:
    """Raises NotPostgreSQL, before anything is opened or created, for any other database."""
    url = config.database_url
    if sqlite_path(url) is not None or make_url(url).get_backend_name() != "postgresql":
        shown = sqlite_path(url) or make_url(url).render_as_string(hide_password=True)
        raise NotPostgreSQL(f"postwatch worker needs a PostgreSQL database (its job queue lives there), not {shown}; "
                            "use `postwatch run` on one machine, or set database = \"postgresql://...\"")


def _queue_failed_on(exc: BaseException, error: type[Exception], matches: Callable[[Exception], bool]) -> bool:
    """Whether `exc` is procrastinate's wrapping of the database's `error` that `matches`."""
    from procrastinate.exceptions import ConnectorException

    cause = exc.__cause__
    return isinstance(exc, ConnectorException) and isinstance(cause, error) and matches(cause)


def registration_removed(exc: BaseException) -> bool:
    """Whether the queue failed because this worker's row was removed: a worker silent for longer
    than the stall timeout (a paused machine or process) is pruned by the next worker to start,
    and procrastinate then cannot take a job in its name (its worker_id no longer exists)."""
    from psycopg.errors import ForeignKeyViolation

    return _queue_failed_on(exc, ForeignKeyViolation,
                            lambda cause: cause.diag.constraint_name == "procrastinate_jobs_worker_id_fkey")


def database_lost(exc: BaseException) -> bool:
    """Whether the queue failed because it lost its connection to the database (a restart, a
    failover, the network), not on a statement."""
    from psycopg import OperationalError

    return _queue_failed_on(exc, OperationalError, lambda cause: True)


def one_line_database_loss(record: logging.LogRecord) -> bool:
    """A handler filter: procrastinate logs the loss of its database with a traceback for each
    side task and job that notices, and psycopg's pool each failed reconnection with libpq's
    three lines; the worker says in one line what it does about it, and they get one line each."""
    from psycopg import OperationalError

    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, StorageError | OperationalError) or (exc is not None and database_lost(exc)):
        # What procrastinate says before its multi-line "Database error." (or that error's repr).
        said = re.split(r"\n|ConnectorException\(", record.getMessage(), maxsplit=1)[0].rstrip(" :")
        if isinstance(exc, StorageError):
            why = str(exc)          # one line already: which database, why
        else:
            cause = exc if isinstance(exc, OperationalError) else exc.__cause__
            why = f"the database connection was lost ({describe_error(cause)})"
        record.msg, record.args, record.exc_info, record.exc_text = f"{said}: {why}", (), None, None
    elif record.name.startswith("psycopg.pool") and "\n" in (message := record.getMessage()):
        record.msg, record.args = message.strip().splitlines()[0], ()
    return True


def job_taken_over(exc: BaseException) -> bool:
    """Whether procrastinate failed to record the end of a job, or to retry it, because the job
    is no longer in the state it was read in: while its worker was silent, another worker took
    it for stalled and ran it again (a mail or periodic job; its work is idempotent, so the
    second run did no harm); or, read as stalled, it ended before the recovery reached it."""
    from psycopg.errors import RaiseException

    return _queue_failed_on(exc, RaiseException, lambda cause: "Job was not found or " in str(cause))


def report_unrecorded_job_ends(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The event loop's exception handler: a job whose end procrastinate could not record, because
    another worker took it over (job_taken_over) or the database was lost, is one line, not
    asyncio's "Task exception was never retrieved" and two tracebacks."""
    exc, task = context.get("exception"), context.get("future")
    what = task.get_name().removeprefix("process job ") if isinstance(task, asyncio.Task) else "a job"
    if exc is not None and job_taken_over(exc):
        log.warning("%s: another worker took it over while this one was silent (no heartbeat for --stalled-after); "
                    "it ran there again", what)
        return
    if exc is not None and database_lost(exc):
        log.warning("%s: its end was not recorded, the database connection was lost (%s); a recovery closes it "
                    "after --stalled-after", what, describe_error(exc.__cause__))
        return
    loop.default_exception_handler(context)


def psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Worker:
    """One worker process: postwatch's App and the procrastinate app whose tasks use it."""

    def __init__(self, config: Config, settings: WorkerSettings):
        import procrastinate

        if 60 % settings.plan_every:
            raise ValueError(f"plan_every must divide 60 seconds, not {settings.plan_every}")
        self.config = config
        self.settings = settings
        self.app: App | None = None
        self._silent_checks: set[int] = set()       # stalled-looking checks already reported alive
        self._flushing = threading.Lock()           # deliver(): one flush at a time
        self.conninfo = psycopg_conninfo(config.database_url)
        self.queue = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=self.conninfo, min_size=1, max_size=settings.concurrency + 3,
            kwargs=pg_connect_args({})))
        self._register_tasks()

    # -- start-up -----------------------------------------------------------------------------
    def open(self) -> None:
        """Migrate, sync the config's sources, install the queue's schema: one worker at a time."""
        engine = create_engine(self.config.database_url, connect_args=pg_connect_args({}))
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _STARTUP_LOCK_KEY})
                try:
                    self.app = App.open(self.config)
                    daemon = self.app.store.lease_holder()
                    if daemon is not None and daemon["remaining"] > 0:
                        raise AlreadyRunning(f"a `postwatch run` daemon ({daemon['host']}, pid {daemon['pid']}) runs on "
                                             f"{self.app.store.display_name}; workers beside it would check its sources "
                                             "too: stop it first")
                    if self.app.store.install_job_queue(self.queue.schema_manager.get_schema()):
                        log.info("job queue installed in %s", self.app.store.display_name)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _STARTUP_LOCK_KEY})
                    conn.commit()
        finally:
            engine.dispose()

        # Scrapy and Twisted are loaded now, before the worker's first heartbeat, not inside its
        # first check on the event loop: on a loaded machine the import holds the loop for
        # seconds, long enough for the others to take this worker for dead and free its host.
        from crawler.runtime import install_reactor

        install_reactor()       # first: Scrapy's modules must find the asyncio reactor in place
        import crawler.run  # noqa: F401

    def close(self) -> None:
        if self.app is not None:
            self.app.close()

    async def serve(self) -> int:
        s = self.settings
        name = s.name or f"{socket.gethostname()}:{os.getpid()}"
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(report_unrecorded_job_ends)
        # Every job runs its database and SMTP work in the loop's threads: a thread for each job
        # slot and a few for the planners and recovery, not asyncio's default (6 on 2 cores,
        # fewer than --concurrency 8: a check then waited for a long mail job's thread).
        loop.set_default_executor(ThreadPoolExecutor(max_workers=s.concurrency + 4, thread_name_prefix="postwatch-job"))
        # The worker owns SIGTERM and SIGINT from before it says "started" to its exit, across the
        # re-registrations below: procrastinate's own handlers come and go with each
        # run_worker_async, and a signal between two (or before the first) killed the process.
        stopping = asyncio.Event()
        running: asyncio.Future | None = None

        def stop(signum) -> None:
            stopping.set()
            if running is not None:
                running.cancel()    # procrastinate's worker turns this into its graceful shutdown

        for handler in logging.getLogger().handlers:
            handler.addFilter(one_line_database_loss)
        # A second signal ends the process at once.
        with stop_signals(loop, stop, second_kills=True):
            async with self.queue.open_async():
                log.info("postwatch worker %s started: %d sources, database %s, planning every %ds", name,
                         len(self.app.store.list_sources()), self.app.store.display_name, s.plan_every)
                while not stopping.is_set():
                    running = asyncio.ensure_future(self.queue.run_worker_async(
                        queues=[QUEUE], name=name, concurrency=s.concurrency, delete_jobs="successful",
                        update_heartbeat_interval=s.heartbeat_every, stalled_worker_timeout=s.stalled_after,
                        shutdown_graceful_timeout=grace_seconds(self.config.daemon.shutdown_grace),
                        fetch_job_polling_interval=min(5.0, float(s.plan_every)), install_signal_handlers=False))
                    try:
                        await running
                    except asyncio.CancelledError:
                        if not stopping.is_set():
                            raise
                        break
                    except Exception as exc:
                        if database_lost(exc):
                            await self._wait_for_database(name, stopping)
                            continue
                        if not registration_removed(exc):
                            raise
                        # Its running jobs have finished (procrastinate's shutdown waits for them).
                        log.warning("postwatch worker %s was silent for more than --stalled-after %gs and another "
                                    "worker removed its registration; it registers again and goes on", name,
                                    s.stalled_after)
                        continue
                    if stopping.is_set():
                        break
                    # Not asked to stop: procrastinate stops its worker, and returns, when one of its
                    # side tasks fails, and what fails them is the database going away (the LISTEN
                    # connection, the heartbeat). Returning too would end the process with 0, which
                    # no service manager restarts: one database restart would stop the whole cluster.
                    await self._wait_for_database(name, stopping)
        log.info("postwatch worker %s stopped", name)
        return 0

    async def _wait_for_database(self, name: str, stopping: asyncio.Event) -> None:
        """Until the database answers again, or a stop is asked: probed after 1 s, then at
        doubling waits up to 30 s. Meanwhile the others take this worker for dead after
        --stalled-after and recover its jobs; it comes back as a new registration."""
        waiting_since, wait = time.monotonic(), 1.0
        log.warning("postwatch worker %s stopped taking jobs: its job queue lost the database; it waits for the "
                    "database and registers again", name)
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=wait)
                return
            except asyncio.TimeoutError:
                pass
            problem = await database_problem(self.conninfo, connect_args={})
            if problem is None:
                log.warning("postwatch worker %s: the database answers again after %.0fs of waiting; it registers "
                            "again and goes on", name, time.monotonic() - waiting_since)
                return
            if wait == 1.0:
                log.warning("postwatch worker %s: database %s: %s; trying again at most every 30s", name,
                            self.app.store.display_name, problem)
            wait = min(wait * 2, 30.0)

    # -- the tasks ----------------------------------------------------------------------------
    def _register_tasks(self) -> None:
        queue, s = self.queue, self.settings
        # The sixth field is the seconds (croniter): every plan_every seconds of every minute.
        every_plan = f"* * * * * */{s.plan_every}" if s.plan_every < 60 else "* * * * *"

        @queue.periodic(cron=every_plan)
        @queue.task(name="postwatch.cluster.plan_checks", queue=QUEUE, priority=10,
                    queueing_lock="postwatch.cluster.plan_checks")
        async def plan_checks(timestamp: int) -> None:
            batches = await asyncio.to_thread(self.plan_checks)
            if batches:
                log.info("planned %d sources in %d batches", sum(len(b.sources) for b in batches), len(batches))

        @queue.task(name=CHECK_TASK, queue=QUEUE, pass_context=True)
        async def check_batch(context, sources: list[str], host: str) -> None:
            await self.check_batch(sources, host, job_id=context.job.id)

        @queue.periodic(cron="* * * * *")
        @queue.task(name="postwatch.cluster.plan_digests", queue=QUEUE, priority=10,
                    queueing_lock="postwatch.cluster.plan_digests")
        async def plan_digests(timestamp: int) -> None:
            await asyncio.to_thread(self.plan_digests)

        @queue.task(name=COMPOSE_TASK, queue=QUEUE, priority=5)
        async def compose_batch(subscribers: list[int]) -> None:
            await asyncio.to_thread(self.deliver, subscribers)

        @queue.task(name=DELIVER_TASK, queue=QUEUE, priority=5, queueing_lock=DELIVER_TASK)
        async def deliver_immediate() -> None:
            await asyncio.to_thread(self.deliver, [])

        @queue.periodic(cron=every_plan)
        @queue.task(name="postwatch.cluster.flush_outbox", queue=QUEUE, priority=5,
                    queueing_lock="postwatch.cluster.flush_outbox")
        async def flush_outbox(timestamp: int) -> None:
            await asyncio.to_thread(self.flush_if_due)

        @queue.periodic(cron=every_plan)
        @queue.task(name="postwatch.cluster.recover_stalled", queue=QUEUE, priority=20,
                    queueing_lock="postwatch.cluster.recover_stalled")
        async def recover_stalled(timestamp: int) -> None:
            await self.recover_stalled()

        @queue.periodic(cron="17 * * * *")
        @queue.task(name="postwatch.cluster.remove_old_jobs", queue=QUEUE, priority=1,
                    queueing_lock="postwatch.cluster.remove_old_jobs")
        async def remove_old_jobs(timestamp: int) -> None:
            await self.queue.job_manager.delete_old_jobs(nb_hours=s.keep_failed_hours, include_failed=True,
                                                         include_aborted=True, include_cancelled=True)

        @queue.periodic(cron=self.config.daemon.housekeeping)
        @queue.task(name="postwatch.cluster.housekeeping", queue=QUEUE, priority=1,
                    queueing_lock="postwatch.cluster.housekeeping")
        async def housekeeping(timestamp: int) -> None:
            await asyncio.to_thread(self.app.housekeeping)

    def plan_checks(self):
        crawl, now = self.config.crawl, utcnow()
        # A dict, not SourceSettings.interval: that walks the config's sources for every name.
        own = {name: stored["interval"] for name, stored in self.app.sources.stored().items() if stored["interval"]}
        own.update({source.name: source.interval for source in self.config.sources if source.interval})
        return self.app.store.plan_checks(
            now, lambda name: planner.next_check(name, now, own.get(name, crawl.interval), crawl.jitter),
            crawl.removal_confirm_after, self.settings.batch_size)

    async def check_batch(self, sources: list[str], host: str, job_id: int | None = None) -> None:
        """Check `sources` (all on `host`) in this worker's turn at the host. A failed source is
        logged by the checker; the next planned check is its retry. A check cut off (the worker's
        [daemon] shutdown_grace ran out, or the job was aborted) makes the sources it had not
        recorded due at once, as the recovery of a killed worker's check does: the planner had
        moved their next check a whole interval on."""
        from crawler.gate import GATE

        started = time.monotonic()
        try:
            async with host_turn(self.conninfo, host, wait=self.settings.turn_wait, connect_args={},
                                 quiet_after=lambda: GATE.quiet_for(host)) as quiet:
                if quiet:
                    GATE.hold(host, quiet)
                summaries = await self.app.checker.check_many(sources)
        except HostBusy as exc:
            log.warning("check of %d sources skipped: %s (a worker taken for dead?); their next planned check "
                        "retries them", len(sources), exc)
            return
        except asyncio.CancelledError:
            if job_id is not None:
                replanned = await asyncio.to_thread(self.app.store.replan_unchecked, job_id, sources)
                log.warning("check of %d sources on %s cut off after %.1fs (the worker is stopping): the %d it had "
                            "not recorded are checked at the next planning", len(sources), host,
                            time.monotonic() - started, replanned)
            raise
        log.info("checked %d sources on %s (%d failed, %d requests) in %.1fs", len(summaries), host,
                 sum(not s.ok for s in summaries), sum(s.requests for s in summaries), time.monotonic() - started)
        if planner.publishes(summaries):
            await asyncio.to_thread(self.app.store.defer_immediate_delivery)

    def plan_digests(self) -> None:
        batches = self.app.store.plan_digests(utcnow(), planner.digest_due_between, self.settings.digest_batch)
        if batches:
            log.info("digests planned for %d subscribers", sum(map(len, batches)))

    def deliver(self, subscriber_ids: list[int]) -> None:
        """Compose for `subscriber_ids` (a compose batch: subscribers whose digest fell due), or
        with none, for the immediate subscribers behind the newest event (the immediate
        delivery, the periodic flush); then send what is due. A compose batch composes only its
        own. When every mail job also composed the immediate subscribers behind, a batch's own
        came after theirs (2,000 in the kill trial, their rows locked by the other mail jobs
        composing them too): a batch whose worker was killed before reaching its own was
        retried four times, and a daily digest went out 133 s after it fell due."""
        store = self.app.store
        ids = sorted(set(subscriber_ids)) if subscriber_ids else store.immediate_subscribers_behind()
        queued = self.app.mailer.compose_digests(ids) if ids else []
        if not (queued or store.outbox_due(utcnow())):
            return
        # One flush at a time in this process: each opens up to [smtp] connections sessions, what
        # the operator's provider allows at once. A job that finds one running leaves it what it
        # queued (the running flush pages on to it, or the next period's flush takes it): waiting
        # would hold one of the loop's threads, and the checks need them to record their results.
        if not self._flushing.acquire(blocking=False):
            if queued:
                log.info("mail: %d composed, left to the flush under way", len(queued))
            return
        try:
            stats = self.app.mailer.flush_outbox()
        finally:
            self._flushing.release()
        log.info("mail: %d composed, %d sent, %d retrying", len(queued), stats.sent, stats.retried)

    def flush_if_due(self) -> None:
        """Retries that fell due, alerts, and the immediate subscribers behind events published
        by other processes (`sources release`, a CLI check): each period catches up on them."""
        self.deliver([])
        self.app.alerts.outbox_stuck()

    async def recover_stalled(self) -> None:
        """Jobs of workers without a recent heartbeat, one recovery at a time across the cluster
        (recovery_turn: one that outlasts its period is not joined by the next)."""
        async with recovery_turn(self.conninfo, connect_args={}) as mine:
            if not mine:
                log.debug("stalled jobs: another worker's recovery is still running")
                return
            manager = self.queue.job_manager
            stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self.settings.stalled_after)
            self._silent_checks &= {job.id for job in stalled}      # finished since: nothing to remember
            for job in stalled:
                try:
                    await self._recover(job)
                except Exception as exc:
                    if not job_taken_over(exc):
                        raise
                    # Its worker, silent but alive, ended it after it was read as stalled.
                    log.info("%s job %d ended before its recovery: left as it is", job.task_name, job.id)

    async def _recover(self, job) -> None:
        """A check whose worker still holds its turn at the host is left running: that worker is
        alive (paused, or its loop held), and will finish it; marked failed, its host would be
        crawled by the next worker beside it once it resumes, and its own finish would find the
        job gone. Another check is marked failed, its unrecorded sources due at once; any other
        job is retried."""
        from procrastinate.exceptions import UniqueViolation
        from procrastinate.jobs import Status

        manager = self.queue.job_manager
        if job.task_name == CHECK_TASK:
            sources = ", ".join(job.task_kwargs.get("sources", []))
            host = job.task_kwargs.get("host")
            if host and await asyncio.to_thread(self.app.store.host_turn_held, host):
                if job.id not in self._silent_checks:
                    self._silent_checks.add(job.id)
                    log.warning("check of %s: its worker sends no heartbeat but still holds %s, so it is alive: "
                                "left to finish", sources, host)
                return
            # Due again before the host is freed: a recovery that dies in between leaves the
            # job stalled, to be recovered again, and loses no source's check.
            replanned = await asyncio.to_thread(self.app.store.replan_unchecked, job.id,
                                                job.task_kwargs.get("sources", []))
            await manager.finish_job(job, Status.FAILED, delete_job=False)
            log.warning("check of %s stalled (its worker stopped): marked failed; the %d of its sources it had "
                        "not recorded are checked at the next planning", sources, replanned)
            return
        try:
            await manager.retry_job(job)
        except UniqueViolation:
            # Its queueing lock allows one waiting job, and one of its kind already waits (a
            # delivery deferred after it, the next period's planning): that one does this job's
            # work, which is idempotent, so this one is over.
            await manager.finish_job(job, Status.FAILED, delete_job=False)
            log.warning("%s job %d stalled (its worker stopped): marked failed, as one of its kind is "
                        "waiting and does its work", job.task_name, job.id)
            return
        log.warning("%s job %d stalled (its worker stopped): retried", job.task_name, job.id)


class QueueCollector:
    """Prometheus gauges of the whole cluster's queue, read from the database at each scrape:
    jobs by task and state, workers with a recent heartbeat."""

    def __init__(self, store, stalled_after: float):
        self.store, self.stalled_after = store, stalled_after

    def describe(self):
        return self._families()

    def collect(self):
        status = self.store.queue_status(timedelta(seconds=self.stalled_after))
        return self._families(status)

    @staticmethod
    def _families(status=None):
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("postwatch_cluster_jobs", "Jobs in the cluster's queue by task and state "
                                 "(todo, doing, failed...)", labels=["task", "state"])
        workers = GaugeMetricFamily("postwatch_cluster_workers_alive", "Workers whose heartbeat is recent")
        if status is not None:
            for task, states in sorted(status.by_task.items()):
                for state, count in sorted(states.items()):
                    jobs.add_metric([task.rsplit(".", 1)[-1], state], count)
            workers.add_metric([], status.workers_alive)
        return [jobs, workers]


def serve_metrics(app: App, address: str, stalled_after: float) -> None:
    """/metrics of this worker (its checks and deliveries) and of the cluster's queue, from a
    thread of prometheus_client's own: the event loop never waits on a scrape."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    app.metrics.registry.register(QueueCollector(app.store, stalled_after))
    start_http_server(int(port), addr=host or "127.0.0.1", registry=app.metrics.registry)


def run_worker(config: Config, settings: WorkerSettings) -> int:
    """Entry point of `postwatch worker`: the asyncio reactor carries Scrapy and the worker."""
    from crawler.runtime import run_main

    require_postgresql(config)
    worker = Worker(config, settings)
    try:
        worker.open()
        if settings.metrics:
            serve_metrics(worker.app, settings.metrics, settings.stalled_after)
        if config.console.listen:         # no `postwatch run` in cluster mode: the workers serve the console
            from postwatch.console.serving import serve_with_console

            return run_main(lambda: serve_with_console(worker.app, worker.serve))
        return run_main(worker.serve)
    finally:
        worker.close()
