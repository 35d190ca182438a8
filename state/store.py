"""The Store: postwatch's stored state, one storage class per entity (each owning its SQL),
composed the way Miniflux's storage is. SQLite by default, PostgreSQL by URL.

- state.database   the engine, the URL rewrite, the schema revision
- state.sources    the watched sites
- state.posts      posts, kept versions, pending edits; applying a check
- state.events     what subscribers hear of, held or published
- state.subscribers, state.signups (the /subscribe page's pending signups), state.outbox,
  state.lease (one daemon per database), state.cluster (`postwatch worker`'s queue and planning),
  state.operators (the console's operators, sessions, audit log and sign-in throttle),
  state.traffic (what checks cost the sites), state.overview (the console's other reads)
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, update

from state.accepted import AcceptedJournal
from state.cluster import ClusterStorage
from state.changes import VOLATILE_AFTER, RevisitSchedule
from state.database import as_utc, sqlite_path
from state.events import EventStorage, last_seq
from state.lease import LeaseStorage
from state.operators import OperatorStorage
from state.outbox import OutboxStorage
from state.overview import OverviewStorage
from state.posts import PostStorage
from state.signups import SignupStorage
from state.schema import alerts, events, outbox, post_versions, subscribers
from state.sources import SourceStorage
from state.traffic import TrafficStorage
from state.subscribers import SubscriberStorage


class Store(SourceStorage, PostStorage, EventStorage, SubscriberStorage, SignupStorage, OutboxStorage, LeaseStorage,
            OverviewStorage, ClusterStorage, OperatorStorage, TrafficStorage):
    """State of every source, post, event, subscriber and queued message (see Database for
    `url`, `migrate`, `connect_args` and `read_only`). The rest are the store's policies: how
    long a post must stay missing to be removed, the share of known posts a check may change
    before it is held, how long a sender's lease lasts, how many different contents in a row
    make a post volatile."""

    def __init__(self, url: str, *, removal_confirm_after: timedelta = timedelta(hours=1),
                 flood_share: float = 0.30, send_lease: timedelta = timedelta(minutes=5),
                 migrate: bool = True, connect_args: dict | None = None, read_only: bool = False,
                 volatile_after: int = VOLATILE_AFTER, revisit: RevisitSchedule = RevisitSchedule()):
        self.removal_confirm_after = removal_confirm_after
        self.flood_share = flood_share
        self.send_lease = send_lease
        self.volatile_after = volatile_after
        self.revisit = revisit
        super().__init__(url, connect_args=connect_args, migrate=migrate, read_only=read_only)
        path = sqlite_path(self.url)
        self.accepted = AcceptedJournal(f"{path}.accepted") if path and path != ":memory:" else None
        self.open_notes()

    # -- across entities -----------------------------------------------------------------------
    def alert_due(self, key: str, now: datetime, every: timedelta = timedelta(days=1)) -> bool:
        """Whether the operator should be told of `key` now: at most once per `every`."""
        with self.engine.begin() as conn:
            last = as_utc(conn.execute(select(alerts.c.last_sent_at).where(alerts.c.key == key)).scalar())
            if last is not None and now - last < every:
                conn.execute(update(alerts).where(alerts.c.key == key).values(count=alerts.c.count + 1))
                return False
            if last is None:
                conn.execute(insert(alerts).values(key=key, last_sent_at=now, count=1))
            else:
                conn.execute(update(alerts).where(alerts.c.key == key).values(last_sent_at=now, count=1))
            return True

    def prune(self, now: datetime, older_than: timedelta) -> dict[str, int]:
        """Forget what is older than `older_than` and no longer needed: events every subscriber
        has had (or dismissed ones), versions that are not the latest, finished messages."""
        cutoff = now - older_than
        with self.engine.begin() as conn:
            slowest = conn.execute(select(func.min(subscribers.c.cursor)).where(subscribers.c.status == "active")).scalar()
            delivered = events.c.seq <= (slowest if slowest is not None else last_seq(conn))
            removed_events = conn.execute(delete(events).where(events.c.created_at < cutoff, or_(
                and_(events.c.status == "published", delivered), events.c.status == "dismissed"))).rowcount
            latest = (select(func.max(post_versions.c.id)).group_by(post_versions.c.post_id, post_versions.c.origin))
            removed_versions = conn.execute(delete(post_versions).where(
                post_versions.c.fetched_at < cutoff, post_versions.c.id.not_in(latest.scalar_subquery()))).rowcount
            removed_messages = conn.execute(delete(outbox).where(
                outbox.c.created_at < cutoff, outbox.c.status.in_(("sent", "failed", "cancelled")))).rowcount
        return {"events": removed_events, "versions": removed_versions, "messages": removed_messages}
