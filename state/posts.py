"""Posts, their kept versions and pending edits: what a crawl needs to know before it starts
(`crawl_state`), and what a check observed (`apply_check`). Which changes happened is decided
by the rules in state.changes; this module loads their records and saves their answers."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from state.changes import (BodyOutcome, RevisitCutoffs, RevisitSchedule, revisit_cutoffs, Candidate, EventDraft, FetchState, HeldOutcome, Observation, Outcome,
                           PostMove, Seen, StoredVersion, Verdict, back_online, cancel_reversals, edit_event, gone,
                           held_to_publish, hold_reason, judge_body, judge_fetch, judge_held_edit, new_post_event,
                           observe, reader_changed, richest_per_url, source_health, unknown_reader_is_other)
from state.database import Database, as_utc, utc_now
from state.events import (dismiss_events, held_edits, held_events, held_removals, publish_held,
                          store_events)
from state.records import ApplyResult, CrawlState, KnownPost, ObservedCheck
from state.schema import edit_candidates, events, http_validators, post_versions, posts, robots_cache, sources
from state.sources import source_row, update_source


@dataclass
class _CheckPass:
    """What one apply_check learns while it walks the observed posts."""
    held_edits: dict[int, list]                                   # post id -> held "updated" events not yet judged
    kind: str | None = None                                       # the source's kind (a kept body's unknown reader)
    confirmed_held: set[int] = field(default_factory=set)         # held edits whose content was seen again
    became_volatile: list[str] = field(default_factory=list)
    pending: int = 0


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
        with self.engine.begin() as conn:
            src = source_row(conn, source)
            source_id = src["id"]
            _save_validators(conn, source_id, check.validators, now)
            _save_robots(conn, check.robots)
            stored = {r.url: r for r in conn.execute(
                select(posts.c.id, posts.c.url, posts.c.title, posts.c.status, posts.c.gone_since, posts.c.content_hash,
                       posts.c.published_at).where(posts.c.source_id == source_id))}
            baseline = check.baseline or not src["baseline_done"]
            pass_ = _CheckPass(held_edits=held_edits(conn, source_id), kind=src["kind"])
            drafts: list[EventDraft] = []
            observed: set[str] = set()
            for item in richest_per_url(check.posts):
                observed.add(item.url)
                drafts += self._apply_post(conn, source_id, stored.get(item.url), observe(item), now, baseline, pass_)
            for url in check.unchanged_urls:
                row = stored.get(url)
                if row is not None:
                    drafts += _move(conn, row, back_online(row.status))
            for url in check.gone:
                row = stored.get(url)
                if row is not None:
                    drafts += _move(conn, row, gone(row.status, as_utc(row.gone_since), now, self.removal_confirm_after))
            if observed:
                conn.execute(update(posts).where(posts.c.source_id == source_id, posts.c.url.in_(observed))
                             .values(last_seen_at=now))
            pages = {item.url for item in check.posts if item.origin == "page"} | set(check.unchanged_urls) | set(check.gone)
            if pages:
                conn.execute(update(posts).where(posts.c.source_id == source_id, posts.c.url.in_(pages))
                             .values(page_checked_at=now))
            if check.discovered_feed and check.discovered_feed != src["discovered_feed_url"]:
                update_source(conn, source_id, discovered_feed_url=check.discovered_feed)

            source_values: dict[str, Any] = {"last_check_at": now, "last_success_at": now, "last_error": None,
                                             "consecutive_failures": 0}
            if getattr(check, "listing_read", False):
                source_values["listing_read_at"] = now
            if baseline:
                update_source(conn, source_id, baseline_done=True, **source_values)
                return ApplyResult([], False, None, True)

            known_count = sum(1 for r in stored.values() if r.status != "removed")
            drafts, reversed_removals = cancel_reversals(drafts, held_removals(conn, source_id))
            dismiss_events(conn, reversed_removals)
            reason = hold_reason(changes=len(drafts), known=known_count, flood_share=self.flood_share,
                                 saw_anything=bool(check.posts or check.not_modified or check.unchanged_urls or check.gone))
            created = store_events(conn, source_id, source, drafts, now, held=reason is not None)
            published = still_held = 0
            if reason is None:
                held = held_events(conn, source_id)
                published = publish_held(conn, held_to_publish(held, pass_.confirmed_held))
                still_held = len(held) - published
            health = source_health(reason, published, still_held)
            if health is not None:
                source_values.update(degraded=health[0], degraded_reason=health[1])
            update_source(conn, source_id, **source_values)
            return ApplyResult(created, reason is not None, reason, False, became_volatile=pass_.became_volatile,
                               pending_edits=pass_.pending, published_held=published)

    def _apply_post(self, conn: Connection, source_id: int, row, observation: Observation, now: datetime,
                    baseline: bool, pass_: _CheckPass) -> list[EventDraft]:
        item, seen = observation.item, observation.seen
        if row is None:
            post_id = conn.execute(insert(posts).values(
                source_id=source_id, url=item.url, title=observation.title, published_at=item.published,
                first_seen_at=now, last_seen_at=now, status="active",
                content_hash=seen.content_hash if seen else None)).inserted_primary_key[0]
            if seen:
                _insert_version(conn, post_id, observation, now)
            return [] if baseline else [new_post_event(post_id, observation, now)]
        drafts = _move(conn, row, back_online(row.status, item.origin), observation)
        values: dict[str, Any] = {}
        if item.published and not row.published_at:
            values["published_at"] = item.published
        if seen is not None:
            unknown_is_other = unknown_reader_is_other(pass_.kind, item.origin)
            _judge_held_edits(conn, row.id, item.origin, seen, pass_, observation.reader, unknown_is_other)
            previous = _latest_version(conn, row.id, item.origin)
            kept = Seen(previous.content_hash, previous.title) if previous is not None else None
            reread = previous is not None and reader_changed(previous.reader, observation.reader,
                                                             unknown_is_other=unknown_is_other)
            verdict: Verdict | None = None      # the baseline records what is there: no candidates, no events
            if not baseline:
                verdict = judge_fetch(_fetch_state(conn, row.id, item.origin, kept), seen, now, self.volatile_after,
                                      reread=reread)
                _save_fetch_state(conn, row.id, item.origin, verdict, now)
                if verdict.became_volatile:
                    pass_.became_volatile.append(row.url)
                if verdict.candidate is not None and not verdict.volatile:
                    pass_.pending += 1
            retag = previous is not None and observation.reader is not None and previous.reader != observation.reader
            outcome = judge_body(kept, seen, verdict, retag=retag)
            if outcome is BodyOutcome.EDIT:
                text = conn.execute(select(post_versions.c.text).where(post_versions.c.id == previous.id)).scalar()
                drafts.append(edit_event(row.id, row.url, row.published_at,
                                         StoredVersion(previous.content_hash, previous.title, text or ""), observation))
            if outcome is BodyOutcome.RETAG:
                conn.execute(update(post_versions).where(post_versions.c.id == previous.id)
                             .values(reader=observation.reader))
            elif outcome is BodyOutcome.REREAD:
                # The new reference keeps the kept title: a new title is still an edit, judged next fetch.
                _insert_version(conn, row.id, observation, now, title=previous.title)
                values.update(content_hash=seen.content_hash)
            elif outcome is not BodyOutcome.KEEP:
                _insert_version(conn, row.id, observation, now)
                values.update(content_hash=seen.content_hash, title=seen.title)
        if values:
            conn.execute(update(posts).where(posts.c.id == row.id).values(**values))
        return drafts


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


def _move(conn: Connection, row, move: PostMove | None, observation: Observation | None = None) -> list[EventDraft]:
    """Save a post's change of presence; the event it makes."""
    if move is None:
        return []
    conn.execute(update(posts).where(posts.c.id == row.id).values(status=move.status, gone_since=move.gone_since))
    if move.event == "restored":
        if observation is None:     # a 304: the page is there as it was
            return [EventDraft("restored", row.id, row.url, row.title, row.published_at)]
        return [EventDraft("restored", row.id, row.url, observation.title, row.published_at, observation.summary,
                           observation.item.body_html)]
    if move.event == "removed":
        return [EventDraft("removed", row.id, row.url, row.title, row.published_at)]
    return []


def _latest_version(conn: Connection, post_id: int, origin: str):
    return conn.execute(select(post_versions.c.id, post_versions.c.content_hash, post_versions.c.title,
                               post_versions.c.reader)
                        .where(post_versions.c.post_id == post_id, post_versions.c.origin == origin)
                        .order_by(post_versions.c.id.desc()).limit(1)).first()


def _insert_version(conn: Connection, post_id: int, observation: Observation, now: datetime,
                    title: str | None = None) -> None:
    content = observation.content
    assert content is not None, "only a body is kept as a version"
    conn.execute(insert(post_versions).values(post_id=post_id, origin=observation.item.origin,
                                              content_hash=content.content_hash, title=title or observation.title,
                                              text=content.text, body_html=observation.item.body_html, fetched_at=now,
                                              reader=observation.reader))


def _fetch_state(conn: Connection, post_id: int, origin: str, kept: Seen | None) -> FetchState:
    row = conn.execute(select(edit_candidates).where(edit_candidates.c.post_id == post_id,
                                                     edit_candidates.c.origin == origin)).mappings().first()
    if row is None:
        return FetchState(kept)
    candidate = (Candidate(Seen(row["content_hash"], row["title"]), row["streak"], as_utc(row["first_seen_at"]))
                 if row["content_hash"] is not None else None)
    return FetchState(kept, candidate, row["volatile_since"] is not None)


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


def _judge_held_edits(conn: Connection, post_id: int, origin: str, seen: Seen, pass_: _CheckPass,
                      reader: str | None = None, unknown_is_other: bool = False) -> None:
    """Before a fetch is judged against the kept version: a held edit of this post is confirmed
    by seeing its content again; anything else dismisses it and puts the kept version back to
    what subscribers last heard of (a fetch by another reader cannot tell: the edit stays held)."""
    for held in pass_.held_edits.pop(post_id, []):
        version = conn.execute(select(post_versions.c.id, post_versions.c.origin, post_versions.c.reader)
                               .where(post_versions.c.post_id == post_id,
                                      post_versions.c.content_hash == held.version_hash)
                               .order_by(post_versions.c.id.desc()).limit(1)).first()
        reread = version is not None and reader_changed(version.reader, reader, unknown_is_other=unknown_is_other)
        outcome = judge_held_edit(Seen(held.version_hash, held.title), seen,
                                  held_origin=version.origin if version is not None else None, origin=origin,
                                  reread=reread)
        if outcome is HeldOutcome.WAIT:
            pass_.held_edits.setdefault(post_id, []).append(held)     # judged by a fetch of its own origin
        elif outcome is HeldOutcome.CONFIRM:
            pass_.confirmed_held.add(held.id)
        else:
            dismiss_events(conn, [held.id])
            if version is not None:
                conn.execute(delete(post_versions).where(post_versions.c.id == version.id))
                restored = _latest_version(conn, post_id, origin)
                if restored is not None:
                    conn.execute(update(posts).where(posts.c.id == post_id).values(
                        content_hash=restored.content_hash, title=restored.title))
