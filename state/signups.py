"""Signups from the /subscribe page: a pending subscriber (or an address that left, asking to come
back) waits for the link in its confirmation email; following it makes the subscriber active and
records the consent. Unconfirmed signups are reminded once and then expire. The rules are in
state/consent.py; this class owns their SQL."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, select, update

from state.consent import NEW, RETURNING, address_hash, consent_note, reminder_due, signup_outcome
from state.database import Database, as_utc
from state.events import last_seq
from state.records import Subscriber
from state.schema import forgotten_addresses, outbox, subscribers
from state.subscribers import is_forgotten, subscriber_from_row

DEFAULT_CONFIRM_WITHIN = timedelta(days=7)


@dataclass
class SignupRequest:
    """What a signup did: the outcome (state.consent NEW, RETURNING, WAITING, ACTIVE) and, when a
    confirmation email is to be sent, the subscriber it is for."""
    outcome: str
    confirm: Subscriber | None = None


class SignupStorage(Database):
    def request_signup(self, email: str, *, cadence: str, send_time: str, timezone: str, weekday: int | None,
                       sources: list[str] | None, now: datetime,
                       confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN, lang: str = "en") -> SignupRequest:
        """Store a signup for `email` (normalised). Nobody becomes active here, and an active
        subscriber's settings are not touched (anyone can type anyone's address)."""
        values = dict(cadence=cadence, send_time=send_time, timezone=timezone, weekday=weekday,
                      sources=json.dumps(sources) if sources else None, lang=lang)
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            forgotten = row is None and is_forgotten(conn, email)
            outcome = signup_outcome(row["status"] if row else None, as_utc(row["signup_at"]) if row else None, now,
                                     confirm_within, forgotten)
            if row is None:
                conn.execute(insert(subscribers).values(email=email, status="pending", cursor=0, created_at=now,
                                                        joined_via="page", signup_at=now, **values))
            elif outcome in (NEW, RETURNING):
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(
                    signup_at=now, reminded_at=None, **values))
            elif outcome != "active":          # waiting: the settings of the latest request
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(**values))
            if outcome not in (NEW, RETURNING):
                return SignupRequest(outcome)
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            return SignupRequest(outcome, subscriber_from_row(row))

    def confirm_signup(self, subscriber_id: int, now: datetime, *, ip: str | None, user_agent: str | None) -> Subscriber | None:
        """Follow a confirmation link: the waiting signup makes its subscriber active from now on
        (no changes from before), with the request's IP and user agent and, for an address that
        had left, a re-consent note. None when no signup waits (already confirmed, expired)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
            if row is None or row["signup_at"] is None or row["status"] == "active":
                return None
            forgotten = is_forgotten(conn, row["email"])
            note = consent_note(row["status"], forgotten)
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(
                status="active", cursor=last_seq(conn), subscribed_at=now, confirmed_at=now, unsubscribed_at=None,
                confirm_ip=(ip or "")[:64] or None, confirm_user_agent=(user_agent or "")[:300] or None,
                signup_at=None, reminded_at=None, bounces=0, suppressed_reason=None, suppressed_at=None,
                **({"consent_note": note} if note else {})))
            conn.execute(delete(forgotten_addresses).where(forgotten_addresses.c.address_hash == address_hash(row["email"])))
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
            return subscriber_from_row(row)

    def claim_reminders(self, now: datetime, remind_after: timedelta,
                        confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN) -> list[Subscriber]:
        """The waiting signups due for their one reminder, each marked reminded in the same
        statement that claims it: two housekeepers never remind one address twice."""
        due = []
        with self.engine.begin() as conn:
            rows = conn.execute(select(subscribers).where(subscribers.c.signup_at.is_not(None),
                                                          subscribers.c.reminded_at.is_(None),
                                                          subscribers.c.status != "active")).mappings().all()
            for row in rows:
                if not reminder_due(as_utc(row["signup_at"]), None, now, remind_after, confirm_within):
                    continue
                claimed = conn.execute(update(subscribers).where(subscribers.c.id == row["id"],
                                                                 subscribers.c.reminded_at.is_(None))
                                       .values(reminded_at=now)).rowcount
                if claimed:
                    due.append(subscriber_from_row({**row, "reminded_at": now}))
        return due

    def expire_signups(self, now: datetime, confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN) -> int:
        """Forget signups whose link was not followed in time: a pending subscriber's row goes
        (with what was queued for it); an address that had left keeps its old status. The count."""
        cutoff = now - confirm_within
        with self.engine.begin() as conn:
            stale = and_(subscribers.c.signup_at.is_not(None), subscribers.c.signup_at <= cutoff)
            ids = list(conn.execute(select(subscribers.c.id).where(stale, subscribers.c.status == "pending")).scalars())
            if ids:
                conn.execute(delete(outbox).where(outbox.c.subscriber_id.in_(ids), outbox.c.status == "pending"))
                conn.execute(delete(subscribers).where(subscribers.c.id.in_(ids)))
            returning = conn.execute(update(subscribers).where(stale, subscribers.c.status != "pending")
                                     .values(signup_at=None, reminded_at=None)).rowcount
            return len(ids) + returning
