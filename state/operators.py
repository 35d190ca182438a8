"""Operators of the console (postwatch/console): their accounts, server-side sessions and the
audit log, and the failed sign-ins the throttle counts (stored, so a restart forgives none). Passwords arrive here already hashed (Argon2id, postwatch/console/auth.py) and session
ids as their sha256: the database never holds a password or a usable session id."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, or_, select, update

from state.database import Database, as_utc, utc_now
from state.schema import audit_log, login_failures, operator_sessions, operators

ROLES = ("admin", "viewer")


@dataclass
class Operator:
    id: int
    name: str
    role: str
    password_hash: str
    created_at: datetime
    password_changed_at: datetime
    last_sign_in_at: datetime | None = None


@dataclass
class OperatorSession:
    operator: Operator
    csrf: str
    created_at: datetime
    last_seen_at: datetime


@dataclass
class AuditEntry:
    at: datetime
    operator: str | None
    action: str
    target: str | None
    detail: str | None
    client: str | None


def _operator(row) -> Operator:
    return Operator(id=row["id"], name=row["name"], role=row["role"], password_hash=row["password_hash"],
                    created_at=as_utc(row["created_at"]), password_changed_at=as_utc(row["password_changed_at"]),
                    last_sign_in_at=as_utc(row["last_sign_in_at"]))


class OperatorStorage(Database):
    # -- accounts ------------------------------------------------------------------------------
    def add_operator(self, name: str, role: str, password_hash: str, now: datetime | None = None) -> bool:
        """False when an operator of that name exists already."""
        if role not in ROLES:
            raise ValueError(f"role must be {' or '.join(ROLES)}, not {role!r}")
        now = now or utc_now()
        with self.engine.begin() as conn:
            if conn.execute(select(operators.c.id).where(operators.c.name == name)).first() is not None:
                return False
            conn.execute(insert(operators).values(name=name, role=role, password_hash=password_hash, created_at=now,
                                                  password_changed_at=now))
            return True

    def get_operator(self, name: str) -> Operator | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(operators).where(operators.c.name == name)).mappings().first()
            return _operator(row) if row else None

    def list_operators(self) -> list[Operator]:
        with self.engine.connect() as conn:
            return [_operator(r) for r in conn.execute(select(operators).order_by(operators.c.name)).mappings()]

    def remove_operator(self, name: str) -> bool:
        """The account and its sessions go (signed out everywhere)."""
        with self.engine.begin() as conn:
            ids = list(conn.execute(select(operators.c.id).where(operators.c.name == name)).scalars())
            conn.execute(delete(operator_sessions).where(operator_sessions.c.operator_id.in_(ids)))
            return conn.execute(delete(operators).where(operators.c.id.in_(ids))).rowcount > 0

    def set_operator_password(self, name: str, password_hash: str, now: datetime | None = None) -> bool:
        """A new password signs the operator out everywhere."""
        now = now or utc_now()
        with self.engine.begin() as conn:
            ids = list(conn.execute(select(operators.c.id).where(operators.c.name == name)).scalars())
            conn.execute(delete(operator_sessions).where(operator_sessions.c.operator_id.in_(ids)))
            return conn.execute(update(operators).where(operators.c.id.in_(ids)).values(
                password_hash=password_hash, password_changed_at=now)).rowcount > 0

    def rehash_operator_password(self, operator_id: int, password_hash: str) -> None:
        """The same password under newer Argon2 parameters (no sign-out)."""
        with self.engine.begin() as conn:
            conn.execute(update(operators).where(operators.c.id == operator_id).values(password_hash=password_hash))

    # -- sessions ------------------------------------------------------------------------------
    def start_session(self, operator_id: int, id_hash: str, csrf: str, client: str | None,
                      now: datetime | None = None) -> None:
        now = now or utc_now()
        with self.engine.begin() as conn:
            conn.execute(insert(operator_sessions).values(id_hash=id_hash, operator_id=operator_id, csrf=csrf,
                                                          created_at=now, last_seen_at=now, client=(client or "")[:64]))
            conn.execute(update(operators).where(operators.c.id == operator_id).values(last_sign_in_at=now))

    def operator_session(self, id_hash: str, now: datetime, idle: timedelta, absolute: timedelta) -> OperatorSession | None:
        """The live session of that id hash, its last use moved to `now`; None when there is none
        or it has expired (idle longer than `idle`, or older than `absolute`: then it is deleted)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(operator_sessions, operators).join(
                operators, operators.c.id == operator_sessions.c.operator_id)
                .where(operator_sessions.c.id_hash == id_hash)).mappings().first()
            if row is None:
                return None
            created, seen = as_utc(row["created_at"]), as_utc(row["last_seen_at"])
            if now - seen > idle or now - created > absolute:
                conn.execute(delete(operator_sessions).where(operator_sessions.c.id_hash == id_hash))
                return None
            conn.execute(update(operator_sessions).where(operator_sessions.c.id_hash == id_hash).values(last_seen_at=now))
            return OperatorSession(operator=_operator({**row, "id": row["operator_id"]}), csrf=row["csrf"],
                                   created_at=created, last_seen_at=now)

    def end_session(self, id_hash: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(operator_sessions).where(operator_sessions.c.id_hash == id_hash)).rowcount > 0

    def prune_sessions(self, now: datetime, idle: timedelta, absolute: timedelta) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(operator_sessions).where(or_(
                operator_sessions.c.last_seen_at < now - idle, operator_sessions.c.created_at < now - absolute))).rowcount

    # -- the audit log -------------------------------------------------------------------------
    def audit(self, operator: str | None, action: str, target: str | None = None, detail: str | None = None,
              client: str | None = None, now: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(audit_log).values(at=now or utc_now(), operator=operator, action=action[:40],
                                                  target=target, detail=(detail or None) and detail[:2000],
                                                  client=(client or "")[:64] or None))

    def audit_entries(self, limit: int = 50, operator: str | None = None) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if operator:
            query = query.where(audit_log.c.operator == operator)
        with self.engine.connect() as conn:
            return [AuditEntry(at=as_utc(r["at"]), operator=r["operator"], action=r["action"], target=r["target"],
                               detail=r["detail"], client=r["client"]) for r in conn.execute(query).mappings()]

    # -- the sign-in throttle ------------------------------------------------------------------
    def sign_in_wait(self, keys: list[str], now: datetime, limit: int, window: timedelta) -> float:
        """Seconds until a sign-in under `keys` ("account:NAME", "client:ADDRESS") is allowed
        again: 0 while each key has fewer than `limit` failures in the last `window`; else until
        the oldest of its `limit` newest failures leaves the window (at least 1 s)."""
        wait = 0.0
        with self.engine.connect() as conn:
            for key in keys:
                recent = list(conn.execute(select(login_failures.c.at).where(
                    login_failures.c.key == key, login_failures.c.at > now - window)
                    .order_by(login_failures.c.at.desc()).limit(limit)).scalars())
                if len(recent) >= limit:
                    wait = max(wait, 1.0, (window - (now - as_utc(recent[-1]))).total_seconds())
        return wait

    def record_sign_in_failure(self, keys: list[str], now: datetime, window: timedelta) -> None:
        """One failed sign-in under each key; failures older than `window` are forgotten."""
        with self.engine.begin() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.at <= now - window))
            conn.execute(insert(login_failures), [{"key": key[:200], "at": now} for key in keys])

    def clear_sign_in_failures(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.key == key))
