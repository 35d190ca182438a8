"""A check judged in one pure step: `judge_check(stored, observed, policy, now)` takes what is
stored of a source and what one check observed, and decides everything the check changes as
plain data (`CheckDecision`), composed from the rules of state.changes. It reads and writes no
database: state.posts loads a `StoredSource`, calls it, and saves the decision in the check's
one transaction."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from state.changes import (VOLATILE_AFTER, BodyOutcome, Candidate, EventDraft, FetchState, HeldEvent, HeldOutcome,
                           Observation, PostMove, Seen, StoredVersion, Verdict, back_online, cancel_reversals,
                           edit_event, gone, held_to_publish, hold_reason, judge_body, judge_fetch, judge_held_edit,
                           new_post_event, observe, reader_changed, richest_per_url, source_health,
                           unknown_reader_is_other)
from state.records import ObservedCheck


# ------------------------------------------------------------------------------------------
# What is stored
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeptVersion:
    """A kept version of a post's body, as one origin ("page", "feed") showed it."""
    id: int
    origin: str
    content_hash: str
    title: str
    reader: str | None
    text: str | None = None     # None: not loaded (only a version an edit can be measured from needs it)

    @property
    def seen(self) -> Seen:
        return Seen(self.content_hash, self.title)


@dataclass(frozen=True)
class EditWatch:
    """One origin's pending edit of a post (content seen once, not yet confirmed), and whether
    the post changes on every fetch."""
    candidate: Candidate | None = None
    volatile: bool = False


@dataclass(slots=True)      # not frozen: storage adds the versions and watches of the few posts that need them
class StoredPost:
    id: int
    url: str
    title: str
    status: str                                 # "active" | "gone_pending" | "removed"
    gone_since: datetime | None = None
    content_hash: str | None = None
    published_at: datetime | None = None
    # Oldest first: at least the latest version of each origin the check saw a body of, and every
    # version of such a post with a held edit (a dismissed edit puts the one before back).
    versions: tuple[KeptVersion, ...] = ()
    watches: Mapping[str, EditWatch] = field(default_factory=dict)     # origin -> its pending edit


@dataclass(frozen=True)
class StoredHeld:
    """A held event: waiting for a calm check (or the operator) to publish it."""
    id: int
    kind: str                                   # "new" | "updated" | "removed" | "restored"
    post_id: int
    title: str
    version_hash: str | None = None             # an edit's content


@dataclass(frozen=True)
class StoredSource:
    baseline_done: bool
    kind: str | None = None
    discovered_feed_url: str | None = None
    posts: Mapping[str, StoredPost] = field(default_factory=dict)     # URL -> post
    held: tuple[StoredHeld, ...] = ()                                 # oldest first


@dataclass(frozen=True)
class CheckPolicy:
    removal_confirm_after: timedelta
    flood_share: float
    volatile_after: int = VOLATILE_AFTER


# ------------------------------------------------------------------------------------------
# What to write
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionWrite:
    """A body to keep as a post's latest version of its origin."""
    post_id: int | None                         # None: the post this check inserts under `url`
    url: str
    origin: str
    content_hash: str
    title: str
    text: str
    body_html: str | None
    reader: str | None


@dataclass(frozen=True)
class NewPost:
    url: str
    title: str
    published_at: datetime | None
    content_hash: str | None


@dataclass
class CheckDecision:
    """Everything one check changes, in the order storage writes it."""
    baseline: bool
    new_posts: list[NewPost] = field(default_factory=list)
    post_updates: dict[int, dict[str, Any]] = field(default_factory=dict)   # post id -> columns to set
    versions_dropped: list[int] = field(default_factory=list)              # versions of edits that never happened
    versions_kept: list[VersionWrite] = field(default_factory=list)
    versions_retagged: dict[int, str] = field(default_factory=dict)        # version id -> the reader reading it alike
    # (post id, origin, its fetch's verdict): where an EditWatch was pending or is now
    watches: list[tuple[int, str, Verdict]] = field(default_factory=list)
    seen_urls: set[str] = field(default_factory=set)                       # posts seen now
    pages_checked: set[str] = field(default_factory=set)                   # posts whose page answered now
    # Events to record, held when `hold_reason` says so; a new post's has no post id yet (its URL names it).
    events: list[EventDraft] = field(default_factory=list)
    dismissed: list[int] = field(default_factory=list)                     # held events that never happened
    published_held: list[int] = field(default_factory=list)                # held events to publish, in order
    source_values: dict[str, Any] = field(default_factory=dict)
    hold_reason: str | None = None
    became_volatile: list[str] = field(default_factory=list)
    pending_edits: int = 0

    def update_post(self, post_id: int, **values: Any) -> None:
        self.post_updates.setdefault(post_id, {}).update(values)


def judge_check(stored: StoredSource, observed: ObservedCheck, policy: CheckPolicy, now: datetime) -> CheckDecision:
    """What one check changes: each observed post judged (new, back, edited, its held edits),
    the pages that answered 304 or 404/410, then whether the check's events go out or are held,
    and which held events a calm check publishes."""
    walk = _Walk(stored, policy, now, baseline=observed.baseline or not stored.baseline_done)
    for item in richest_per_url(observed.posts):
        walk.decision.seen_urls.add(item.url)
        post = stored.posts.get(item.url)
        if post is None:
            walk.new_post(observe(item))
        else:
            walk.known_post(post, observe(item))
    for url in observed.unchanged_urls:
        if (post := stored.posts.get(url)) is not None:
            walk.move(post, back_online(post.status))
    for url in observed.gone:
        if (post := stored.posts.get(url)) is not None:
            walk.move(post, gone(post.status, post.gone_since, now, policy.removal_confirm_after))
    walk.decision.pages_checked = ({item.url for item in observed.posts if item.origin == "page"}
                                   | set(observed.unchanged_urls) | set(observed.gone))
    return walk.conclude(observed)


class _Walk:
    """The decision taking shape as the observed posts are judged one by one. Versions that a
    dismissed held edit drops are dropped from a working copy, so later reads see what is left."""

    def __init__(self, stored: StoredSource, policy: CheckPolicy, now: datetime, baseline: bool):
        self.stored, self.policy, self.now = stored, policy, now
        self.decision = CheckDecision(baseline)
        self.drafts: list[EventDraft] = []
        self.versions: dict[int, list[KeptVersion]] = {}      # post id -> its versions, once one is read
        self.held_edits: dict[int, list[StoredHeld]] = {}
        for held in stored.held:
            if held.kind == "updated":
                self.held_edits.setdefault(held.post_id, []).append(held)
        self.confirmed_held: set[int] = set()

    def new_post(self, observation: Observation) -> None:
        item, seen = observation.item, observation.seen
        self.decision.new_posts.append(NewPost(item.url, observation.title, item.published,
                                               seen.content_hash if seen else None))
        if seen:
            self.decision.versions_kept.append(_version(None, observation))
        if not self.decision.baseline:
            self.drafts.append(new_post_event(None, observation, self.now))

    def known_post(self, post: StoredPost, observation: Observation) -> None:
        item = observation.item
        self.move(post, back_online(post.status, item.origin), observation)
        if item.published and not post.published_at:
            self.decision.update_post(post.id, published_at=item.published)
        if observation.seen is not None:
            self._body(post, observation, observation.seen)

    def _body(self, post: StoredPost, observation: Observation, seen: Seen) -> None:
        origin, reader = observation.item.origin, observation.reader
        unknown_is_other = unknown_reader_is_other(self.stored.kind, origin)
        self._judge_held_edits(post, origin, seen, reader, unknown_is_other)
        previous = self._latest(post, lambda v: v.origin == origin)
        kept = previous.seen if previous is not None else None
        verdict: Verdict | None = None      # the baseline records what is there: no candidates, no events
        if not self.decision.baseline:
            watch = post.watches.get(origin, EditWatch())
            reread = previous is not None and reader_changed(previous.reader, reader, unknown_is_other=unknown_is_other)
            verdict = judge_fetch(FetchState(kept, watch.candidate, watch.volatile), seen, self.now,
                                  self.policy.volatile_after, reread=reread)
            self._watch(post, origin, verdict)
        retag = previous is not None and reader is not None and previous.reader != reader
        outcome = judge_body(kept, seen, verdict, retag=retag)
        if outcome is BodyOutcome.KEEP:
            return
        assert previous is not None or outcome is BodyOutcome.REFERENCE, "only a first body has nothing kept"
        if outcome is BodyOutcome.RETAG:
            self.decision.versions_retagged[previous.id] = reader
        elif outcome is BodyOutcome.REREAD:
            # The new reference keeps the kept title: a new title is still an edit, judged next fetch.
            self.decision.versions_kept.append(_version(post.id, observation, title=previous.title))
            self.decision.update_post(post.id, content_hash=seen.content_hash)
        else:
            if outcome is BodyOutcome.EDIT:
                assert previous.text is not None, "the text an edit is measured from is loaded with its candidate"
                self.drafts.append(edit_event(post.id, post.url, post.published_at,
                                              StoredVersion(previous.content_hash, previous.title, previous.text),
                                              observation))
            self.decision.versions_kept.append(_version(post.id, observation))
            self.decision.update_post(post.id, content_hash=seen.content_hash, title=seen.title)

    def _watch(self, post: StoredPost, origin: str, verdict: Verdict) -> None:
        if verdict.candidate is not None or verdict.volatile or origin in post.watches:
            self.decision.watches.append((post.id, origin, verdict))     # else nothing was pending, nor is
        if verdict.became_volatile:
            self.decision.became_volatile.append(post.url)
        if verdict.candidate is not None and not verdict.volatile:
            self.decision.pending_edits += 1

    def _judge_held_edits(self, post: StoredPost, origin: str, seen: Seen, reader: str | None,
                          unknown_is_other: bool) -> None:
        """Before a fetch is judged against the kept version: a held edit of this post is confirmed
        by seeing its content again; anything else dismisses it and puts the kept version back to
        what subscribers last heard of (a fetch by another reader cannot tell: the edit stays held)."""
        waiting = []
        for held in self.held_edits.pop(post.id, []):
            version = self._latest(post, lambda v: v.content_hash == held.version_hash)
            reread = version is not None and reader_changed(version.reader, reader, unknown_is_other=unknown_is_other)
            outcome = judge_held_edit(Seen(held.version_hash, held.title), seen,
                                      held_origin=version.origin if version is not None else None, origin=origin,
                                      reread=reread)
            if outcome is HeldOutcome.WAIT:
                waiting.append(held)        # judged by a fetch of its own origin
            elif outcome is HeldOutcome.CONFIRM:
                self.confirmed_held.add(held.id)
            else:
                self.decision.dismissed.append(held.id)
                if version is not None:
                    self.versions[post.id].remove(version)
                    self.decision.versions_dropped.append(version.id)
                    restored = self._latest(post, lambda v: v.origin == origin)
                    if restored is not None:
                        self.decision.update_post(post.id, content_hash=restored.content_hash, title=restored.title)
        if waiting:
            self.held_edits[post.id] = waiting

    def _latest(self, post: StoredPost, matches: Callable[[KeptVersion], bool]) -> KeptVersion | None:
        versions = self.versions.setdefault(post.id, list(post.versions))
        return max((v for v in versions if matches(v)), key=lambda v: v.id, default=None)

    def move(self, post: StoredPost, move: PostMove | None, observation: Observation | None = None) -> None:
        """A post's change of presence, and the event it makes."""
        if move is None:
            return
        self.decision.update_post(post.id, status=move.status, gone_since=move.gone_since)
        if move.event == "restored" and observation is None:      # a 304: the page is there as it was
            self.drafts.append(EventDraft("restored", post.id, post.url, post.title, post.published_at))
        elif move.event == "restored":
            self.drafts.append(EventDraft("restored", post.id, post.url, observation.title, post.published_at,
                                          observation.summary, observation.item.body_html))
        elif move.event == "removed":
            self.drafts.append(EventDraft("removed", post.id, post.url, post.title, post.published_at))

    def conclude(self, observed: ObservedCheck) -> CheckDecision:
        decision, stored = self.decision, self.stored
        decision.source_values = values = _source_values(stored, observed, self.now, decision.baseline)
        if decision.baseline:
            return decision
        removals = {held.post_id: held.id for held in stored.held if held.kind == "removed"}
        decision.events, reversed_removals = cancel_reversals(self.drafts, removals)
        decision.dismissed += reversed_removals
        known = sum(1 for post in stored.posts.values() if post.status != "removed")
        saw_anything = bool(observed.posts or observed.not_modified or observed.unchanged_urls or observed.gone)
        decision.hold_reason = hold_reason(changes=len(decision.events), known=known, saw_anything=saw_anything,
                                           flood_share=self.policy.flood_share)
        still_held = 0
        if decision.hold_reason is None:
            held = [HeldEvent(e.id, e.kind) for e in stored.held if e.id not in decision.dismissed]
            decision.published_held = held_to_publish(held, self.confirmed_held)
            still_held = len(held) - len(decision.published_held)
        health = source_health(decision.hold_reason, len(decision.published_held), still_held)
        if health is not None:
            values.update(degraded=health[0], degraded_reason=health[1])
        return decision


def _source_values(stored: StoredSource, observed: ObservedCheck, now: datetime, baseline: bool) -> dict[str, Any]:
    """What a check that answered sets of its source (before a held check's degraded mark)."""
    values: dict[str, Any] = {"last_check_at": now, "last_success_at": now, "last_error": None,
                              "consecutive_failures": 0}
    if observed.listing_read:
        values["listing_read_at"] = now
    if observed.discovered_feed and observed.discovered_feed != stored.discovered_feed_url:
        values["discovered_feed_url"] = observed.discovered_feed
    if baseline:
        values["baseline_done"] = True
    return values


def _version(post_id: int | None, observation: Observation, title: str | None = None) -> VersionWrite:
    content = observation.content
    assert content is not None, "only a body is kept as a version"
    return VersionWrite(post_id, observation.item.url, observation.item.origin, content.content_hash,
                        title or observation.title, content.text, observation.item.body_html, observation.reader)
