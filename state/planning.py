"""What falls due, for both runtimes: the one "due sources" query over `sources.next_check_at`
and the stored window of digest planning (a counters row). `postwatch run` (scheduler.py) takes
due sources and due digests here directly; `postwatch worker` (state/cluster.py) runs the same
statements inside its planning transactions, where it also defers the jobs.

The rules themselves are postwatch.planner's: the caller passes `next_check_of` (planner.next_check)
and `due_between` (planner.digest_due_between); the removal rule (planner.removal_due) is asked
here in SQL, so that PostgreSQL can lock the rows it picks.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import Connection, Row

from state.database import Database, as_utc
from state.schema import UTC, sources, subscribers

# The end of the last digest planning, in epoch seconds (a counters row). One window for both
# runtimes (a database served by `postwatch run` and later by workers, or back, plans on from
# where the other stopped); the name is the one the worker gave it first.
DIGESTS_PLANNED_UNTIL = "cluster_digests_planned_until"

_DUE_SOURCES = """
    SELECT s.id, s.name, s.url, (s.next_check_at IS NULL OR s.next_check_at <= :now) AS due_by_time
      FROM sources s
     WHERE s.enabled AND s.paused_at IS NULL
       AND (s.next_check_at IS NULL OR s.next_check_at <= :now
            OR EXISTS (SELECT 1 FROM posts p
                        WHERE p.source_id = s.id AND p.status = 'gone_pending'
                          AND p.gone_since + :removal_delay <= :now
                          AND (s.last_check_at IS NULL OR s.last_check_at < p.gone_since + :removal_delay)))
     ORDER BY s.next_check_at IS NOT NULL, s.next_check_at, s.id
     LIMIT :limit"""


def due_source_rows(conn: Connection, now: datetime, removal_delay: timedelta, limit: int) -> Sequence[Row]:
    """The sources due at `now` (id, name, url, due_by_time), never planned first: enabled, not
    paused, and never planned, or next_check_at passed, or holding a post missing for the removal
    delay with no check since it passed (planner.removal_due). On PostgreSQL the rows are locked
    (SKIP LOCKED: two planners never take one source) until `conn`'s transaction ends."""
    if conn.dialect.name == "sqlite":
        # SQLite stores times as text and has no interval type: the delay is added by strftime(),
        # to the millisecond, and a millisecond more, so that the query never finds a removal due
        # before the check's own rule (state.changes, to the microsecond) does: a check a moment
        # too early would confirm nothing and leave the removal to the next interval.
        query = text(_DUE_SOURCES.replace("p.gone_since + :removal_delay",
                                          "strftime('%Y-%m-%d %H:%M:%f', p.gone_since, :removal_seconds)"))
        params = {"removal_seconds": f"+{removal_delay.total_seconds() + 0.001:.3f} seconds"}
    else:
        query, params = text(_DUE_SOURCES + "\n FOR UPDATE OF s SKIP LOCKED"), {"removal_delay": removal_delay}
    # Typed: SQLite compares the stored text, which must be written as SQLAlchemy writes it.
    query = query.bindparams(bindparam("now", type_=UTC))
    return conn.execute(query, {**params, "now": now, "limit": limit}).all()


def move_next_checks(conn: Connection, names: Iterable[str], next_check_of: Callable[[str], datetime]) -> None:
    planned = [{"source": name, "next": next_check_of(name)} for name in names]
    if planned:
        conn.execute(text("UPDATE sources SET next_check_at = :next WHERE name = :source")
                     .bindparams(bindparam("next", type_=UTC)), planned)


def advance_digest_window(conn: Connection, now: datetime, first_window: timedelta) -> tuple[datetime, datetime] | None:
    """The window (after, until] since the last digest planning, its end stored as `now` (whole
    seconds); None when it is empty (planned twice in one second). The first planning ever looks
    back `first_window`. On PostgreSQL the row is locked until `conn`'s transaction ends."""
    window = digest_window(conn, now, first_window, lock=True)
    if window is not None:
        store_digest_window_end(conn, window[1])
    return window


def digest_window(conn: Connection, now: datetime, first_window: timedelta,
                  lock: bool = False) -> tuple[datetime, datetime] | None:
    """The window (after, until] since the last digest planning, as `advance_digest_window`
    finds it, without moving it."""
    lock_clause = " FOR UPDATE" if lock and conn.dialect.name != "sqlite" else ""
    row = conn.execute(text(f"SELECT value FROM counters WHERE name = :n{lock_clause}"), {"n": DIGESTS_PLANNED_UNTIL}).first()
    until = int(now.timestamp())
    since = until - int(first_window.total_seconds()) if row is None else row.value
    if since >= until:
        return None
    return datetime.fromtimestamp(since, now.tzinfo), datetime.fromtimestamp(until, now.tzinfo)


def store_digest_window_end(conn: Connection, until: datetime) -> None:
    """The digests due up to `until` are planned: the window's end moves there (never back)."""
    end = int(until.timestamp())
    if conn.execute(text("UPDATE counters SET value = :v WHERE name = :n AND value < :v"),
                    {"n": DIGESTS_PLANNED_UNTIL, "v": end}).rowcount == 0:
        exists = conn.execute(text("SELECT 1 FROM counters WHERE name = :n"), {"n": DIGESTS_PLANNED_UNTIL}).first()
        if exists is None:
            conn.execute(text("INSERT INTO counters (name, value) VALUES (:n, :v)"), {"n": DIGESTS_PLANNED_UNTIL, "v": end})


def subscribers_due(conn: Connection, after: datetime, until: datetime,
                    due_between: Callable[[object, datetime, datetime], bool]) -> list[int]:
    """The active daily and weekly subscribers whose digest falls due in (after, until], by id:
    each once, however many of their send times the window spans."""
    from state.subscribers import subscriber_from_row

    rows = conn.execute(select(subscribers).where(subscribers.c.status == "active",
                                                  subscribers.c.cadence.in_(("daily", "weekly")))
                        .order_by(subscribers.c.id)).mappings().all()
    return [r["id"] for r in rows if due_between(subscriber_from_row(r), after, until)]


class PlanningStorage(Database):
    def take_due_sources(self, now: datetime, next_check_of: Callable[[str, datetime], datetime],
                         removal_delay: timedelta, limit: int = 5000) -> list[str]:
        """The sources due at `now` (due_source_rows), their next check moved to
        `next_check_of(name, now)` in the same transaction: `postwatch run`'s sweep. A source
        checked but never planned (by `postwatch check`, or by a daemon before next_check_at)
        first gets its next check counted from that check, as if a sweep had made it. A sweep
        cut off before it recorded its sources hands them back (make_due_unless_checked_since)."""
        with self.engine.begin() as conn:
            last = {name: as_utc(at) for name, at in conn.execute(
                select(sources.c.name, sources.c.last_check_at)
                .where(sources.c.next_check_at.is_(None), sources.c.last_check_at.is_not(None)))}
            move_next_checks(conn, last, lambda name: next_check_of(name, last[name]))
            names = [row.name for row in due_source_rows(conn, now, removal_delay, limit)]
            move_next_checks(conn, names, lambda name: next_check_of(name, now))
            return names

    def count_next_checks_from_last_check(self, names: Iterable[str],
                                          next_check_of: Callable[[str, datetime], datetime]) -> None:
        """After a sweep: each of `names`' next check counted from when its check was recorded
        (`next_check_of(name, last_check_at)`), not from when the sweep took it, so that a slow
        source in the sweep (a dripping site) does not hold the others' next checks to its own
        and the next sweeps take them apart. Those with no check recorded keep theirs."""
        with self.engine.begin() as conn:
            last = {name: as_utc(at) for name, at in conn.execute(
                select(sources.c.name, sources.c.last_check_at)
                .where(sources.c.name.in_(list(names)), sources.c.last_check_at.is_not(None)))}
            move_next_checks(conn, last, lambda name: next_check_of(name, last[name]))

    def make_due_unless_checked_since(self, names: Iterable[str], since: datetime) -> int:
        """Make those of `names` due now that no check has recorded since `since` (a sweep that
        was cut off: their next check had been moved a whole interval on); how many."""
        with self.engine.begin() as conn:
            return sum(conn.execute(text(
                "UPDATE sources SET next_check_at = :since WHERE name = :name AND enabled "
                "AND (last_check_at IS NULL OR last_check_at < :since)").bindparams(bindparam("since", type_=UTC)),
                {"name": name, "since": since}).rowcount for name in names)

    def due_digests(self, now: datetime, due_between: Callable[[object, datetime, datetime], bool],
                    first_window: timedelta = timedelta(minutes=1)) -> tuple[list[int], datetime | None]:
        """The subscribers whose digest fell due since the last planning, and the window's end:
        `postwatch run`'s digests. The window moves only when `digests_planned(end)` says they
        were composed, so a daemon stopped in between plans them again at its next start (a
        digest composed before the stop has moved its reader's cursor: nothing is sent twice).
        A window no process was up for (the daemon was down at 08:00) is planned at the next one,
        so a missed digest goes out once at start."""
        with self.engine.connect() as conn:
            window = digest_window(conn, now, first_window)
            return (subscribers_due(conn, *window, due_between), window[1]) if window else ([], None)

    def digests_planned(self, until: datetime) -> None:
        with self.engine.begin() as conn:
            store_digest_window_end(conn, until)
