"""Sources: the sites postwatch watches, as configured or added by hand, and how each is doing."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from state.database import Database, as_utc, utc_now
from state.events import held_events, publish_held
from state.records import SourceRecord, SourceStatus
from state.schema import edit_candidates, events, posts, sources


def source_row(conn: Connection, name: str):
    row = conn.execute(select(sources).where(sources.c.name == name)).mappings().first()
    if row is None:
        raise KeyError(f"no such source: {name}")
    return row


def update_source(conn: Connection, source_id: int, **values) -> None:
    conn.execute(update(sources).where(sources.c.id == source_id).values(**values))


def _source_values(record: SourceRecord) -> dict:
    return {"url": record.url, "kind": record.kind, "feed_url": record.feed_url, "sitemap_url": record.sitemap_url,
            "selectors": json.dumps(record.selectors or {}, sort_keys=True), "title": record.title,
            "origin": record.origin}


def _record(row) -> SourceRecord:
    return SourceRecord(name=row["name"], url=row["url"], kind=row["kind"], feed_url=row["feed_url"],
                        sitemap_url=row["sitemap_url"], selectors=json.loads(row["selectors"] or "{}"),
                        title=row["title"], origin=row["origin"], discovered_feed_url=row["discovered_feed_url"],
                        **_settings(row))


def _settings(row) -> dict:
    """A stored source's own interval and keyword filters (revision 0017)."""
    seconds = row["interval_seconds"]
    return {"interval": timedelta(seconds=seconds) if seconds is not None else None,
            "include": tuple(json.loads(row["include_terms"] or "[]")),
            "exclude": tuple(json.loads(row["exclude_terms"] or "[]"))}


class SourceStorage(Database):
    def sync_sources(self, records: Iterable[SourceRecord]) -> None:
        """The configured sources become these: new ones added, changed ones updated, ones no
        longer configured disabled (their history is kept). Sources added by hand stay.

        Only rows that differ are written: every process starts with this (a cluster worker
        restarted beside others), and rewriting each row would lock the sources the other
        workers' checks are recording, in another order (PostgreSQL: deadlock detected, and
        those checks' results lost)."""
        records = list(records)
        names = {r.name for r in records}
        with self.engine.begin() as conn:
            existing = {row.name: row._mapping for row in conn.execute(select(sources))}
            for record in sorted(records, key=lambda r: r.name):
                values = {**_source_values(record), "origin": "config", "enabled": True}
                row = existing.get(record.name)
                if row is None:
                    conn.execute(insert(sources).values(name=record.name, created_at=utc_now(), baseline_done=False,
                                                        consecutive_failures=0, degraded=False, **values))
                elif any(row[column] != value for column, value in values.items()):
                    # Another address or kind: the listing is read at the next check (and, at
                    # another address, the feed it advertises found again), not skipped on the
                    # strength of the old one.
                    reset = {"listing_read_at": None} if any(
                        row[column] != values[column] for column in ("url", "kind", "feed_url")) else {}
                    if row["url"] != values["url"]:
                        reset["discovered_feed_url"] = None
                    conn.execute(update(sources).where(sources.c.name == record.name).values(**values, **reset))
            for name, row in sorted(existing.items()):
                if row["origin"] == "config" and row["enabled"] and name not in names:
                    conn.execute(update(sources).where(sources.c.name == name).values(enabled=False))

    def add_source(self, record: SourceRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(sources).values(name=record.name, created_at=utc_now(), baseline_done=False, enabled=True,
                                                consecutive_failures=0, degraded=False, **_source_values(record)))

    def edit_source_settings(self, name: str, interval: timedelta | None, include: Iterable[str],
                             exclude: Iterable[str]) -> bool:
        """Set the check interval (None: [crawl] interval) and keyword filters of a source added
        with the CLI or the console. False: no such source, or a configured one (its settings are
        the config file's)."""
        include, exclude = list(include), list(exclude)
        with self.engine.begin() as conn:
            return conn.execute(update(sources).where(sources.c.name == name, sources.c.origin != "config",
                                                      sources.c.enabled.is_(True)).values(
                interval_seconds=interval.total_seconds() if interval is not None else None,
                include_terms=json.dumps(include) if include else None,
                exclude_terms=json.dumps(exclude) if exclude else None)).rowcount > 0

    def stored_source_settings(self) -> dict[str, dict]:
        """Name -> {"interval", "include", "exclude"} for each enabled source added with the CLI or
        the console that has one of them set."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources.c.name, sources.c.interval_seconds, sources.c.include_terms,
                                       sources.c.exclude_terms)
                                .where(sources.c.origin != "config", sources.c.enabled.is_(True))
                                .where((sources.c.interval_seconds.is_not(None)) | (sources.c.include_terms.is_not(None))
                                       | (sources.c.exclude_terms.is_not(None)))).mappings()
            return {row["name"]: _settings(row) for row in rows}

    def remove_source(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(sources).where(sources.c.name == name)).rowcount > 0

    def list_sources(self) -> list[SourceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources).where(sources.c.enabled.is_(True)).order_by(sources.c.id)).mappings()
            return [_record(r) for r in rows]

    def get_source(self, name: str) -> SourceRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name, sources.c.enabled.is_(True))).mappings().first()
            return _record(row) if row else None

    def mark_full_sweep(self, source: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(sources).where(sources.c.name == source).values(last_full_sweep_at=now))

    def record_quiet_checks(self, names: Iterable[str], now: datetime, listing_read: Iterable[str] = ()) -> None:
        """Checks that saw nothing new (their first URLs answered 304) of sources with nothing
        held (CrawlState.quiet): one transaction for all of them, as apply_check would leave them
        (`listing_read`: those of them whose listing answered too)."""
        names = list(names)
        if not names:
            return
        listing_read = [name for name in listing_read if name in set(names)]
        with self.engine.begin() as conn:
            conn.execute(update(sources).where(sources.c.name.in_(names)).values(
                last_check_at=now, last_success_at=now, last_error=None, consecutive_failures=0))
            if listing_read:
                conn.execute(update(sources).where(sources.c.name.in_(listing_read)).values(listing_read_at=now))

    def record_check_failure(self, source: str, error: str, now: datetime) -> int:
        """One more failed check in a row; how many there have been."""
        with self.engine.begin() as conn:
            src = source_row(conn, source)
            failures = (src["consecutive_failures"] or 0) + 1
            update_source(conn, src["id"], last_check_at=now, last_error=error[:1000], consecutive_failures=failures)
            return failures

    def release_source(self, name: str) -> int:
        """The operator's word that a held check was real: its events go out."""
        with self.engine.begin() as conn:
            src = source_row(conn, name)
            count = publish_held(conn, [e.id for e in held_events(conn, src["id"])])
            update_source(conn, src["id"], degraded=False, degraded_reason=None)
            return count

    def pause_source(self, name: str, paused: bool, now: datetime | None = None) -> bool:
        """Pause (no checks until resumed) or resume a source; False when there is no such source."""
        with self.engine.begin() as conn:
            return conn.execute(update(sources).where(sources.c.name == name, sources.c.enabled.is_(True)).values(
                paused_at=(now or utc_now()) if paused else None)).rowcount > 0

    def request_check(self, name: str, now: datetime | None = None) -> bool:
        """"Check now": the daemon's next sweep (and a cluster's next planning) takes the source."""
        now = now or utc_now()
        with self.engine.begin() as conn:
            return conn.execute(update(sources).where(sources.c.name == name, sources.c.enabled.is_(True)).values(
                check_requested_at=now, next_check_at=now)).rowcount > 0

    def source_status(self) -> list[SourceStatus]:
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(posts.c.source_id, func.count()).where(posts.c.status != "removed")
                                       .group_by(posts.c.source_id)).all())
            held = dict(conn.execute(select(events.c.source_id, func.count()).where(events.c.status == "held")
                                     .group_by(events.c.source_id)).all())
            volatile = dict(conn.execute(
                select(posts.c.source_id, func.count(func.distinct(posts.c.id)))
                .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
                .where(edit_candidates.c.volatile_since.is_not(None)).group_by(posts.c.source_id)).all())
            rows = conn.execute(select(sources).where(sources.c.enabled.is_(True)).order_by(sources.c.id)).mappings()
            return [SourceStatus(name=r["name"], url=r["url"], posts=counts.get(r["id"], 0),
                                 last_check_at=as_utc(r["last_check_at"]), last_success_at=as_utc(r["last_success_at"]),
                                 last_error=r["last_error"], consecutive_failures=r["consecutive_failures"],
                                 degraded=bool(r["degraded"]), degraded_reason=r["degraded_reason"],
                                 held_events=held.get(r["id"], 0), volatile_posts=volatile.get(r["id"], 0),
                                 paused_at=as_utc(r["paused_at"]), origin=r["origin"],
                                 check_requested_at=(lambda asked, last: asked if asked and (last is None or last <= asked)
                                                     else None)(as_utc(r["check_requested_at"]), as_utc(r["last_check_at"])))
                    for r in rows]
