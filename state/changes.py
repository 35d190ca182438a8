"""The change rules, as pure functions over small records (no database).

Why an edit needs two fetches: a page with a rotating ad or a timestamp inside the article
hashes differently on every fetch, and each of those differences used to be mailed as an edit.
A real edit is still there when the page is fetched again; noise is not. So a fetch that sees
new content only makes it a *candidate*; the next fetch of the same post (same origin: page or
feed) publishes it if it sees the same content, forgets it if the post is back to what was
stored, and counts one more change in a row if it sees yet another content. A post that
changes on every fetch is *volatile*: its edits are not mailed and the operator is told once.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

# Three different contents in three fetches in a row: no real edit behaves like that.
VOLATILE_AFTER = 3
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


def judge_fetch(state: FetchState, seen: Seen, now: datetime, volatile_after: int = VOLATILE_AFTER) -> Verdict:
    """The rule for one fetch of a known post that yielded a body."""
    if state.stored is None:
        return Verdict(Outcome.FIRST, None, state.volatile)
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


def judge_held_edit(held: Seen, seen: Seen | None) -> HeldOutcome:
    """A held "updated" event is confirmed only by a fetch that sees its content again."""
    if seen is None:
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
