"""Posts, their kept versions and pending edits: what a crawl needs to know before it starts
(`crawl_state`), and what a check observed (`apply_check`). Which changes happened is decided
in one pure step (state.judge, from the rules in state.changes): this module loads what it
judges and saves its decision."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from state.changes import Candidate, RevisitCutoffs, RevisitSchedule, Seen, Verdict, revisit_cutoffs
from state.database import Database, as_utc, utc_now
from state.events import dismiss_events, publish_held, store_events
from state.judge import (CheckDecision, CheckPolicy, EditWatch, KeptVersion, StoredHeld, StoredPost, StoredSource,
                         judge_check)
from state.records import ApplyResult, CrawlState, KnownPost, ObservedCheck
from state.schema import edit_candidates, events, http_validators, post_versions, posts, robots_cache, sources
from state.sources import source_row, update_source


class PostStorage(Database):
    removal_confirm_after: timedelta
    flood_share: float
    volatile_after: int
    revisit: RevisitSchedule

    # -- before a crawl ----------------------------------------------------------------------
    def crawl_state(self, source: str) -> CrawlState:
        return self.crawl_states([source])[source]

    def crawl_states(self, names: Iterable[str], *, posts_too: bool = True,
                     now: datetime | None = None) -> dict[str, CrawlState]:
        """What the crawls of a sweep need to know, for every named source at once (a query per
        table, not per source). Without `posts_too`, only what decides whether a check can end
        with its first conditional GETs: no known posts, and the validators and robots.txt of
        the sources' listing and feed URLs only."""
        names = list(dict.fromkeys(names))
        now = now or utc_now()
        with self.engine.connect() as conn:
            rows = {r["id"]: r for r in conn.execute(select(sources).where(sources.c.name.in_(names))).mappings()}
            missing = set(names) - {r["name"] for r in rows.values()}
            if missing:
                raise KeyError(f"no such source: {', '.join(sorted(missing))}")
            ids = list(rows)
            first_urls = {url for r in rows.values() for url in _first_urls(r) if url}
            known: dict[int, dict[str, KnownPost]] = {i: {} for i in ids}
            if posts_too:
                for r in conn.execute(select(posts.c.source_id, posts.c.url, posts.c.title, posts.c.content_hash,
                                             posts.c.status, posts.c.published_at).where(posts.c.source_id.in_(ids))):
                    known[r.source_id][r.url] = KnownPost(r.url, r.title, r.content_hash, r.status,
                                                          as_utc(r.published_at))
            query = select(http_validators).where(http_validators.c.source_id.in_(ids))
            if not posts_too:      # and the last failure of the feed (crawler.plan.feed_failed_key)
                query = query.where(http_validators.c.url.in_(
                    first_urls | {FEED_FAILED_PREFIX + (r["feed_url"] or r["discovered_feed_url"])
                                  for r in rows.values() if r["feed_url"] or r["discovered_feed_url"]}))
            validators: dict[int, dict] = {i: {} for i in ids}
            for r in conn.execute(query):
                validators[r.source_id][r.url] = (r.etag, r.last_modified)
            origins = {_origin(url) for url in first_urls}
            if posts_too:
                origins |= {_origin(url) for urls in known.values() for url in urls}
            robots = {r.origin: (bytes(r.body), as_utc(r.fetched_at))
                      for r in conn.execute(select(robots_cache).where(robots_cache.c.origin.in_(origins)))}
            awaiting = _awaiting_confirmation(conn, ids)
            volatile: dict[int, set[str]] = {i: set() for i in ids}
            for source_id, url in conn.execute(
                    select(posts.c.source_id, posts.c.url)
                    .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
                    .where(posts.c.source_id.in_(ids), posts.c.status != "removed", edit_candidates.c.origin == "page",
                           edit_candidates.c.volatile_since.is_not(None))):
                volatile[source_id].add(url)
            holding = set(conn.execute(select(events.c.source_id).where(
                events.c.source_id.in_(ids), events.c.status == "held").distinct()).scalars())
            revisits = _revisits_due(conn, ids, revisit_cutoffs(now, self.revisit), self.revisit.per_check)
            removals: dict[int, list[str]] = {}
            for source_id, url in conn.execute(select(posts.c.source_id, posts.c.url).where(
                    posts.c.source_id.in_(ids), posts.c.status == "gone_pending",
                    posts.c.gone_since <= now - self.removal_confirm_after)):
                removals.setdefault(source_id, []).append(url)
        return {r["name"]: CrawlState(bool(r["baseline_done"]), known[i], validators[i],
                                      {o: robots[o] for o in _origins_of(r, known[i]) if o in robots},
                                      as_utc(r["last_full_sweep_at"]), awaiting.get(i, {}), volatile[i],
                                      quiet=not r["degraded"] and i not in holding,
                                      revisits=revisits.get(i, []), removals_to_confirm=removals.get(i, []),
                                      failures=r["consecutive_failures"] or 0,
                                      listing_read_at=as_utc(r["listing_read_at"]))
                for i, r in rows.items()}

    def volatile_posts(self, source: str | None = None) -> list[tuple[str, str, datetime]]:
        """(source, URL, since) of the posts whose content changes on every fetch."""
        query = (select(sources.c.name, posts.c.url, func.min(edit_candidates.c.volatile_since))
                 .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id)
                              .join(sources, sources.c.id == posts.c.source_id))
                 .where(edit_candidates.c.volatile_since.is_not(None))
                 .group_by(sources.c.name, posts.c.url).order_by(sources.c.name, posts.c.url))
        if source:
            query = query.where(sources.c.name == source)
        with self.engine.connect() as conn:
            return [(name, url, as_utc(since)) for name, url, since in conn.execute(query)]

    # -- after a check -----------------------------------------------------------------------
    def apply_check(self, source: str, check: ObservedCheck, now: datetime) -> ApplyResult:
        """Save what a check observed and what it changed (state.judge decides that), in one
        transaction."""
        policy = CheckPolicy(self.removal_confirm_after, self.flood_share, self.volatile_after)
        with self.engine.begin() as conn:
            src = source_row(conn, source)
            _save_validators(conn, src["id"], check.validators, now)
            _save_robots(conn, check.robots)
            decision = judge_check(_stored_source(conn, src, check), check, policy, now)
            return _save_decision(conn, src["id"], source, decision, now)


def _awaiting_confirmation(conn: Connection, source_ids: list[int]) -> dict[int, dict[str, set[str]]]:
    """Per source, the posts whose next fetch decides something: a pending edit (not of a
    volatile post, which waits for the ordinary sweep) or a held "updated" event."""
    awaiting: dict[int, dict[str, set[str]]] = {}
    pending = (select(posts.c.source_id, posts.c.url, edit_candidates.c.origin)
               .select_from(edit_candidates.join(posts, posts.c.id == edit_candidates.c.post_id))
               .where(posts.c.source_id.in_(source_ids), posts.c.status != "removed",
                      edit_candidates.c.content_hash.is_not(None), edit_candidates.c.volatile_since.is_(None)))
    held = (select(events.c.source_id, posts.c.url, post_versions.c.origin)
            .select_from(events.join(posts, posts.c.id == events.c.post_id)
                         .join(post_versions, and_(post_versions.c.post_id == events.c.post_id,
                                                   post_versions.c.content_hash == events.c.version_hash)))
            .where(events.c.source_id.in_(source_ids), events.c.status == "held", events.c.kind == "updated",
                   posts.c.status != "removed"))
    for source_id, url, origin in [*conn.execute(pending), *conn.execute(held)]:
        awaiting.setdefault(source_id, {}).setdefault(url, set()).add(origin)
    return awaiting


def _revisits_due(conn: Connection, source_ids: list[int], cut: RevisitCutoffs, per_check: int) -> dict[int, list[str]]:
    """Per source, the known posts whose page the revisit schedule says to look at now, most
    overdue first, at most `per_check` (state.changes.RevisitCutoffs says when one is due)."""
    if per_check <= 0:
        return {}
    born = posts.c.published_at          # NULL for an undated post: its age is unknown, so weekly only
    checked = func.coalesce(posts.c.page_checked_at, posts.c.first_seen_at)
    due: dict[int, list[str]] = {}
    query = (select(posts.c.source_id, posts.c.url)
             .where(posts.c.source_id.in_(source_ids), posts.c.status != "removed",
                    or_(born > cut.recent, and_(born > cut.month, checked <= cut.day_ago), checked <= cut.older))
             .order_by(posts.c.source_id, checked))
    for source_id, url in conn.execute(query):
        urls = due.setdefault(source_id, [])
        if len(urls) < per_check:
            urls.append(url)
    return due


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# crawler.plan.FEED_FAILED_PREFIX (the state package imports nothing of the crawler): the key of a
# feed's last failure among a source's validators, which decides whether a check asks the feed.
FEED_FAILED_PREFIX = "postwatch:feed-failed:"


def _first_urls(source_row) -> tuple[str | None, ...]:
    """The URLs a check of the source may start with: its listing, the feed it reads (the
    configured one, or the one its listing advertised), and its sitemap (crawler.plan.sitemap_of)."""
    return source_row["url"], source_row["feed_url"] or source_row["discovered_feed_url"], source_row["sitemap_url"]


def _origins_of(source_row, known: dict[str, KnownPost]) -> set[str]:
    return {_origin(url) for url in (*_first_urls(source_row), *known) if url}


def _save_validators(conn: Connection, source_id: int, validators: dict, now: datetime) -> None:
    for url, (etag, last_modified) in validators.items():
        if len(url) > 2048:
            continue
        changed = conn.execute(update(http_validators).where(
            http_validators.c.source_id == source_id, http_validators.c.url == url).values(
            etag=etag, last_modified=last_modified, updated_at=now)).rowcount
        if not changed:
            conn.execute(insert(http_validators).values(source_id=source_id, url=url, etag=etag,
                                                        last_modified=last_modified, updated_at=now))


def _save_robots(conn: Connection, robots: dict) -> None:
    for origin, (body, fetched_at) in robots.items():
        if not conn.execute(update(robots_cache).where(robots_cache.c.origin == origin).values(
                body=body, fetched_at=fetched_at)).rowcount:
            conn.execute(insert(robots_cache).values(origin=origin, body=body, fetched_at=fetched_at))


# -- loading what a check is judged against, and saving the judgement ---------------------------
def _stored_source(conn: Connection, src, check: ObservedCheck) -> StoredSource:
    """What state.judge needs of a source: its posts; for those the check saw a body of, their
    latest versions and pending edits (every version, where an edit of theirs is held); its held
    events. A query per table, whatever the number of posts."""
    stored = {url: StoredPost(post_id, url, title, status, as_utc(gone_since), content_hash, as_utc(published_at))
              for post_id, url, title, status, gone_since, content_hash, published_at in conn.execute(
                  select(posts.c.id, posts.c.url, posts.c.title, posts.c.status, posts.c.gone_since,
                         posts.c.content_hash, posts.c.published_at).where(posts.c.source_id == src["id"]))}
    held = tuple(StoredHeld(r.id, r.kind, r.post_id, r.title, r.version_hash) for r in conn.execute(
        select(events.c.id, events.c.kind, events.c.post_id, events.c.title, events.c.version_hash)
        .where(events.c.source_id == src["id"], events.c.status == "held").order_by(events.c.id)))
    with_body = {stored[item.url].id: stored[item.url] for item in check.posts if item.body_html and item.url in stored}
    watches = _edit_watches(conn, list(with_body))
    held_edited = {h.post_id for h in held if h.kind == "updated"} & set(with_body)
    versions = _kept_versions(conn, list(with_body), held_edited, watches)
    for post_id, post in with_body.items():
        post.versions, post.watches = versions.get(post_id, ()), watches.get(post_id, {})
    return StoredSource(bool(src["baseline_done"]), src["kind"], src["discovered_feed_url"], stored, held)


def _chunks(ids: Iterable[int], size: int = 500) -> Iterable[list[int]]:
    """Ids a few hundred at a time: SQLite's and psycopg's parameter limits."""
    ids = sorted(set(ids))
    return (ids[start:start + size] for start in range(0, len(ids), size))


def _edit_watches(conn: Connection, post_ids: list[int]) -> dict[int, dict[str, EditWatch]]:
    watches: dict[int, dict[str, EditWatch]] = {}
    for chunk in _chunks(post_ids):
        for r in conn.execute(select(edit_candidates).where(edit_candidates.c.post_id.in_(chunk))).mappings():
            candidate = (Candidate(Seen(r["content_hash"], r["title"]), r["streak"], as_utc(r["first_seen_at"]))
                         if r["content_hash"] is not None else None)
            watches.setdefault(r["post_id"], {})[r["origin"]] = EditWatch(candidate, r["volatile_since"] is not None)
    return watches


def _kept_versions(conn: Connection, post_ids: list[int], every_version_of: set[int],
                   watches: dict[int, dict[str, EditWatch]]) -> dict[int, tuple[KeptVersion, ...]]:
    """Per post, its latest version of each origin; every version of the posts `every_version_of`.
    The text only of the versions an edit may be measured from now: those with a pending edit
    (every version of `every_version_of`)."""
    columns = (post_versions.c.id, post_versions.c.post_id, post_versions.c.origin, post_versions.c.content_hash,
               post_versions.c.title, post_versions.c.reader)
    found = []
    for chunk in _chunks(post_ids):
        latest = (select(func.max(post_versions.c.id)).where(post_versions.c.post_id.in_(chunk))
                  .group_by(post_versions.c.post_id, post_versions.c.origin))
        found += conn.execute(select(*columns).where(post_versions.c.id.in_(latest))).all()
    if every_version_of:
        found += conn.execute(select(*columns).where(post_versions.c.post_id.in_(sorted(every_version_of)))).all()
    wanted = {r.id for r in found if r.post_id in every_version_of
              or watches.get(r.post_id, {}).get(r.origin, EditWatch()).candidate is not None}
    texts = {}
    for chunk in _chunks(wanted):
        texts.update(conn.execute(select(post_versions.c.id, post_versions.c.text)
                                  .where(post_versions.c.id.in_(chunk))).all())
    versions: dict[int, dict[int, KeptVersion]] = {}
    for r in found:
        versions.setdefault(r.post_id, {})[r.id] = KeptVersion(r.id, r.origin, r.content_hash, r.title, r.reader,
                                                               texts.get(r.id))
    return {post_id: tuple(kept[i] for i in sorted(kept)) for post_id, kept in versions.items()}


def _save_decision(conn: Connection, source_id: int, source: str, decision: CheckDecision,
                   now: datetime) -> ApplyResult:
    new_ids = {new.url: conn.execute(insert(posts).values(
        source_id=source_id, url=new.url, title=new.title, published_at=new.published_at, first_seen_at=now,
        last_seen_at=now, status="active", content_hash=new.content_hash)).inserted_primary_key[0]
        for new in decision.new_posts}
    for post_id, values in decision.post_updates.items():
        conn.execute(update(posts).where(posts.c.id == post_id).values(**values))
    _save_versions(conn, decision, new_ids, now)
    for post_id, origin, verdict in decision.watches:
        _save_fetch_state(conn, post_id, origin, verdict, now)
    for urls, column in ((decision.seen_urls, "last_seen_at"), (decision.pages_checked, "page_checked_at")):
        if urls:
            conn.execute(update(posts).where(posts.c.source_id == source_id, posts.c.url.in_(urls))
                         .values({column: now}))
    dismiss_events(conn, decision.dismissed)
    update_source(conn, source_id, **decision.source_values)
    if decision.baseline:
        return ApplyResult([], False, None, True)
    drafts = [replace(d, post_id=new_ids[d.url]) if d.post_id is None else d for d in decision.events]
    created = store_events(conn, source_id, source, drafts, now, held=decision.hold_reason is not None)
    published = publish_held(conn, decision.published_held)
    return ApplyResult(created, decision.hold_reason is not None, decision.hold_reason, False,
                       became_volatile=decision.became_volatile, pending_edits=decision.pending_edits,
                       published_held=published)


def _save_versions(conn: Connection, decision: CheckDecision, new_ids: dict[str, int], now: datetime) -> None:
    if decision.versions_dropped:
        conn.execute(delete(post_versions).where(post_versions.c.id.in_(decision.versions_dropped)))
    if decision.versions_kept:
        conn.execute(insert(post_versions), [
            dict(post_id=new_ids[v.url] if v.post_id is None else v.post_id, origin=v.origin,
                 content_hash=v.content_hash, title=v.title, text=v.text, body_html=v.body_html, fetched_at=now,
                 reader=v.reader)
            for v in decision.versions_kept])
    for version_id, reader in decision.versions_retagged.items():
        conn.execute(update(post_versions).where(post_versions.c.id == version_id).values(reader=reader))


def _save_fetch_state(conn: Connection, post_id: int, origin: str, verdict: Verdict, now: datetime) -> None:
    where = and_(edit_candidates.c.post_id == post_id, edit_candidates.c.origin == origin)
    if verdict.candidate is None and not verdict.volatile:
        conn.execute(delete(edit_candidates).where(where))
        return
    candidate = verdict.candidate
    values = dict(content_hash=candidate.seen.content_hash if candidate else None,
                  title=candidate.seen.title if candidate else None, streak=candidate.streak if candidate else 0,
                  first_seen_at=candidate.first_seen_at if candidate else None, last_seen_at=now)
    if verdict.became_volatile:
        values["volatile_since"] = now
    if not conn.execute(update(edit_candidates).where(where).values(**values)).rowcount:
        conn.execute(insert(edit_candidates).values(post_id=post_id, origin=origin, **values))
