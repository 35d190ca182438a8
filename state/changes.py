"""The change rules, as pure functions over small records (no database): the store loads the
records, asks these functions what changed, and saves the answer.

- One observation per URL: the richest (a page beats a feed beats a listing).
- A post missing once is only pending; removed once it has stayed missing for a while. A page
  that answers again brings it back, and a restore that undoes a held removal cancels both.
- A check that changes too much at once, or sees nothing where posts were known, is held.
- Edits need two fetches (below); a held edit is confirmed only by seeing it again.

Why an edit needs two fetches: a page with a rotating ad or a timestamp inside the article
hashes differently on every fetch, and each of those differences used to be mailed as an edit.
A real edit is still there when the page is fetched again; noise is not. So a fetch that sees
new content only makes it a *candidate*; the next fetch of the same post (same origin: page or
feed) publishes it if it sees the same content, forgets it if the post is back to what was
stored, and counts one more change in a row if it sees yet another content. A post that
changes on every fetch is *volatile*: its edits are not mailed and the operator is told once.

Why a body read by another reader is not an edit: every body carries the reader that produced it
(trafilatura, the heuristics, a kind's selectors, a feed; crawler.items.PostItem.reader), and each
kept version keeps it. When our reading changes (a new extractor, a bumped reader, a page that
the heuristics read now that trafilatura finds nothing), the words of an unchanged article change
too, and two fetches confirm that difference like a real edit. So a body read by another reader
than the stored one is not compared with it: it becomes the new reference, silently, and edits
are measured from it on. A changed title is still judged as one (titles are not read by the body
readers): the new body is kept under the old title, and the new title waits for its second fetch.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Iterable, TypeVar

from state.diff import paragraph_diff
from state.normalize import NormalizedContent, normalize, site_text, split_text
from state.records import ORIGIN_RANK, ObservedPost

# Three different contents in three fetches in a row: no real edit behaves like that.
VOLATILE_AFTER = 3

# The kinds whose post pages changed reader (the heuristics, then trafilatura) before the reader
# was recorded (revision 0013): a page body of theirs kept without a reader may be the old one's.
UNKNOWN_READER_KINDS = frozenset({"html", "auto", "feed"})


def reader_changed(stored: str | None, reader: str | None, *, unknown_is_other: bool) -> bool:
    """Whether a body read by `reader` cannot be compared with the kept one, read by `stored`.
    A body without a reader (a check built by hand) keeps today's rules; a kept body without one
    (from before readers were recorded) is another reader's only where `unknown_is_other`."""
    if reader is None:
        return False
    if stored is None:
        return unknown_is_other
    return stored != reader


def unknown_reader_is_other(kind: str | None, origin: str) -> bool:
    """A kept body without a reader was read by another reader than today's: the post pages of
    the generic kinds (their feeds' and the exact kinds' reading did not change)."""
    return origin == "page" and kind in UNKNOWN_READER_KINDS


@dataclass(frozen=True)
class RevisitSchedule:
    """How often a known post's own page is looked at again, by the post's age: edits come soon
    after publication (a corrected figure or name in a rescue story), rarely years later."""
    every_check_under: timedelta = timedelta(days=2)    # younger posts: at every check
    daily_under: timedelta = timedelta(days=30)         # then daily until this age
    older_every: timedelta = timedelta(days=7)          # then this often
    per_check: int = 20                                 # at most this many revisits per check, most overdue first


@dataclass(frozen=True)
class RevisitCutoffs:
    """The schedule at one moment, as the bounds storage compares stored times with. A post is
    due when: published after `recent`; or published after `month` and its page last checked
    before `day_ago`; or its page last checked before `older` (checked = page last fetched, else
    first seen). An undated post's age is unknown (a baseline sees old and new alike), so only
    the last rule applies to it."""
    recent: datetime
    month: datetime
    day_ago: datetime
    older: datetime


def revisit_cutoffs(now: datetime, schedule: RevisitSchedule) -> RevisitCutoffs:
    return RevisitCutoffs(recent=now - schedule.every_check_under, month=now - schedule.daily_under,
                          day_ago=now - timedelta(days=1), older=now - schedule.older_every)
MIN_FLOOD_EVENTS = 4


@dataclass(frozen=True)
class Seen:
    """What one fetch of a post showed: what an edit is measured by."""
    content_hash: str
    title: str


@dataclass(frozen=True)
class Candidate:
    """New content seen once and not yet confirmed; `streak` counts different contents seen
    in a row (each differing from the stored version and from the candidate before it)."""
    seen: Seen
    streak: int
    first_seen_at: datetime


@dataclass(frozen=True)
class FetchState:
    """One post's state for one origin before a fetch."""
    stored: Seen | None                  # the latest version kept (None: no body of this origin yet)
    candidate: Candidate | None = None
    volatile: bool = False


class Outcome(Enum):
    FIRST = "first"            # first body of this origin: kept as the reference, no event
    UNCHANGED = "unchanged"    # same as stored (a pending candidate, if any, was a glitch)
    REREAD = "reread"          # another reader's body: the new reference, not compared (no event)
    PENDING = "pending"        # new content seen once: wait for the next fetch
    CONFIRMED = "confirmed"    # the candidate seen again: publish the edit


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    candidate: Candidate | None          # what to keep pending after this fetch
    volatile: bool
    became_volatile: bool = False        # this fetch made the post volatile: alert the operator

    @property
    def publish(self) -> bool:
        return self.outcome is Outcome.CONFIRMED


def judge_fetch(state: FetchState, seen: Seen, now: datetime, volatile_after: int = VOLATILE_AFTER, *,
                reread: bool = False) -> Verdict:
    """The rule for one fetch of a known post that yielded a body. `reread`: the stored body was
    read by another reader than this one (reader_changed)."""
    if state.stored is None:
        return Verdict(Outcome.FIRST, None, state.volatile)
    if reread and seen != state.stored:
        # Not comparable: the body is the new reference. A candidate measured from the old one is
        # dropped; a changed title (not the readers' doing) is the candidate, to be seen again.
        renamed = seen.title != state.stored.title
        return Verdict(Outcome.REREAD, Candidate(seen, 1, now) if renamed else None, state.volatile)
    if seen == state.stored:
        # A volatile post is stable again once it shows the stored content twice in a row:
        # the first time drops the pending candidate, the second finds none.
        stable_again = state.volatile and state.candidate is None
        return Verdict(Outcome.UNCHANGED, None, state.volatile and not stable_again)
    if state.candidate is not None and seen == state.candidate.seen:
        return Verdict(Outcome.CONFIRMED, None, False)
    streak = state.candidate.streak + 1 if state.candidate is not None else 1
    became_volatile = not state.volatile and streak >= volatile_after
    return Verdict(Outcome.PENDING, Candidate(seen, streak, now), state.volatile or became_volatile, became_volatile)


class HeldOutcome(Enum):
    WAIT = "wait"              # not fetched again this check: stays held
    CONFIRM = "confirm"        # the held version's content seen again: may be published
    DISMISS = "dismiss"        # something else seen: the held edit never happened


def judge_held_edit(held: Seen, seen: Seen | None, *, held_origin: str | None = None,
                    origin: str | None = None, reread: bool = False) -> HeldOutcome:
    """A held "updated" event is confirmed only by a fetch that sees its content again, and
    judged only by a fetch of the origin ("page", "feed") its version came from, when known.
    A fetch by another reader than the held version's (`reread`) cannot see it again: it stays
    held for the operator (`postwatch sources release`) rather than be dismissed unseen."""
    if seen is None or reread or (held_origin is not None and held_origin != origin):
        return HeldOutcome.WAIT
    return HeldOutcome.CONFIRM if seen == held else HeldOutcome.DISMISS


def hold_reason(*, changes: int, known: int, saw_anything: bool, flood_share: float,
                min_flood: int = MIN_FLOOD_EVENTS) -> str | None:
    """Why a check's changes are held as suspect, or None when they may go out."""
    if not saw_anything and known:
        return f"the check found no posts where {known} were known (redesign or broken page?)"
    if changes >= min_flood and known and changes / known > flood_share:
        return (f"{changes} changes at once touch {changes / known:.0%} of {known} posts "
                f"(more than {flood_share:.0%})")
    return None


# ------------------------------------------------------------------------------------------
# What a check observed
# ------------------------------------------------------------------------------------------
Post = TypeVar("Post", bound=ObservedPost)


def richest_per_url(observed: Iterable[Post]) -> list[Post]:
    """One observation per URL: a page's body beats a feed's copy beats a listing line (the
    first seen of equal rank)."""
    best: dict[str, Post] = {}
    for item in observed:
        current = best.get(item.url)
        if current is None or ORIGIN_RANK.get(item.origin, 0) > ORIGIN_RANK.get(current.origin, 0):
            best[item.url] = item
    return list(best.values())


@dataclass(frozen=True)
class Observation:
    """One observed post as the rules read it."""
    item: ObservedPost
    title: str
    summary: str | None
    content: NormalizedContent | None    # None: no body, or one with no text (an extraction miss)
    reader: str | None = None            # the reader that produced the body (None: not told)

    @property
    def seen(self) -> Seen | None:
        return Seen(self.content.content_hash, self.title) if self.content else None


def observe(item: ObservedPost) -> Observation:
    content = normalize(item.body_html) if item.body_html else None
    if content is not None and not content.paragraphs:
        content = None      # an empty body is an extraction miss, not an edit that deleted everything
    summary = item.summary or (content.paragraphs[0][:300] if content else None)
    # A crawl's PostItem made its text safe already; a check built by hand (CheckInput) had not.
    return Observation(item, site_text(item.title or item.url)[:1000], summary and site_text(summary), content,
                       getattr(item, "reader", None) if content is not None else None)


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------
@dataclass
class EventDraft:
    """An event this check is about to record (held or published, as the check decides)."""
    kind: str                               # "new" | "updated" | "removed" | "restored"
    post_id: int | None                     # None: a post this check inserts (its URL names it)
    url: str
    title: str
    published_at: datetime | None = None
    summary: str | None = None
    body_html: str | None = None
    version_hash: str | None = None
    previous_hash: str | None = None
    diff: dict | None = None


def new_post_event(post_id: int | None, observation: Observation, now: datetime) -> EventDraft:
    """An undated post is dated by when it was first seen."""
    item, seen = observation.item, observation.seen
    return EventDraft("new", post_id, item.url, observation.title, item.published or now, observation.summary,
                      item.body_html, version_hash=seen.content_hash if seen else None)


@dataclass(frozen=True)
class StoredVersion:
    """The latest kept version of a post for one origin."""
    content_hash: str
    title: str
    text: str


def edit_event(post_id: int, url: str, published_at: datetime | None, before: StoredVersion,
               observation: Observation) -> EventDraft:
    """A confirmed edit, with the paragraphs that changed since `before`."""
    item, content = observation.item, observation.content
    assert content is not None, "an edit is judged on a body"
    diff = paragraph_diff(split_text(before.text), content.paragraphs, before.title, observation.title)
    return EventDraft("updated", post_id, url, observation.title, item.published or published_at, observation.summary,
                      item.body_html, version_hash=content.content_hash, previous_hash=before.content_hash, diff=diff)


class BodyOutcome(Enum):
    KEEP = "keep"              # the stored versions stay as they are
    REFERENCE = "reference"    # kept as the new reference version, no event
    REREAD = "reread"          # another reader's body: kept as the new reference under the kept title, no event
    RETAG = "retag"            # the same body from another reader: the kept version takes its reader
    EDIT = "edit"              # kept, and published as an edit


def judge_body(previous: Seen | None, seen: Seen, verdict: Verdict | None, *, retag: bool = False) -> BodyOutcome:
    """What a fetched body does to the kept versions. `verdict` is None on a baseline, which
    records what is there: no candidates, no events. `retag`: the kept version does not name
    this body's reader (another one, or none recorded)."""
    if previous is None or (verdict is None and previous != seen):
        return BodyOutcome.REFERENCE    # first body of this origin (a listing's baseline, or feed then page)
    if verdict is not None and verdict.outcome is Outcome.REREAD:
        return BodyOutcome.REREAD
    if verdict is not None and verdict.publish:
        return BodyOutcome.EDIT
    if retag and previous.content_hash == seen.content_hash:
        return BodyOutcome.RETAG        # this reader reads the kept body alike: edits are measured by it now
    return BodyOutcome.KEEP


# ------------------------------------------------------------------------------------------
# Posts that go missing and come back
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostMove:
    """A post's presence changing: its new status, since when it is missing, the event it makes."""
    status: str                            # "active" | "gone_pending" | "removed"
    gone_since: datetime | None = None
    event: str | None = None               # "removed" | "restored"


def back_online(status: str, origin: str = "page") -> PostMove | None:
    """A post whose own page answered (with a body or a 304) is there; a removed one is restored.
    A listing or feed line proves nothing: it can outlive the page."""
    if origin != "page" or status == "active":
        return None
    return PostMove("active", None, "restored" if status == "removed" else None)


def gone(status: str, gone_since: datetime | None, now: datetime, confirm_after: timedelta) -> PostMove | None:
    """A post whose page answered 404 or 410: missing at first; removed (one event) once it has
    stayed missing for `confirm_after`, so one bad answer never removes anything."""
    if status == "active":
        return PostMove("gone_pending", now)
    if status == "gone_pending" and gone_since is not None and now - gone_since >= confirm_after:
        return PostMove("removed", gone_since, "removed")
    return None


def cancel_reversals(drafts: list[EventDraft], held_removals: dict[int, int]) -> tuple[list[EventDraft], list[int]]:
    """A restore that undoes a held removal (a glitch, then the real page again) cancels both:
    subscribers never hear of either. `held_removals`: post id -> its held "removed" event.
    Returns the drafts to keep and the held events to dismiss."""
    kept, dismissed = [], []
    for draft in drafts:
        removal = held_removals.get(draft.post_id)
        if removal is not None and draft.kind == "restored":
            dismissed.append(removal)
        else:
            kept.append(draft)
    return kept, dismissed


# ------------------------------------------------------------------------------------------
# Held checks
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldEvent:
    id: int
    kind: str


def held_to_publish(held: Iterable[HeldEvent], seen_again: set[int]) -> list[int]:
    """What a calm check after a held one publishes, in this order: held removals and restores,
    then the held edits whose content this check saw again. Held "new" posts wait for the
    operator: a flood of new URLs is what a site redesign looks like."""
    held = sorted(held, key=lambda e: e.id)
    return ([e.id for e in held if e.kind in ("removed", "restored")]
            + [e.id for e in held if e.kind == "updated" and e.id in seen_again])


def source_health(reason: str | None, published_held: int, still_held: int) -> tuple[bool, str | None] | None:
    """(degraded, why) of a source after a check, or None when it stays as it was: a held check
    degrades it; a calm one clears that once it published held events or none are left."""
    if reason:
        return True, reason
    if published_held or not still_held:
        return False, None
    return None
