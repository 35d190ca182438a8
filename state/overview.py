"""The console's reads across entities (issue 34): each post's kept versions and events, what
changed on a day and which messages carried it, and the cluster's workers with their heartbeats.
Read-only; every query bounded."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select, text

from state.cluster import ClusterStorage
from state.database import as_utc
from state.lease import LeaseStorage
from state.schema import daemon_lease, events, outbox, post_versions, posts, sources


@dataclass
class PostVersion:
    origin: str               # "page", "feed"
    content_hash: str
    title: str
    fetched_at: datetime
    reader: str | None


@dataclass
class PostEvent:
    seq: int | None
    kind: str
    status: str
    created_at: datetime
    version_hash: str | None


@dataclass
class PostHistory:
    url: str
    title: str
    status: str
    published_at: datetime | None
    first_seen_at: datetime
    content_hash: str | None
    versions: list[PostVersion] = field(default_factory=list)
    events: list[PostEvent] = field(default_factory=list)


@dataclass
class DayChange:
    seq: int | None
    source: str
    kind: str
    title: str
    url: str
    status: str               # published, held, dismissed
    created_at: datetime
    messages: dict[str, dict[str, int]] = field(default_factory=dict)    # channel -> status -> messages covering it


@dataclass
class Worker:
    id: int
    last_heartbeat: datetime
    silent_seconds: float
    jobs: list[str] = field(default_factory=list)    # what it is doing: "check link, news (host example.org)"


class OverviewStorage(ClusterStorage):
    def post_histories(self, source: str, limit: int = 30, versions_each: int = 10) -> list[PostHistory]:
        """The source's `limit` most recently seen-to-change posts, each with its newest kept
        versions (`versions_each`) and every event about it, newest first."""
        newest_version = (select(post_versions.c.post_id, func.max(post_versions.c.id).label("newest"))
                          .group_by(post_versions.c.post_id).subquery())
        query = (select(posts).join(sources, sources.c.id == posts.c.source_id)
                 .outerjoin(newest_version, newest_version.c.post_id == posts.c.id)
                 .where(sources.c.name == source)
                 .order_by(func.coalesce(newest_version.c.newest, 0).desc(), posts.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            histories = {r["id"]: PostHistory(url=r["url"], title=r["title"], status=r["status"],
                                              published_at=as_utc(r["published_at"]),
                                              first_seen_at=as_utc(r["first_seen_at"]), content_hash=r["content_hash"])
                         for r in conn.execute(query).mappings()}
            ids = list(histories)
            for r in conn.execute(select(post_versions.c.post_id, post_versions.c.origin, post_versions.c.content_hash,
                                         post_versions.c.title, post_versions.c.fetched_at, post_versions.c.reader)
                                  .where(post_versions.c.post_id.in_(ids)).order_by(post_versions.c.id.desc())):
                kept = histories[r.post_id].versions
                if len(kept) < versions_each:
                    kept.append(PostVersion(r.origin, r.content_hash, r.title, as_utc(r.fetched_at), r.reader))
            for r in conn.execute(select(events.c.post_id, events.c.seq, events.c.kind, events.c.status,
                                         events.c.created_at, events.c.version_hash)
                                  .where(events.c.post_id.in_(ids)).order_by(events.c.id.desc())):
                histories[r.post_id].events.append(PostEvent(r.seq, r.kind, r.status, as_utc(r.created_at), r.version_hash))
        return list(histories.values())

    def changes_since(self, since: datetime, limit: int = 100) -> tuple[list[DayChange], int]:
        """The events created since `since` (newest first, at most `limit`) with, for each, the
        messages whose range of events covers it by channel and status; and how many there were
        in all. A message covers an event's seq; the subscriber's filters may still have left
        the event out of it."""
        query = (select(events.c.seq, sources.c.name, events.c.kind, events.c.title, events.c.url, events.c.status,
                        events.c.created_at).join(sources, sources.c.id == events.c.source_id)
                 .where(events.c.created_at >= since).order_by(events.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(events).where(events.c.created_at >= since)).scalar()
            changes = [DayChange(r.seq, r.name, r.kind, r.title, r.url, r.status, as_utc(r.created_at))
                       for r in conn.execute(query)]
            seqs = [c.seq for c in changes if c.seq is not None]
            if seqs:
                by_seq = {c.seq: c for c in changes if c.seq is not None}
                covering = (select(events.c.seq, outbox.c.channel, outbox.c.status, outbox.c.attempts, func.count())
                            .join(outbox, and_(outbox.c.first_seq <= events.c.seq, outbox.c.last_seq >= events.c.seq))
                            .where(events.c.seq.in_(seqs))
                            .group_by(events.c.seq, outbox.c.channel, outbox.c.status, outbox.c.attempts))
                for seq, channel, status, attempts, count in conn.execute(covering):
                    status = "retrying" if status == "pending" and attempts else status
                    counts = by_seq[seq].messages.setdefault(channel, {})
                    counts[status] = counts.get(status, 0) + count
        return changes, total

    def daemon_holder(self) -> dict | None:
        """The `postwatch run` daemon holding a PostgreSQL database's lease (host, pid, renewed_at,
        `remaining` seconds by the database's clock); None on SQLite or when none holds it.
        Read on the store's own connections: the lease's single connection is for its renewals."""
        if self.is_sqlite:
            return None
        query = select(daemon_lease.c.host, daemon_lease.c.pid, daemon_lease.c.renewed_at,
                       func.extract("epoch", daemon_lease.c.expires_at - func.now()).label("remaining"))
        with self.engine.connect() as conn:
            row = conn.execute(query.where(daemon_lease.c.name == LeaseStorage.LEASE_NAME)).mappings().first()
        return None if row is None else {**row, "renewed_at": as_utc(row["renewed_at"]), "remaining": float(row["remaining"])}

    def cluster_workers(self, limit: int = 50) -> list[Worker] | None:
        """The workers of the cluster's job queue (PostgreSQL with `postwatch worker`), the most
        recent heartbeat first, with the jobs each is doing; None without a job queue."""
        if self.is_sqlite or not self.job_queue_installed():
            return None
        workers: dict[int, Worker] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(text(
                    "SELECT w.id, w.last_heartbeat, EXTRACT(EPOCH FROM NOW() - w.last_heartbeat) AS silent, "
                    "j.task_name, j.args FROM procrastinate_workers w "
                    "LEFT JOIN procrastinate_jobs j ON j.worker_id = w.id AND j.status = 'doing' "
                    "ORDER BY w.last_heartbeat DESC, w.id LIMIT :n"), {"n": limit}):
                worker = workers.setdefault(r.id, Worker(r.id, as_utc(r.last_heartbeat), float(r.silent)))
                if r.task_name:
                    worker.jobs.append(_job_line(r.task_name, r.args or {}))
        return list(workers.values())


def _job_line(task: str, args: dict) -> str:
    what = task.rsplit(".", 1)[-1].replace("_", " ")
    if args.get("sources"):
        return f"{what}: {', '.join(args['sources'])}" + (f" (host {args['host']})" if args.get("host") else "")
    return what
