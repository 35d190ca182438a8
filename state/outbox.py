"""The outbox: composed messages waiting for the mail server, sent, retried or given up on.

Composing a digest and moving the subscriber's cursor past its events happen in one
transaction, so a crash neither loses a digest nor sends one twice; senders lease what they
take, so two never hand the same message to the server at once."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Callable, Iterable

from sqlalchemy import and_, bindparam, case, create_engine, func, insert, or_, select, text, update
from sqlalchemy.engine import Engine

from state.accepted import AcceptedJournal
from state.database import Database, as_utc, pg_connect_args, utc_now
from state.errors import StorageError
from state.events import last_seq, pending_query, read_events
from state.records import ComposedMessage, EventRecord, OutboxItem, Subscriber
from state.schema import counters, outbox, subscribers
from state.subscribers import subscriber_from_row


class OutboxStorage(Database):
    COMPOSE_BATCH = 200
    send_lease: timedelta
    accepted: AcceptedJournal | None     # SQLite only: PostgreSQL notes a message in its row (note_accepted)
    notes_engine: Engine | None = None   # PostgreSQL only

    def compose_digests(self, build: Callable[[Subscriber, list[EventRecord]], ComposedMessage], now: datetime,
                        subscriber_ids: Iterable[int] | None = None,
                        choose: Callable[[Subscriber, list[EventRecord]], list[EventRecord]] | None = None) -> list[int]:
        """Queue a message for each active subscriber with pending events. `choose(subscriber,
        events)` picks the events their message tells of (keyword filters); the cursor moves past
        all of them either way, so an event filtered out is not held back for the next digest."""
        query = select(subscribers.c.id).where(subscribers.c.status == "active").order_by(subscribers.c.id)
        if subscriber_ids is not None:
            query = query.where(subscribers.c.id.in_(list(subscriber_ids)))
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        queued = []
        # A batch of subscribers per transaction: each subscriber's message is in the outbox and
        # their cursor has moved past its events, or (the batch rolled back) neither happened.
        for start in range(0, len(ids), self.COMPOSE_BATCH):
            with self.engine.begin() as conn:
                lock = select(subscribers).where(subscribers.c.id.in_(ids[start:start + self.COMPOSE_BATCH]),
                                                 subscribers.c.status == "active").order_by(subscribers.c.id)
                if not self.is_sqlite:
                    lock = lock.with_for_update()
                rows = conn.execute(lock).mappings().all()
                newest = last_seq(conn)
                shared: dict[tuple, list[EventRecord]] = {}   # subscribers at the same point share one query
                messages, cursors = [], []
                for row in rows:
                    subscriber = subscriber_from_row(row)
                    key = (subscriber.cursor, tuple(subscriber.sources or ()))
                    if key not in shared:
                        shared[key] = read_events(conn, pending_query(subscriber))
                    pending = shared[key]
                    told = choose(subscriber, pending) if choose is not None and pending else pending
                    if told:
                        message = build(subscriber, told)
                        messages.append(dict(
                            subscriber_id=subscriber.id, to_addr=message.to_addr, message_id=message.message_id,
                            subject=message.subject, raw=message.raw, status="pending", attempts=0,
                            next_attempt_at=now, first_seq=told[0].seq, last_seq=told[-1].seq, created_at=now,
                            channel=message.channel))
                    # Events of other sources the subscriber does not follow are passed too.
                    cursor = max(subscriber.cursor, pending[-1].seq if pending else newest)
                    if cursor != subscriber.cursor:
                        cursors.append({"subscriber": subscriber.id, "new_cursor": cursor})
                if messages:
                    queued.extend(conn.execute(insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                                               messages).scalars())
                if cursors:
                    conn.execute(update(subscribers).where(subscribers.c.id == bindparam("subscriber"))
                                 .values(cursor=bindparam("new_cursor")), cursors)
        return queued

    def digests_pending(self, subscriber_ids: Iterable[int] | None = None) -> bool:
        """Whether compose_digests may have anything to do: an active subscriber (of
        `subscriber_ids`, when given) whose cursor is behind the newest event. Only looks."""
        query = select(subscribers.c.id).where(subscribers.c.status == "active",
                                               subscribers.c.cursor < func.coalesce(
                                                   select(counters.c.value).where(counters.c.name == "event_seq")
                                                   .scalar_subquery(), 0)).limit(1)
        if subscriber_ids is not None:
            query = query.where(subscribers.c.id.in_(list(subscriber_ids)))
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def enqueue_message(self, message: ComposedMessage, now: datetime, subscriber_id: int | None = None) -> int:
        with self.engine.begin() as conn:
            existing = conn.execute(select(outbox.c.id).where(outbox.c.message_id == message.message_id)).scalar()
            if existing:
                return existing
            return conn.execute(insert(outbox).values(
                subscriber_id=subscriber_id, to_addr=message.to_addr, message_id=message.message_id,
                subject=message.subject, raw=message.raw, status="pending", attempts=0, next_attempt_at=now,
                created_at=now, channel=message.channel)).inserted_primary_key[0]

    @staticmethod
    def _due_clause(now: datetime, channel: str | None = None):
        due = and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
                   or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now))
        return due if channel is None else and_(due, outbox.c.channel == channel)

    def due_outbox(self, now: datetime, limit: int = 1000, *, claim: bool = True,
                   channel: str | None = None) -> list[OutboxItem]:
        """Pending messages whose next attempt is due (of one channel, or of all), leased to the
        caller for `send_lease` so that a daemon and a CLI run never hand the same message to
        the server at once."""
        lease = now + self.send_lease if claim else None
        with self.engine.begin() as conn:
            query = (select(outbox.c.id, outbox.c.subscriber_id, outbox.c.to_addr, outbox.c.message_id, outbox.c.raw,
                            outbox.c.attempts, outbox.c.created_at, outbox.c.channel)
                     .where(self._due_clause(now, channel))
                     .order_by(outbox.c.id).limit(limit))
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if claim and rows:
                conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                             .values(claimed_until=lease))
            return [OutboxItem(id=r.id, subscriber_id=r.subscriber_id, to_addr=r.to_addr, message_id=r.message_id,
                               raw=bytes(r.raw), attempts=r.attempts, created_at=as_utc(r.created_at),
                               claimed_until=lease, channel=r.channel) for r in rows]

    def outbox_due(self, now: datetime) -> bool:
        """Whether any message is due. Only looks: a lease taken here would hide the message
        from the flush that follows for the whole lease."""
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.id).where(self._due_clause(now)).limit(1)).first() is not None

    def due_channels(self, now: datetime) -> list[str]:
        """The channels that have a message due, by name. Only looks, as `outbox_due`."""
        with self.engine.connect() as conn:
            return sorted(conn.execute(select(outbox.c.channel).where(self._due_clause(now)).distinct()).scalars())

    def release_claims(self, items: Iterable[OutboxItem]) -> int:
        """Hand leased messages that never reached the server back to the queue at once (a
        stopping sender), so a restart need not wait for the lease to run out. A lease that ran
        out and was taken by another sender is not ours to clear."""
        params = [{"outbox_id": i.id, "lease": i.claimed_until} for i in items if i.claimed_until is not None]
        if not params:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(update(outbox).where(outbox.c.id == bindparam("outbox_id"), outbox.c.status == "pending",
                                                     outbox.c.claimed_until == bindparam("lease"))
                                .values(claimed_until=None), params).rowcount

    def renew_claims(self, items: Iterable[OutboxItem], now: datetime) -> list[OutboxItem]:
        """Extend the lease of messages this sender still holds (a slow server can take longer
        than one lease to reach the end of a page): the items whose lease was still ours, with
        their new lease. One that ran out and was taken by another sender is left to it."""
        items = [i for i in items if i.claimed_until is not None]
        if not items:
            return []
        lease = now + self.send_lease
        renewed: set[int] = set()
        with self.engine.begin() as conn:
            for held in {i.claimed_until for i in items}:
                ids = [i.id for i in items if i.claimed_until == held]
                renewed.update(conn.execute(
                    update(outbox).where(outbox.c.id.in_(ids), outbox.c.status == "pending",
                                         outbox.c.claimed_until == held)
                    .values(claimed_until=lease).returning(outbox.c.id)).scalars())
        for item in items:
            if item.id in renewed:
                item.claimed_until = lease
        return [i for i in items if i.id in renewed]

    # Built once: marking is the one statement run per message sent, 10,000 times a digest.
    _MARK = update(outbox).where(outbox.c.id == bindparam("outbox_id"))
    _MARK_SENT = _MARK.values(status="sent", sent_at=bindparam("at"), attempts=outbox.c.attempts + 1,
                              claimed_until=None, last_error=None)
    _MARK_RETRY = _MARK.values(attempts=outbox.c.attempts + 1, next_attempt_at=bindparam("at"), claimed_until=None,
                               last_error=bindparam("error"))
    _MARK_FAILED = _MARK.values(status="failed", attempts=outbox.c.attempts + 1, claimed_until=None,
                                last_error=bindparam("error"))

    # PostgreSQL's note is the mark itself, made in the thread that sent the message: one round
    # trip on a session of its own (open_notes) that commits without waiting for the write-ahead
    # log's flush (synchronous_commit off). It survives the sender being killed, as the server
    # has it; a crash of the database server itself may lose the last fraction of a second of
    # them, the same window as the journal's operating-system crash.
    _NOTE_SENT = text("""
        WITH sent AS (UPDATE outbox SET status = 'sent', sent_at = :at, attempts = attempts + 1,
                                        claimed_until = NULL, last_error = NULL
                       WHERE id = :outbox_id AND status = 'pending' RETURNING subscriber_id)
        UPDATE subscribers SET bounces = 0 WHERE id IN (SELECT subscriber_id FROM sent) AND bounces > 0""")

    def note_accepted(self, item: OutboxItem) -> None:
        """Written down the moment the server accepted `item`, in the thread that sent it, before
        `mark_sent`: the window in which a killed sender forgets a delivered message (and the
        next one sends it again) is a file append (SQLite: state/accepted.py) or one round trip to
        PostgreSQL (which marks the row sent there and then), not the wait for the flush's turn
        to write."""
        if self.accepted is not None:
            try:
                self.accepted.record(item.message_id)
            except OSError as exc:
                raise StorageError(self.display_name, exc) from exc
        elif self.notes_engine is not None:
            with self.notes_engine.connect() as conn:
                conn.execute(self._NOTE_SENT, {"outbox_id": item.id, "at": utc_now()})
            with self._noted_lock:
                self._noted.add(item.id)

    def open_notes(self) -> None:
        """PostgreSQL's notes go through sessions of their own: autocommit and synchronous_commit
        off are theirs only, never those of the transactions that compose or mark."""
        self._noted: set[int] = set()         # marked sent by their note: mark_sent has nothing to do
        self._noted_lock = threading.Lock()
        self.notes_engine = None if self.is_sqlite else create_engine(
            self.url, isolation_level="AUTOCOMMIT",
            connect_args=pg_connect_args(self.connect_args, "-c synchronous_commit=off"))

    def close(self) -> None:
        if self.notes_engine is not None:
            self.notes_engine.dispose()
        super().close()

    def reconcile_accepted(self, now: datetime) -> int:
        """Mark sent what a killed sender had written down as accepted but not yet committed."""
        if self.accepted is None:
            return 0
        ids, files = self.accepted.take()
        marked = 0
        if ids:
            with self.engine.begin() as conn:
                for start in range(0, len(ids), 500):
                    marked += conn.execute(update(outbox).where(
                        outbox.c.message_id.in_(ids[start:start + 500]), outbox.c.status == "pending").values(
                        status="sent", sent_at=now, claimed_until=None, attempts=outbox.c.attempts + 1,
                        last_error=None)).rowcount
        self.accepted.done(files)
        return marked

    # A delivery ends a run of hard bounces (only written when there was one).
    _BOUNCES_RESET = (update(subscribers).where(subscribers.c.id == bindparam("subscriber"), subscribers.c.bounces > 0)
                      .values(bounces=0))

    def mark_sent(self, outbox_id: int, now: datetime, subscriber_id: int | None = None) -> None:
        with self._noted_lock:
            if outbox_id in self._noted:
                self._noted.discard(outbox_id)
                return
        with self.engine.begin() as conn:
            conn.execute(self._MARK_SENT, {"outbox_id": outbox_id, "at": now})
            if subscriber_id is not None:
                conn.execute(self._BOUNCES_RESET, {"subscriber": subscriber_id})

    def mark_retry(self, outbox_id: int, error: str, next_attempt_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._MARK_RETRY, {"outbox_id": outbox_id, "at": next_attempt_at, "error": error[:1000]})

    def mark_failed(self, outbox_id: int, error: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._MARK_FAILED, {"outbox_id": outbox_id, "error": error[:1000]})

    def outbox_stats(self, now: datetime | None = None) -> dict[str, int]:
        now = now or utc_now()
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
            oldest = as_utc(conn.execute(select(func.min(outbox.c.created_at)).where(outbox.c.status == "pending")).scalar())
        return {"pending": counts.get("pending", 0), "sent": counts.get("sent", 0), "failed": counts.get("failed", 0),
                "oldest_pending_age_s": int((now - oldest).total_seconds()) if oldest else 0}

    def outbox_stats_by_channel(self) -> dict[str, dict[str, int]]:
        """Channel -> status (pending, sent, failed, cancelled) -> messages."""
        by_channel: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for channel, status, count in conn.execute(select(outbox.c.channel, outbox.c.status, func.count())
                                                       .group_by(outbox.c.channel, outbox.c.status)):
                by_channel.setdefault(channel, {})[status] = count
        return by_channel

    def outbox_errors(self, limit: int = 20) -> list[tuple[str, str | None]]:
        with self.engine.connect() as conn:
            return [(r.to_addr, r.last_error) for r in conn.execute(
                select(outbox.c.to_addr, outbox.c.last_error).where(outbox.c.status.in_(("pending", "failed")),
                                                                    outbox.c.last_error.is_not(None))
                .order_by(outbox.c.id.desc()).limit(limit))]

    def outbox_summary(self) -> dict[str, dict[str, int]]:
        """Channel -> pending (never tried yet), retrying (pending after a failed attempt), failed,
        sent, cancelled: the console's dashboard."""
        summary: dict[str, dict[str, int]] = {}
        retrying = case((and_(outbox.c.status == "pending", outbox.c.attempts > 0), "retrying"), else_=outbox.c.status)
        with self.engine.connect() as conn:
            for channel, status, count in conn.execute(select(outbox.c.channel, retrying, func.count())
                                                       .group_by(outbox.c.channel, retrying)):
                summary.setdefault(channel, {})[status] = count
        return summary

    def outbox_rows(self, channel: str | None = None, status: str | None = None, limit: int = 100,
                    subscriber_id: int | None = None) -> list[dict]:
        """The newest messages (without their bodies; of one subscriber when `subscriber_id`): id,
        channel, to_addr, subject, status (retrying: pending after a failed attempt), attempts,
        last_error, next_attempt_at, created_at, sent_at."""
        query = select(outbox.c.id, outbox.c.channel, outbox.c.to_addr, outbox.c.subject, outbox.c.status,
                       outbox.c.attempts, outbox.c.last_error, outbox.c.next_attempt_at, outbox.c.created_at,
                       outbox.c.sent_at, outbox.c.subscriber_id).order_by(outbox.c.id.desc()).limit(limit)
        if channel:
            query = query.where(outbox.c.channel == channel)
        if subscriber_id is not None:
            query = query.where(outbox.c.subscriber_id == subscriber_id)
        if status == "retrying":
            query = query.where(outbox.c.status == "pending", outbox.c.attempts > 0)
        elif status:
            query = query.where(outbox.c.status == status)
        with self.engine.connect() as conn:
            rows = []
            for r in conn.execute(query).mappings():
                row = dict(r)
                for key in ("next_attempt_at", "created_at", "sent_at"):
                    row[key] = as_utc(row[key])
                if row["status"] == "pending" and row["attempts"]:
                    row["status"] = "retrying"
                rows.append(row)
            return rows

    def retry_outbox(self, now: datetime, ids: Iterable[int] | None = None) -> int:
        """Retry now: the named messages (or every failed and retrying one) that are pending or
        failed become due at `now`, unclaimed. A message being sent (claimed) is left alone."""
        query = update(outbox).where(outbox.c.status.in_(("pending", "failed")),
                                     or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now))
        if ids is None:
            query = query.where(or_(outbox.c.status == "failed", outbox.c.attempts > 0))
        else:
            query = query.where(outbox.c.id.in_(list(ids)))
        with self.engine.begin() as conn:
            return conn.execute(query.values(status="pending", next_attempt_at=now, claimed_until=None)).rowcount
