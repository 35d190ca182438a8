"""Subscribers: who gets digests, how often, of which sources, and where each one's digests
have got to (`cursor`, the last event number delivered)."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, or_, select, update

from state.database import Database, as_utc, utc_now
from state.errors import NeedsConsent
from state.events import last_seq
from state.records import Subscriber, SubscriberImport
from state.consent import address_hash, consent_note
from state.schema import events, forgotten_addresses, outbox, subscribers
from state.suppression import DEFAULT_BOUNCE_LIMIT, refusal, suppressed_by, suppression_reason

FORGOTTEN = "erased on request (subscribers forget); not re-subscribed without their consent"

SETTINGS = ("cadence", "send_time", "timezone", "weekday", "sources", "filters", "lang")


def filters_value(include, exclude) -> str | None:
    """The stored form of a subscriber's keyword filters (NULL when there are none)."""
    if not include and not exclude:
        return None
    return json.dumps({"include": list(include or ()), "exclude": list(exclude or ())}, ensure_ascii=False)


def subscriber_from_row(row) -> Subscriber:
    filters = json.loads(row["filters"]) if row.get("filters") else {}
    return Subscriber(id=row["id"], email=row["email"], cadence=row["cadence"], send_time=row["send_time"],
                      timezone=row["timezone"], weekday=row["weekday"],
                      sources=json.loads(row["sources"]) if row["sources"] else None, status=row["status"],
                      cursor=row["cursor"], created_at=as_utc(row["created_at"]),
                      subscribed_at=as_utc(row["subscribed_at"]), bounces=row["bounces"] or 0,
                      suppressed_reason=row["suppressed_reason"], suppressed_at=as_utc(row["suppressed_at"]),
                      joined_via=row["joined_via"], signup_at=as_utc(row["signup_at"]),
                      reminded_at=as_utc(row["reminded_at"]), confirmed_at=as_utc(row["confirmed_at"]),
                      confirm_ip=row["confirm_ip"], confirm_user_agent=row["confirm_user_agent"],
                      consent_note=row["consent_note"],
                      include=tuple(filters.get("include", ())), exclude=tuple(filters.get("exclude", ())),
                      origin=row.get("origin") or "cli", lang=row.get("lang") or "en")


def is_forgotten(conn, email: str) -> bool:
    return conn.execute(select(forgotten_addresses.c.address_hash)
                        .where(forgotten_addresses.c.address_hash == address_hash(email))).first() is not None


class SubscriberStorage(Database):
    def add_subscriber(self, email: str, *, cadence: str = "daily", send_time: str = "08:00", timezone: str = "UTC",
                       weekday: int | None = None, sources: list[str] | None = None,
                       now: datetime | None = None, resubscribe: bool = False,
                       include: list[str] | tuple[str, ...] = (), exclude: list[str] | tuple[str, ...] = (),
                       lang: str = "en", consent_how: str = "the operator (subscribers add --resubscribe)") -> Subscriber:
        """Add a subscriber, or change an active one's settings. An address that unsubscribed,
        was suppressed or was erased on request raises NeedsConsent, unless `resubscribe`: the
        operator has the person's new consent (recorded as the consent note, saying how:
        `consent_how`)."""
        now = now or utc_now()
        values = dict(cadence=cadence, send_time=send_time, timezone=timezone, weekday=weekday,
                      sources=json.dumps(sources) if sources else None, filters=filters_value(include, exclude),
                      lang=lang)
        with self.engine.begin() as conn:
            current = last_seq(conn)
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            if row is None:
                forgotten = is_forgotten(conn, email)
                if forgotten and not resubscribe:
                    raise NeedsConsent(email, FORGOTTEN)
                conn.execute(insert(subscribers).values(
                    email=email, status="active", cursor=current, created_at=now, subscribed_at=now, joined_via="cli",
                    consent_note=consent_note(None, forgotten, consent_how), **values))
                conn.execute(delete(forgotten_addresses).where(forgotten_addresses.c.address_hash == address_hash(email)))
            elif row["status"] != "active":
                reason = refusal(row["status"])
                if reason is not None and not resubscribe:
                    raise NeedsConsent(row["email"], reason)
                # Back after unsubscribing: from now on, not the changes they missed. A new
                # subscription: links from the old one no longer unsubscribe them.
                note = consent_note(row["status"], False, consent_how)
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(
                    status="active", cursor=current, unsubscribed_at=None, subscribed_at=now, bounces=0,
                    suppressed_reason=None, suppressed_at=None, signup_at=None, reminded_at=None,
                    **({"consent_note": note} if note else {}), **values))
            else:
                conn.execute(update(subscribers).where(subscribers.c.id == row["id"]).values(**values))
            row = conn.execute(select(subscribers).where(func.lower(subscribers.c.email) == email.lower())).mappings().first()
            return subscriber_from_row(row)

    def import_subscribers(self, entries: list[dict], now: datetime | None = None, *, commit: bool = True,
                           skip_refused: bool = False) -> SubscriberImport:
        """Many subscribers in one transaction: one executemany for the new addresses, one for
        the changed ones. Each entry has `email` (normalised, distinct) and the settings of
        `add_subscriber`. An address that unsubscribed is refused, never re-activated: only
        the person can subscribe again. Nothing is written when any entry is refused, unless
        `skip_refused`; nothing at all when not `commit`."""
        now = now or utc_now()
        result = SubscriberImport()
        additions, changes = [], []
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                current = last_seq(conn)
                existing = {row["email"].lower(): row for row in conn.execute(
                    select(subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.origin,
                           *(subscribers.c[name] for name in SETTINGS))).mappings()}
                forgotten = set(conn.execute(select(forgotten_addresses.c.address_hash)).scalars())
                for index, entry in enumerate(entries):
                    values = {"cadence": entry["cadence"], "send_time": entry["send_time"], "timezone": entry["timezone"],
                              "weekday": entry.get("weekday"),
                              "sources": json.dumps(entry["sources"]) if entry.get("sources") else None,
                              "filters": filters_value(entry.get("include"), entry.get("exclude")),
                              "lang": entry.get("lang") or "en"}
                    row = existing.get(entry["email"].lower())
                    if row is None and forgotten and address_hash(entry["email"]) in forgotten:
                        result.refused[index] = FORGOTTEN
                    elif row is None:
                        additions.append({"email": entry["email"], "status": "active", "cursor": current,
                                          "created_at": now, "subscribed_at": now, "joined_via": "import", **values})
                    elif row["origin"] == "config":
                        result.refused[index] = "a route of the config file ([[routes]]); change it there"
                    elif refusal(row["status"]) is not None:
                        result.refused[index] = refusal(row["status"])
                    elif row["status"] != "active":
                        result.refused[index] = f"{row['status']}; not re-activated by an import"
                    elif all(row[name] == values[name] for name in SETTINGS):
                        result.unchanged += 1
                    else:
                        changes.append({"row_id": row["id"], **{f"new_{name}": values[name] for name in SETTINGS}})
                result.added, result.updated = len(additions), len(changes)
                if not commit or (result.refused and not skip_refused):
                    transaction.rollback()
                    return result
                if additions:
                    conn.execute(insert(subscribers), additions)
                if changes:
                    conn.execute(update(subscribers)
                                 .where(subscribers.c.id == bindparam("row_id"), subscribers.c.status == "active")
                                 .values(**{name: bindparam(f"new_{name}") for name in SETTINGS}), changes)
                transaction.commit()
                result.committed = True
                return result
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise

    def sync_routes(self, routes: list[dict], now: datetime | None = None) -> None:
        """The config's [[routes]] become these subscribers: each entry (`email` and the settings
        of `add_subscriber`) added, or updated in place (an existing subscriber of that address
        is taken over by the config); routes no longer in the config are removed, with what
        was queued for them cancelled. A route keeps its status: one suppressed stays so."""
        now = now or utc_now()
        wanted = {entry["email"].lower(): entry for entry in routes}
        with self.engine.begin() as conn:
            current = last_seq(conn)
            # Only the rows that are or become routes: not every subscriber, at every start.
            rows = {row["email"].lower(): row for row in conn.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.origin).where(
                    or_(subscribers.c.origin == "config", func.lower(subscribers.c.email).in_(list(wanted))))).mappings()}
            for key, entry in wanted.items():
                values = {"cadence": entry["cadence"], "send_time": entry["send_time"], "timezone": entry["timezone"],
                          "weekday": entry.get("weekday"),
                          "sources": json.dumps(entry["sources"]) if entry.get("sources") else None,
                          "filters": filters_value(entry.get("include"), entry.get("exclude")),
                          "lang": entry.get("lang") or "en", "origin": "config"}
                if key in rows:
                    conn.execute(update(subscribers).where(subscribers.c.id == rows[key]["id"]).values(**values))
                else:
                    conn.execute(insert(subscribers).values(email=entry["email"], status="active", cursor=current,
                                                            created_at=now, subscribed_at=now, **values))
            gone = [row["id"] for key, row in rows.items() if row["origin"] == "config" and key not in wanted]
            if gone:
                conn.execute(update(outbox).where(outbox.c.subscriber_id.in_(gone), outbox.c.status == "pending")
                             .values(status="cancelled", claimed_until=None, last_error="route removed from the config"))
                conn.execute(delete(subscribers).where(subscribers.c.id.in_(gone)))

    def remove_subscriber(self, email: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(subscribers).where(func.lower(subscribers.c.email) == email.lower())).rowcount > 0

    def unsubscribe(self, subscriber_id: int) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status == "active")
                                   .values(status="unsubscribed", unsubscribed_at=utc_now())).rowcount
            # Nothing queued for them goes out any more.
            conn.execute(update(outbox).where(outbox.c.subscriber_id == subscriber_id, outbox.c.status == "pending")
                         .values(status="cancelled", last_error="unsubscribed"))
            return changed > 0

    def record_bounce(self, subscriber_id: int, error: str, now: datetime,
                      limit: int = DEFAULT_BOUNCE_LIMIT) -> Subscriber | None:
        """One more hard bounce in a row for the subscriber. The one that reaches `limit`
        suppresses them (with why and when) and cancels what is queued for them: the
        subscriber, when this bounce suppressed them; None otherwise."""
        with self.engine.begin() as conn:
            bounces = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                                   .values(bounces=subscribers.c.bounces + 1)
                                   .returning(subscribers.c.bounces, subscribers.c.status)).first()
            if bounces is None or bounces.status != "active" or not suppressed_by(bounces.bounces, limit):
                return None
            reason = suppression_reason(bounces.bounces, error)
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(
                status="suppressed", suppressed_reason=reason, suppressed_at=now))
            conn.execute(update(outbox).where(outbox.c.subscriber_id == subscriber_id, outbox.c.status == "pending")
                         .values(status="cancelled", claimed_until=None, last_error=f"suppressed: {reason}"[:1000]))
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
            return subscriber_from_row(row)

    def subscriber_counts(self) -> dict[str, int]:
        """How many subscribers have each status (active, unsubscribed, suppressed)."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(subscribers.c.status, func.count()).group_by(subscribers.c.status)).all())

    def forget_subscriber(self, email: str, now: datetime | None = None) -> bool:
        """Erase the address (a data-protection request): its row and every message kept for it
        go; only the hash of the address stays, so that it is not subscribed again without the
        person's new consent. False when nothing was stored for it (the hash is kept anyway)."""
        now = now or utc_now()
        digest = address_hash(email)
        with self.engine.begin() as conn:
            ids = list(conn.execute(select(subscribers.c.id).where(func.lower(subscribers.c.email) == email.lower())).scalars())
            removed = conn.execute(delete(outbox).where(
                or_(outbox.c.subscriber_id.in_(ids), func.lower(outbox.c.to_addr) == email.lower()))).rowcount
            removed += conn.execute(delete(subscribers).where(subscribers.c.id.in_(ids))).rowcount
            if conn.execute(select(forgotten_addresses.c.address_hash)
                            .where(forgotten_addresses.c.address_hash == digest)).first() is None:
                conn.execute(insert(forgotten_addresses).values(address_hash=digest, forgotten_at=now))
            return removed > 0

    def is_forgotten(self, email: str) -> bool:
        with self.engine.connect() as conn:
            return is_forgotten(conn, email)

    def change_settings(self, subscriber_id: int, *, cadence: str, send_time: str, timezone: str,
                        weekday: int | None, sources: list[str] | None, lang: str | None = None) -> bool:
        """A subscriber's own change on the preferences page; only an active one's."""
        with self.engine.begin() as conn:
            return conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                          subscribers.c.status == "active").values(
                cadence=cadence, send_time=send_time, timezone=timezone, weekday=weekday,
                sources=json.dumps(sources) if sources else None, **({"lang": lang} if lang else {}))).rowcount > 0

    def list_subscribers(self, active_only: bool = False, status: str | None = None) -> list[Subscriber]:
        query = select(subscribers).order_by(subscribers.c.id)
        if active_only:
            status = "active"
        if status is not None:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as conn:
            return [subscriber_from_row(r) for r in conn.execute(query).mappings()]

    def get_subscriber(self, key: int | str) -> Subscriber | None:
        query = select(subscribers).where(subscribers.c.id == key if isinstance(key, int)
                                          else func.lower(subscribers.c.email) == key.lower())
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return subscriber_from_row(row) if row else None

    def immediate_subscribers_behind(self) -> list[int]:
        """Active immediate subscribers whose cursor is before the newest published event,
        wherever it was published from (a CLI check, a release, a confirmed held edit)."""
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(events.c.seq)).where(events.c.status == "published")).scalar()
            if newest is None:
                return []
            return list(conn.execute(select(subscribers.c.id).where(
                subscribers.c.status == "active", subscribers.c.cadence == "immediate", subscribers.c.cursor < newest)
                .order_by(subscribers.c.id)).scalars())

    def suppressions(self, limit: int = 500) -> dict:
        """For the console's bounces page: the suppressed subscribers (newest suppression first),
        the active ones with hard bounces in a row (not suppressed yet), and the suppression list
        of erased addresses (only their hashes are kept): how many, and the newest erasure."""
        with self.engine.connect() as conn:
            suppressed = conn.execute(select(subscribers).where(subscribers.c.status == "suppressed")
                                      .order_by(subscribers.c.suppressed_at.desc(), subscribers.c.id.desc())
                                      .limit(limit)).mappings().all()
            bouncing = conn.execute(select(subscribers).where(subscribers.c.status == "active", subscribers.c.bounces > 0)
                                    .order_by(subscribers.c.bounces.desc(), subscribers.c.id).limit(limit)).mappings().all()
            count, newest = conn.execute(select(func.count(), func.max(forgotten_addresses.c.forgotten_at))
                                         .select_from(forgotten_addresses)).one()
        return {"suppressed": [subscriber_from_row(r) for r in suppressed],
                "bouncing": [subscriber_from_row(r) for r in bouncing],
                "forgotten": count, "forgotten_newest": as_utc(newest) if newest else None}

    def search_subscribers(self, text: str = "", status: str | None = None, limit: int = 200) -> list[Subscriber]:
        """Subscribers whose address contains `text` (any case), newest first."""
        query = select(subscribers).order_by(subscribers.c.id.desc()).limit(limit)
        if text:
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(func.lower(subscribers.c.email).like(pattern, escape="\\"))
        if status:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as conn:
            return [subscriber_from_row(r) for r in conn.execute(query).mappings()]

    def suppress_subscriber(self, subscriber_id: int, reason: str, now: datetime | None = None) -> bool:
        """The operator suppresses an active or pending subscriber (a complaint, a known-bad
        address): nothing more is sent, and what is queued for them is cancelled. Only the
        person's new consent (`subscribers add --resubscribe`) undoes it."""
        now = now or utc_now()
        with self.engine.begin() as conn:
            changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                             subscribers.c.status.in_(("active", "pending")))
                                   .values(status="suppressed", suppressed_reason=reason[:200], suppressed_at=now)).rowcount
            if changed:
                conn.execute(update(outbox).where(outbox.c.subscriber_id == subscriber_id, outbox.c.status == "pending")
                             .values(status="cancelled", claimed_until=None, last_error=f"suppressed: {reason}"[:1000]))
            return changed > 0
