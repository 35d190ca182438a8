"""One daemon per database. SQLite: an flock beside the database file. PostgreSQL: a lease row
that the daemon keeps renewing (`DaemonLease`, its SQL in `LeaseStorage`).

An advisory lock lives on one connection: when that connection is killed or the network drops,
the lock is gone while the daemon runs on, and a second daemon starts. A lease instead expires
on the database's clock unless renewed, and its holder stops running jobs well before it could
expire when it cannot renew it:

- taken with one atomic statement, only when there is none, it has expired, or its holder is a
  process that no longer exists on this machine (a restart after SIGKILL takes over at once);
- renewed every RENEW_EVERY seconds by a thread of its own, so a job that keeps the event loop
  busy cannot starve it; each database call is bounded (statement, connect and TCP timeouts, and
  a wait that gives up on a call that still hangs);
- no successful renewal for GIVE_UP_AFTER seconds, or the lease found in other hands: one error
  line and `on_lost` (the daemon stops its scheduler and crawls and exits 1); a process still
  alive FENCE_AFTER seconds after its last renewal ends itself, before the lease can expire;
- released (row deleted) by a clean stop.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import create_engine, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from state.database import Database, pg_connect_args, sqlite_path
from state.errors import AlreadyRunning, StorageError, describe_error
from state.schema import daemon_lease

log = logging.getLogger("postwatch")


def _node_identity() -> str:
    """Which machine and pid namespace this process runs in: a pid recorded by a process with
    the same identity can be checked with kill(pid, 0); a hostname alone can be shared by
    containers on different machines."""
    parts = []
    for read in (lambda: open("/proc/sys/kernel/random/boot_id").read().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            pass
    return ":".join(parts) or socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process
        return True
    return True


# Holders taken by this process and not given back: a lease row with our own pid and one of
# these holders is alive; with another holder it is a previous incarnation's.
_held_here: set[str] = set()


class DaemonLease:
    TTL = timedelta(seconds=30)
    RENEW_EVERY = 5.0
    RETRY_EVERY = 1.0
    GIVE_UP_AFTER = 15.0
    FENCE_AFTER = 25.0

    def __init__(self, store: LeaseStorage, on_lost: Callable[[str], None] | None = None):
        self.store = store
        self.on_lost = on_lost
        self.holder = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.node = _node_identity()
        self.pid = os.getpid()
        self.lost: str | None = None
        self._stopping = threading.Event()
        self._keeper: threading.Thread | None = None
        self._last_renewed = 0.0        # time.monotonic() when the last successful renewal was sent

    # -- taking and giving back --------------------------------------------------------------
    def __enter__(self) -> "DaemonLease":
        self._acquire()
        _held_here.add(self.holder)
        self._keeper = threading.Thread(target=self._keep, name="postwatch-lease", daemon=True)
        self._keeper.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        _held_here.discard(self.holder)
        if self.lost:
            return          # nothing to give back; the keeper thread keeps the fence armed
        if self._keeper is not None:
            self._keeper.join(timeout=self.store.LEASE_CALL_TIMEOUT + 3)
        outcome = self._call(self.store.release_lease, self.holder)
        if isinstance(outcome, BaseException):
            log.warning("could not release the daemon lease on %s (%s); it expires within %ds",
                        self.store.display_name, _reason(outcome), self.TTL.total_seconds())

    def _acquire(self) -> None:
        common = dict(holder=self.holder, host=self.host, node=self.node, pid=self.pid, ttl=self.TTL)
        for _ in range(3):      # the lease may change hands between our statements
            sent = time.monotonic()
            if self.store.take_lease(**common):
                self._last_renewed = sent
                return
            current = self.store.lease_holder()
            if current is None:
                continue
            if self._holder_is_gone(current):
                sent = time.monotonic()
                if self.store.take_lease(**common, replacing=current["holder"]):
                    self._last_renewed = sent
                    return
                current = self.store.lease_holder()
                if current is None:
                    continue
            remaining = max(0, math.ceil(float(current["remaining"])))
            raise AlreadyRunning(f"another postwatch daemon (host {current['host']}, pid {current['pid']}) holds "
                                 f"{self.store.display_name}; its lease expires in {remaining}s")
        raise AlreadyRunning(f"the daemon lease on {self.store.display_name} keeps changing hands; another postwatch "
                             "daemon is starting")

    def _holder_is_gone(self, row: dict[str, Any]) -> bool:
        if row["node"] != self.node:
            return False            # another machine: only expiry tells
        if row["pid"] == self.pid:     # a previous incarnation's (a container restarted as pid 1)?
            return row["holder"] not in _held_here
        return not _pid_alive(row["pid"])

    # -- keeping it ----------------------------------------------------------------------------
    def _keep(self) -> None:
        wait = self.RENEW_EVERY
        while not self._stopping.wait(wait):
            sent = time.monotonic()
            outcome = self._call(self.store.renew_lease, self.holder, self.TTL)
            if self._stopping.is_set():
                return
            if outcome is True:
                self._last_renewed, wait = sent, self.RENEW_EVERY
                continue
            if outcome is False:
                self._lose(f"postwatch: another process took the daemon lease on {self.store.display_name}; "
                           "stopping this daemon (exit 1)", fence_within=5.0)
                return
            silent_for = time.monotonic() - self._last_renewed
            if silent_for >= self.GIVE_UP_AFTER:
                self._lose(f"postwatch: cannot renew the daemon lease on {self.store.display_name} for "
                           f"{silent_for:.0f}s ({_reason(outcome)}); stopping this daemon (exit 1) before another "
                           "one may take over")
                return
            wait = self.RETRY_EVERY

    def _lose(self, line: str, fence_within: float | None = None) -> None:
        self.lost = line
        log.error("%s", line)
        if self.on_lost is not None:
            try:
                self.on_lost(line)
            except Exception:       # the fence below still ends the process in time
                pass
        fence_at = self._last_renewed + self.FENCE_AFTER
        if fence_within is not None:
            fence_at = min(fence_at, time.monotonic() + fence_within)
        # Jobs must not run once another daemon may hold the lease: if the orderly stop has not
        # ended the process by then, end it here (the outbox and the crawls are crash-safe).
        # (The line logged above stays the only one: this is the same stop, made certain.)
        time.sleep(max(0.0, fence_at - time.monotonic()))
        logging.shutdown()
        os._exit(1)

    def _call(self, fn: Callable, *args) -> Any:
        """fn(*args), or the exception it raised, or TimeoutError when it has not returned in time
        (a call stuck on a silent network is left behind in its daemon thread)."""
        result: dict[str, Any] = {}
        done = threading.Event()

        def target():
            try:
                result["value"] = fn(*args)
            except BaseException as exc:    # handed to the caller
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="postwatch-lease-call", daemon=True).start()
        if not done.wait(self.store.LEASE_CALL_TIMEOUT + 2):
            return TimeoutError(f"no answer within {self.store.LEASE_CALL_TIMEOUT + 2:.0f}s")
        return result["error"] if "error" in result else result["value"]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return describe_error(exc.cause) if isinstance(exc.cause, BaseException) else str(exc.cause)
    return describe_error(exc)


class LeaseStorage(Database):
    """The instance lock, and the SQL of the PostgreSQL lease row.

    Times come from the database's clock (now()), so hosts with skewed clocks agree on expiry.
    The lease has its own one-connection engine with short timeouts: a renewal must neither
    wait behind the jobs' connections nor hang on a dead network."""

    LEASE_NAME = "daemon"
    LEASE_CALL_TIMEOUT = 3.0
    _lease_engine: Engine | None = None

    def instance_lock(self, on_lost: Callable[[str], None] | None = None):
        """Held by the daemon for its whole life: one daemon per database.

        SQLite: an flock beside the database file (the kernel drops it when the process dies).
        PostgreSQL: a lease row renewed every few seconds (DaemonLease); `on_lost` is called,
        from another thread, with one line when it can no longer be renewed."""
        if self.is_sqlite:
            return self._file_lock()
        return DaemonLease(self, on_lost=on_lost)

    @contextlib.contextmanager
    def _file_lock(self):
        lock_path = f"{sqlite_path(self.url)}.lock"
        try:
            handle = open(lock_path, "a+", opener=lambda name, flags: os.open(name, flags, 0o600))
        except OSError as exc:
            raise StorageError(self.display_name, exc) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning(f"another postwatch daemon is using {self.display_name}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _lease_connection(self) -> Connection:
        if self._lease_engine is None:
            millis = int(self.LEASE_CALL_TIMEOUT * 1000)
            self._lease_engine = create_engine(
                self.url, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_timeout=self.LEASE_CALL_TIMEOUT,
                connect_args={**pg_connect_args(self.connect_args, f"-c statement_timeout={millis} -c lock_timeout={millis}"),
                              "connect_timeout": max(2, int(self.LEASE_CALL_TIMEOUT)), "tcp_user_timeout": millis})
        return self._lease_engine.connect()

    def take_lease(self, holder: str, host: str, node: str, pid: int, ttl: timedelta,
                   replacing: str | None = None) -> bool:
        """One atomic statement: the lease becomes `holder`'s when there is none, when it has
        expired, or when it is still `replacing`'s (a holder known to be dead)."""
        # Imported here: SQLAlchemy's PostgreSQL dialect adds about 0.4 s to the start-up of every
        # command (measured), and only a daemon on PostgreSQL needs it.
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        now = func.now()
        statement = pg_insert(daemon_lease).values(
            name=self.LEASE_NAME, holder=holder, host=host, node=node, pid=pid,
            acquired_at=now, renewed_at=now, expires_at=now + ttl,
        )
        condition = daemon_lease.c.expires_at <= now
        if replacing:
            condition = or_(condition, daemon_lease.c.holder == replacing)
        statement = statement.on_conflict_do_update(
            index_elements=[daemon_lease.c.name],
            set_={c: statement.excluded[c] for c in ("holder", "host", "node", "pid", "acquired_at", "renewed_at",
                                                     "expires_at")},
            where=condition,
        ).returning(daemon_lease.c.holder)
        with self._lease_connection() as conn, conn.begin():
            return conn.execute(statement).scalar() == holder

    def lease_holder(self) -> dict | None:
        """The current lease row with `remaining` (seconds until it expires, by the database's clock)."""
        query = select(daemon_lease, func.extract("epoch", daemon_lease.c.expires_at - func.now()).label("remaining")) \
            .where(daemon_lease.c.name == self.LEASE_NAME)
        with self._lease_connection() as conn, conn.begin():
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def renew_lease(self, holder: str, ttl: timedelta) -> bool:
        """False when the lease is no longer `holder`'s."""
        statement = update(daemon_lease).where(daemon_lease.c.name == self.LEASE_NAME, daemon_lease.c.holder == holder) \
            .values(renewed_at=func.now(), expires_at=func.now() + ttl).returning(daemon_lease.c.holder)
        with self._lease_connection() as conn, conn.begin():
            return conn.execute(statement).scalar() == holder

    def release_lease(self, holder: str) -> None:
        with self._lease_connection() as conn, conn.begin():
            conn.execute(delete(daemon_lease).where(daemon_lease.c.name == self.LEASE_NAME,
                                                    daemon_lease.c.holder == holder))

    def close(self) -> None:
        super().close()
        if self._lease_engine is not None:
            self._lease_engine.dispose()
