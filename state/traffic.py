"""What the checks cost the watched sites, for the console (issue 34): requests, body bytes and
304s per source and UTC day, and each source's last check with its requests (URL, status,
bytes), kept bounded: one row per source and day (35 days), one row per source for the last check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, insert, select, update

from state.database import Database, as_utc
from state.records import MAX_EXCHANGES, CheckTraffic, Exchange
from state.schema import source_last_check, source_traffic, sources

KEEP_DAYS = 35


@dataclass
class LastCheck:
    checked_at: datetime
    ok: bool
    requests: int
    response_bytes: int
    not_modified: int
    exchanges: list[Exchange]
    failing_since: datetime | None


@dataclass
class DayTraffic:
    checks: int = 0
    failed_checks: int = 0
    requests: int = 0
    response_bytes: int = 0
    not_modified: int = 0


def utc_day(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).date().isoformat()


class TrafficStorage(Database):
    def record_check_traffic(self, source: str, traffic: CheckTraffic, now: datetime) -> None:
        """Add one check to its source's day, and keep it as the source's last check (with when
        the current run of failed checks began)."""
        day = utc_day(now)
        with self.engine.begin() as conn:
            source_id = conn.execute(select(sources.c.id).where(sources.c.name == source)).scalar()
            if source_id is None:
                return
            self._add_to_day(conn, source_id, day, traffic)
            conn.execute(delete(source_traffic).where(source_traffic.c.source_id == source_id,
                                                      source_traffic.c.day < utc_day(now - timedelta(days=KEEP_DAYS))))
            before = conn.execute(select(source_last_check.c.ok, source_last_check.c.failing_since)
                                  .where(source_last_check.c.source_id == source_id)).first()
            failing_since = None
            if not traffic.ok:
                failing_since = as_utc(before.failing_since) if before is not None and not before.ok else now
            exchanges = json.dumps([[e.url, e.status, e.size, e.error] for e in traffic.exchanges[:MAX_EXCHANGES]])
            values = dict(checked_at=now, ok=traffic.ok, requests=traffic.requests, response_bytes=traffic.response_bytes,
                          not_modified=traffic.not_modified, exchanges=exchanges, failing_since=failing_since)
            if before is None:
                conn.execute(insert(source_last_check).values(source_id=source_id, **values))
            else:
                conn.execute(update(source_last_check).where(source_last_check.c.source_id == source_id).values(**values))

    @staticmethod
    def _add_to_day(conn, source_id: int, day: str, traffic: CheckTraffic) -> None:
        counts = dict(checks=1, failed_checks=0 if traffic.ok else 1, requests=traffic.requests,
                      response_bytes=traffic.response_bytes, not_modified=traffic.not_modified)
        row = (source_traffic.c.source_id == source_id) & (source_traffic.c.day == day)
        added = conn.execute(update(source_traffic).where(row).values(
            **{key: getattr(source_traffic.c, key) + value for key, value in counts.items()})).rowcount
        if not added:
            conn.execute(insert(source_traffic).values(source_id=source_id, day=day, **counts))

    def traffic_on(self, day: str) -> dict[str, DayTraffic]:
        """Each source's checks and requests on one UTC day (YYYY-MM-DD); a source not checked
        that day is absent."""
        query = select(sources.c.name, source_traffic).join(sources, sources.c.id == source_traffic.c.source_id) \
            .where(source_traffic.c.day == day)
        with self.engine.connect() as conn:
            return {r["name"]: DayTraffic(checks=r["checks"], failed_checks=r["failed_checks"], requests=r["requests"],
                                          response_bytes=r["response_bytes"], not_modified=r["not_modified"])
                    for r in conn.execute(query).mappings()}

    def recorded_checks(self, source: str | None = None) -> dict[str, LastCheck]:
        """The last recorded check of each source (or of one)."""
        query = select(sources.c.name, source_last_check).join(sources, sources.c.id == source_last_check.c.source_id)
        if source is not None:
            query = query.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return {r["name"]: LastCheck(
                checked_at=as_utc(r["checked_at"]), ok=r["ok"], requests=r["requests"],
                response_bytes=r["response_bytes"], not_modified=r["not_modified"],
                exchanges=[Exchange(url, status, size, error) for url, status, size, error in json.loads(r["exchanges"])],
                failing_since=as_utc(r["failing_since"])) for r in conn.execute(query).mappings()}
