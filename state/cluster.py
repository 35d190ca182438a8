"""The cluster's own SQL (`postwatch worker`, PostgreSQL only): the job queue's schema, planning
which sources are checked next and by which batch, planning digests, and what `status` says of
the queue.

Jobs are deferred in the same transaction that moves postwatch's own rows on, by calling the
queue's defer function (procrastinate_defer_jobs_v1, the one procrastinate's own `defer` calls)
on this transaction's connection: a planner that dies mid-way has planned nothing and moved
nothing, so no source skips an interval and no digest is planned twice.
"""
from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from state.database import as_utc, pg_connect_args
from state.errors import describe_error
from state.schema import sources
from state.planning import PlanningStorage, advance_digest_window, due_source_rows, move_next_checks, subscribers_due

log = logging.getLogger(__name__)
# Under postwatch's logger, so that `postwatch -vv worker` shows what each planning decided.
planning_log = logging.getLogger("postwatch.planning")

# Serialises the schema's installation between workers starting together (any constant that
# is postwatch's own).
_SCHEMA_LOCK_KEY = 0x706F7374  # "post"
# The advisory lock of the recovery of stalled jobs (recovery_turn).
_RECOVERY_LOCK_KEY = 0x7265636F  # "reco"
# The first key of every host's advisory lock (pg_advisory_lock(int, int)): postwatch's own
# space, apart from the one-key locks above.
_HOST_FENCE_SPACE = 0x7077   # "pw"

# A job that ends (or is marked failed) frees its lock, but procrastinate's workers look for the
# job waiting behind that lock only at their next poll or job_inserted notification: a host's
# next batch started up to the poll interval (5 s) after the one before it, with the host idle.
# This trigger sends that notification when such a job waits, delivered once the ending
# transaction commits, so the lock is free when the workers look.
_WAKE_BEHIND_LOCK = """
CREATE OR REPLACE FUNCTION postwatch_wake_behind_lock_v1() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('type', 'job_inserted', 'job_id', NULL)::text;
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.status <> 'doing')
       AND EXISTS (SELECT 1 FROM procrastinate_jobs WHERE lock = OLD.lock AND status = 'todo') THEN
        PERFORM pg_notify('procrastinate_queue_v1#' || OLD.queue_name, payload);
        PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER postwatch_wake_behind_lock_v1
    AFTER UPDATE OF status OR DELETE ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'doing' AND OLD.lock IS NOT NULL)
    EXECUTE PROCEDURE postwatch_wake_behind_lock_v1();
"""

CHECK_TASK = "postwatch.cluster.check_batch"
COMPOSE_TASK = "postwatch.cluster.compose_batch"
DELIVER_TASK = "postwatch.cluster.deliver_immediate"
QUEUE = "postwatch"


class NotPostgreSQL(ValueError):
    """The cluster needs PostgreSQL (its job queue lives there); str() is one line."""


class HostBusy(RuntimeError):
    """Another worker still crawls the host: its turn did not end within the wait."""

    def __init__(self, host: str, waited: float):
        super().__init__(f"{host} is still being crawled by another worker after {waited:.0f}s")
        self.host = host


async def _own_session(conninfo: str, connect_args: dict, *options: str):
    """A connection of its own, outside the queue's pool: autocommit, so a session advisory lock
    is all it holds, and closed (the lock with it) when its owner ends or its process dies."""
    import psycopg

    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **pg_connect_args(connect_args, *options))


@asynccontextmanager
async def host_turn(conninfo: str, host: str, *, wait: float, quiet_after: Callable[[], float],
                    connect_args: dict) -> AsyncIterator[float]:
    """`async with host_turn(...) as quiet:` — this worker's turn at `host`, held until the block
    ends; `quiet` is how many seconds to keep from the host before the first request (what the
    last worker left, below). Raises HostBusy if another worker holds the host for `wait`
    seconds.

    The job queue's lock on the host keeps two of its checks from running at once only while
    the first worker sends heartbeats: a worker that is alive but silent (a paused process, a
    loop held longer than --stalled-after) is taken for dead, its job marked failed and the lock
    freed, and it goes on crawling when it resumes. This turn is a PostgreSQL advisory lock on a
    connection of its own: it ends with the worker's process (the kernel closes the socket; a
    machine that vanished, by the server's TCP keepalives), never while the worker lives. At the
    end the turn leaves `quiet_after()` seconds (the process gate's delay still to run, or a
    Retry-After) for the next worker, so the per-host delay holds from one worker to the next."""
    import psycopg

    # No idle timeout may end the session while the crawl leaves it idle: that would free the host.
    connection = await _own_session(conninfo, connect_args, "-c idle_session_timeout=0")
    try:
        await connection.execute(f"SET lock_timeout = {max(1, int(wait * 1000))}")
        try:
            await connection.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_HOST_FENCE_SPACE, host))
        except psycopg.errors.LockNotAvailable:
            raise HostBusy(host, wait) from None
        row = await (await connection.execute(
            "SELECT EXTRACT(EPOCH FROM free_at - clock_timestamp()) FROM host_fences WHERE host = %s", (host,))).fetchone()
        try:
            yield max(0.0, float(row[0])) if row else 0.0
        finally:
            # Also when the check failed: its requests were made all the same.
            try:
                await connection.execute(
                    "INSERT INTO host_fences (host, free_at) VALUES (%s, clock_timestamp() + make_interval(secs => %s)) "
                    "ON CONFLICT (host) DO UPDATE SET free_at = EXCLUDED.free_at", (host, quiet_after()))
            except psycopg.OperationalError as exc:
                # The turn's connection is gone, and the turn with it: what the check itself
                # raised (if anything) is the error to report, not this one.
                log.warning("the quiet time after a check of %s was not written (%s); the next worker at the host "
                            "keeps only its own delay", host, describe_error(exc))
    finally:
        await connection.close()       # and with it the turn


@asynccontextmanager
async def recovery_turn(conninfo: str, connect_args: dict) -> AsyncIterator[bool]:
    """`async with recovery_turn(...) as mine:` — whether this worker may recover stalled jobs
    now (False: another worker's recovery is still running). A recovery on a loaded machine can
    outlast its period, and the next period's would start beside it: both would mark or retry
    the same jobs, and the second to reach a job fails on it. The turn is an advisory lock on a
    connection of its own, so it ends with the worker's process: a recovery killed midway
    blocks none after it (a procrastinate lock would be held by its stalled job, which only a
    recovery can free)."""
    connection = await _own_session(conninfo, connect_args)
    try:
        row = await (await connection.execute("SELECT pg_try_advisory_lock(%s)", (_RECOVERY_LOCK_KEY,))).fetchone()
        yield bool(row[0])
    finally:
        await connection.close()       # and with it the turn


async def database_problem(conninfo: str, connect_args: dict) -> str | None:
    """None when the database takes a connection and answers it, or else why not (one line)."""
    import psycopg

    try:
        connection = await _own_session(conninfo, connect_args)
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close()
    except psycopg.OperationalError as exc:
        return describe_error(exc)
    return None


@dataclass
class PlannedBatch:
    host: str
    sources: list[str]
    job_id: int


@dataclass
class QueueStatus:
    todo: int = 0
    doing: int = 0
    failed: int = 0
    workers_alive: int = 0
    by_task: dict[str, dict[str, int]] = field(default_factory=dict)


def host_of(url: str) -> str:
    """The politeness key of a source: its lower-cased hostname, as crawler.gate keys hosts."""
    return (urlsplit(url).hostname or url).lower()


def defer_job(conn: Connection, task_name: str, args: dict, *, lock: str | None = None,
              queueing_lock: str | None = None, priority: int = 0) -> int | None:
    """Defer one job on `conn`'s transaction. A job whose queueing lock is already waiting is
    not deferred (None)."""
    if queueing_lock is not None:
        waiting = conn.execute(text("SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = :q AND status = 'todo'"),
                               {"q": queueing_lock}).first()
        if waiting:
            return None
    return conn.execute(text(
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock, :queueing_lock, "
        "CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1]))"),
        {"queue": QUEUE, "task": task_name, "priority": priority, "lock": lock, "queueing_lock": queueing_lock,
         "args": json.dumps(args)}).scalar()


class ClusterStorage(PlanningStorage):
    def require_postgresql(self) -> None:
        if self.is_sqlite:
            raise NotPostgreSQL(f"postwatch worker needs a PostgreSQL database (its job queue lives there); "
                                f"{self.display_name} is SQLite: use `postwatch run` on one machine, or set "
                                "database = \"postgresql://...\"")

    def job_queue_installed(self) -> bool:
        if self.is_sqlite:
            return False
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()

    def install_job_queue(self, schema_sql: str) -> bool:
        """The job queue's tables and functions, unless they are there already, and postwatch's
        trigger on them (_WAKE_BEHIND_LOCK); True if this call created the queue. Workers that
        start together wait for each other here."""
        self.require_postgresql()
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            created = not conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()
            if created:
                # The DBAPI cursor itself: no parameters, so psycopg sends the script as it is.
                conn.connection.dbapi_connection.cursor().execute(schema_sql)
            if not conn.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = 'postwatch_wake_behind_lock_v1'")).scalar():
                conn.connection.dbapi_connection.cursor().execute(_WAKE_BEHIND_LOCK)
            return created

    # -- checks -------------------------------------------------------------------------------
    def plan_checks(self, now: datetime, next_check_of: Callable[[str], datetime], removal_delay: timedelta,
                    batch_size: int, max_sources: int = 5000) -> list[PlannedBatch]:
        """In one transaction: the due sources (state.planning.due_source_rows, the query
        `postwatch run` takes them by too), locked with SKIP LOCKED so that two planners never
        take one source; their next_check_at moved to `next_check_of(name)` (the worker passes
        postwatch.planner.next_check: now + interval + the source's share of the jitter); and
        one check job per batch of at most
        `batch_size` sources of one host, with the host as the job's lock, so that two workers
        never crawl one host at once. A host that still has a check waiting is left for a later
        planning: the queue holds at most one waiting batch per host (plus the one running), so
        it stays short however far the workers fall behind."""
        with self.engine.begin() as conn:
            candidates = due_source_rows(conn, now, removal_delay, max_sources)
            if not candidates:
                return []
            jobs = conn.execute(text("SELECT DISTINCT lock, status::text FROM procrastinate_jobs WHERE task_name = :task "
                                     "AND status IN ('todo', 'doing')"), {"task": CHECK_TASK}).all()
            waiting = {lock for lock, status in jobs if status == "todo"}
            running = {lock for lock, status in jobs if status == "doing"}
            by_host: dict[str, list[str]] = {}
            left: dict[str, list[str]] = {}
            for row in candidates:
                host = host_of(row.url)
                # A removal to confirm may be in the batch that is running now (its last check not
                # yet recorded): planned once that batch is done.
                if host in waiting or (host in running and not row.due_by_time):
                    left.setdefault(host, []).append(row.name)
                    continue
                by_host.setdefault(host, []).append(row.name)
            for host, names in left.items():
                planning_log.debug("planning at %s: %s left for a later planning (%s): %s", now.isoformat(), host,
                                   "a batch of it waits" if host in waiting else "a batch of it runs", ", ".join(names))
            if not by_host:
                return []
            move_next_checks(conn, [name for names in by_host.values() for name in names], next_check_of)
            batches = []
            for host, names in sorted(by_host.items()):
                for start in range(0, len(names), batch_size):
                    chunk = names[start:start + batch_size]
                    job_id = defer_job(conn, CHECK_TASK, {"sources": chunk, "host": host}, lock=host)
                    batches.append(PlannedBatch(host, chunk, job_id))
                    planning_log.debug("planning at %s: %s job %s: %s", now.isoformat(), host, job_id, ", ".join(chunk))
            return batches

    def host_turn_held(self, host: str) -> bool:
        """Whether a live worker holds its turn at `host` (host_turn): its process is alive,
        however long it has been silent. Probed by taking the turn and handing it straight back."""
        with self.engine.connect() as conn:
            free = conn.execute(text("SELECT pg_try_advisory_lock(:space, hashtext(:host))"),
                                {"space": _HOST_FENCE_SPACE, "host": host}).scalar()
            if free:
                conn.execute(text("SELECT pg_advisory_unlock(:space, hashtext(:host))"),
                             {"space": _HOST_FENCE_SPACE, "host": host})
            conn.commit()
            return not free

    def replan_unchecked(self, job_id: int, names: list[str]) -> int:
        """Make those of `names` due now that the check job `job_id` did not record (not checked
        since the job started): a killed worker's sources are checked at the next planning, not
        an interval later. Sources it did record keep their planned next check. Returns how
        many were made due."""
        with self.engine.begin() as conn:
            return conn.execute(text("""
                UPDATE sources SET next_check_at = now()
                 WHERE name = ANY(:names) AND enabled
                   AND (last_check_at IS NULL OR last_check_at < (
                        SELECT min(at) FROM procrastinate_events WHERE job_id = :job AND type = 'started'))"""),
                {"names": list(names), "job": job_id}).rowcount

    def next_checks(self) -> dict[str, datetime | None]:
        with self.engine.connect() as conn:
            return {r.name: as_utc(r.next_check_at) for r in conn.execute(
                select(sources.c.name, sources.c.next_check_at).where(sources.c.enabled.is_(True)))}

    def defer_immediate_delivery(self) -> int | None:
        """One delivery job for the immediate subscribers behind the newest event, unless one is
        waiting already (it will see this check's events too)."""
        with self.engine.begin() as conn:
            return defer_job(conn, DELIVER_TASK, {}, queueing_lock=DELIVER_TASK)

    # -- digests ------------------------------------------------------------------------------
    def plan_digests(self, now: datetime, due_between: Callable[[object, datetime, datetime], bool],
                     batch_size: int, first_window: timedelta = timedelta(minutes=1)) -> list[list[int]]:
        """In one transaction: the window since the last planning (stored, so that a minute no
        worker was up for is planned at the next one), the active subscribers whose digest falls
        due in it (`due_between(subscriber, t0, t1)`), one compose job per batch of them, and the
        window's end stored. Run twice for one moment, the second finds an empty window."""
        with self.engine.begin() as conn:
            window = advance_digest_window(conn, now, first_window)
            due = subscribers_due(conn, *window, due_between) if window else []
            batches = [due[i:i + batch_size] for i in range(0, len(due), batch_size)]
            for batch in batches:
                defer_job(conn, COMPOSE_TASK, {"subscribers": batch})
            return batches

    # -- what status says ---------------------------------------------------------------------
    def queue_status(self, stalled_after: timedelta = timedelta(seconds=30)) -> QueueStatus | None:
        """Jobs by state and task, and workers whose heartbeat is recent; None without a queue."""
        if not self.job_queue_installed():
            return None
        status = QueueStatus()
        with self.engine.connect() as conn:
            for task, state, count in conn.execute(text(
                    "SELECT task_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2")):
                status.by_task.setdefault(task, {})[state] = count
                if state in ("todo", "doing", "failed"):
                    setattr(status, state, getattr(status, state) + count)
            status.workers_alive = conn.execute(text(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat >= NOW() - :age"),
                {"age": stalled_after}).scalar()
        return status

    def failed_jobs(self, limit: int = 10) -> list[tuple[int, str, dict]]:
        with self.engine.connect() as conn:
            return [(r.id, r.task_name, r.args) for r in conn.execute(text(
                "SELECT id, task_name, args FROM procrastinate_jobs WHERE status = 'failed' ORDER BY id DESC LIMIT :n"),
                {"n": limit})]
