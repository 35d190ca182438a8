"""The change rules (state.changes), without a database: what a check's observations mean to
subscribers. The same rules through the store, on SQLite and PostgreSQL: test_state_changes.py
and test_stable_edits.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from state.changes import (BodyOutcome, Candidate, EventDraft, FetchState, HeldEvent, HeldOutcome, Outcome, PostMove,
                           Seen, StoredVersion, back_online, cancel_reversals, edit_event, gone, held_to_publish,
                           hold_reason, judge_body, judge_fetch, judge_held_edit, new_post_event, observe,
                           richest_per_url, source_health)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
STORED, EDIT, OTHER, THIRD = Seen("s", "Title"), Seen("e", "Title"), Seen("o", "Title"), Seen("t", "Title")
HOUR = timedelta(hours=1)


@dataclass
class Observed:
    """What the crawl hands over for one post (crawler.items.PostItem has these fields)."""
    url: str = "https://blog.example/p/1"
    title: str = "A post"
    published: datetime | None = None
    body_html: str | None = None
    summary: str | None = None
    origin: str = "page"


# ------------------------------------------------------------------------------------------
# Edits need two fetches; volatile posts
# ------------------------------------------------------------------------------------------
def fetches(*seen: Seen, state: FetchState | None = None):
    """Feed a sequence of fetches through judge_fetch the way the store does; the verdicts."""
    state = state or FetchState(STORED)
    verdicts = []
    for n, s in enumerate(seen):
        verdict = judge_fetch(state, s, T0 + timedelta(hours=n))
        verdicts.append(verdict)
        stored = s if verdict.publish else state.stored
        state = FetchState(stored, verdict.candidate, verdict.volatile)
    return verdicts


def test_new_content_seen_once_is_pending_and_the_same_content_again_is_the_edit():
    first, second, third = fetches(EDIT, EDIT, EDIT)
    assert first.outcome is Outcome.PENDING and first.candidate.seen == EDIT and not first.publish
    assert second.outcome is Outcome.CONFIRMED and second.publish and second.candidate is None
    assert third.outcome is Outcome.UNCHANGED            # published once, not again


def test_a_title_change_is_an_edit_too_and_needs_the_same_confirmation():
    retitled = Seen("s", "New title")
    assert [v.outcome for v in fetches(retitled, retitled)] == [Outcome.PENDING, Outcome.CONFIRMED]


def test_content_back_to_the_stored_version_was_a_glitch():
    glitch, back, again = fetches(EDIT, STORED, EDIT)
    assert back.outcome is Outcome.UNCHANGED and back.candidate is None
    assert again.outcome is Outcome.PENDING and again.candidate.streak == 1     # counting starts over


def test_content_different_on_every_fetch_makes_the_post_volatile_once_and_never_publishes():
    rotating = [Seen(f"ad-{n}", "Title") for n in range(8)]
    verdicts = fetches(*rotating)
    assert not any(v.publish for v in verdicts)
    assert [v.became_volatile for v in verdicts] == [False, False, True, False, False, False, False, False]
    assert all(v.volatile for v in verdicts[2:]) and not any(v.volatile for v in verdicts[:2])


def test_two_flipping_versions_never_publish_nor_become_volatile():
    verdicts = fetches(EDIT, STORED, EDIT, STORED, EDIT, STORED)
    assert not any(v.publish or v.volatile for v in verdicts)


def test_a_volatile_post_that_settles_on_new_content_publishes_that_edit():
    volatile = FetchState(STORED, Candidate(OTHER, 5, T0), volatile=True)
    settle, confirm = fetches(EDIT, EDIT, state=volatile)
    assert settle.outcome is Outcome.PENDING and settle.volatile and not settle.became_volatile
    assert confirm.publish and not confirm.volatile


def test_a_volatile_post_back_on_its_stored_content_twice_is_stable_again():
    volatile = FetchState(STORED, Candidate(OTHER, 5, T0), volatile=True)
    once, twice = fetches(STORED, STORED, state=volatile)
    assert once.volatile and not twice.volatile
    assert not once.publish and not twice.publish


def test_the_first_body_of_an_origin_is_the_reference_not_an_edit():
    verdict = judge_fetch(FetchState(None), EDIT, T0)
    assert verdict.outcome is Outcome.FIRST and not verdict.publish and verdict.candidate is None


def test_a_held_edit_is_confirmed_only_by_seeing_its_content_again():
    assert judge_held_edit(EDIT, EDIT) is HeldOutcome.CONFIRM
    assert judge_held_edit(EDIT, STORED) is HeldOutcome.DISMISS        # reverted
    assert judge_held_edit(EDIT, THIRD) is HeldOutcome.DISMISS         # yet another content
    assert judge_held_edit(EDIT, None) is HeldOutcome.WAIT             # not fetched this check


def test_a_held_edit_of_a_page_is_not_judged_by_a_feed_read():
    assert judge_held_edit(EDIT, OTHER, held_origin="page", origin="feed") is HeldOutcome.WAIT
    assert judge_held_edit(EDIT, OTHER, held_origin="page", origin="page") is HeldOutcome.DISMISS
    assert judge_held_edit(EDIT, EDIT, held_origin=None, origin="feed") is HeldOutcome.CONFIRM   # its version is gone


# ------------------------------------------------------------------------------------------
# Held checks
# ------------------------------------------------------------------------------------------
def test_hold_reason_for_floods_and_empty_checks():
    assert hold_reason(changes=8, known=20, saw_anything=True, flood_share=0.3).startswith("8 changes at once")
    assert hold_reason(changes=3, known=4, saw_anything=True, flood_share=0.3) is None      # under the minimum
    assert hold_reason(changes=5, known=20, saw_anything=True, flood_share=0.3) is None
    assert "found no posts" in hold_reason(changes=0, known=20, saw_anything=False, flood_share=0.3)


def test_a_calm_check_publishes_held_removals_and_edits_seen_again_but_not_a_flood_of_new_posts():
    held = [HeldEvent(5, "updated"), HeldEvent(1, "new"), HeldEvent(3, "removed"), HeldEvent(4, "updated"),
            HeldEvent(2, "restored")]
    assert held_to_publish(held, seen_again={4}) == [2, 3, 4]
    assert held_to_publish(held, seen_again=set()) == [2, 3]
    assert held_to_publish([HeldEvent(1, "new")], seen_again={1}) == []


def test_a_held_check_degrades_its_source_and_a_calm_one_clears_it_once_nothing_waits():
    assert source_health("8 changes at once", published_held=0, still_held=8) == (True, "8 changes at once")
    assert source_health(None, published_held=3, still_held=2) == (False, None)     # it published what was held
    assert source_health(None, published_held=0, still_held=0) == (False, None)
    assert source_health(None, published_held=0, still_held=2) is None              # held edits still wait: as it was


# ------------------------------------------------------------------------------------------
# What a check observed
# ------------------------------------------------------------------------------------------
def test_one_observation_per_url_and_the_page_body_wins_whatever_the_order():
    line, feed, page = (Observed(origin="listing"), Observed(origin="feed", body_html="<p>Feed</p>"),
                        Observed(origin="page", body_html="<p>Page</p>"))
    other = Observed(url="https://blog.example/p/2", origin="listing")
    assert richest_per_url([page, feed, line, other]) == [page, other]
    assert richest_per_url([line, other, feed, page]) == [page, other]
    first_feed = Observed(origin="feed", body_html="<p>First</p>")
    assert richest_per_url([first_feed, feed]) == [first_feed]


def test_an_empty_body_is_an_extraction_miss_not_an_edit_that_deleted_everything():
    assert observe(Observed(body_html="<div>  <script>x()</script> </div>")).seen is None
    assert observe(Observed(body_html=None)).seen is None
    assert observe(Observed(body_html="<p>Text</p>")).seen is not None


def test_markup_never_counts_and_the_summary_is_the_first_paragraph():
    plain = observe(Observed(body_html="<p>One two.</p><p>Three.</p>"))
    styled = observe(Observed(body_html='<div class="x"><p><b>One</b>   two.</p>\n<p>Three.</p></div>'))
    assert plain.seen == styled.seen
    assert plain.summary == "One two."
    assert observe(Observed(body_html="<p>Body.</p>", summary="From the feed")).summary == "From the feed"
    long = observe(Observed(body_html="<p>" + "word " * 200 + "</p>"))
    assert long.summary == long.content.paragraphs[0][:300] and len(long.summary) == 300


def test_a_post_without_a_title_is_named_by_its_url():
    assert observe(Observed(title="")).title == "https://blog.example/p/1"


def test_an_undated_new_post_is_dated_by_when_it_was_first_seen():
    assert new_post_event(7, observe(Observed()), T0).published_at == T0
    dated = Observed(published=T0 - 3 * HOUR, body_html="<p>Body.</p>")
    event = new_post_event(7, observe(dated), T0)
    assert (event.kind, event.post_id, event.published_at) == ("new", 7, T0 - 3 * HOUR)
    assert event.version_hash == observe(dated).seen.content_hash


def test_a_confirmed_edit_shows_the_paragraph_that_changed():
    before = StoredVersion("old-hash", "A post", "First paragraph.\n\nSecond paragraph.")
    edited = observe(Observed(body_html="<p>First paragraph.</p><p>Second paragraph, corrected.</p>"))
    event = edit_event(7, "https://blog.example/p/1", T0, before, edited)
    assert (event.kind, event.previous_hash, event.version_hash) == ("updated", "old-hash", edited.seen.content_hash)
    assert event.published_at == T0                              # the stored date, the page showing none
    assert "corrected" in str(event.diff) and "First paragraph" not in str(event.diff)


def test_the_first_body_of_an_origin_is_kept_as_the_reference_and_only_a_confirmed_edit_is_published():
    assert judge_body(None, EDIT, judge_fetch(FetchState(None), EDIT, T0)) is BodyOutcome.REFERENCE
    assert judge_body(STORED, EDIT, judge_fetch(FetchState(STORED), EDIT, T0)) is BodyOutcome.KEEP      # pending
    confirmed = judge_fetch(FetchState(STORED, Candidate(EDIT, 1, T0)), EDIT, T0 + HOUR)
    assert judge_body(STORED, EDIT, confirmed) is BodyOutcome.EDIT
    assert judge_body(STORED, STORED, judge_fetch(FetchState(STORED), STORED, T0)) is BodyOutcome.KEEP


def test_a_baseline_records_what_is_there_without_events():
    assert judge_body(STORED, EDIT, None) is BodyOutcome.REFERENCE
    assert judge_body(STORED, STORED, None) is BodyOutcome.KEEP


# ------------------------------------------------------------------------------------------
# Posts that go missing and come back
# ------------------------------------------------------------------------------------------
def test_one_404_never_removes_a_post_only_staying_missing_for_the_confirmation_time_does():
    first = gone("active", None, T0, HOUR)
    assert first == PostMove("gone_pending", T0) and first.event is None
    assert gone("gone_pending", T0, T0 + 30 * timedelta(minutes=1), HOUR) is None
    removed = gone("gone_pending", T0, T0 + HOUR, HOUR)
    assert removed.status == "removed" and removed.event == "removed" and removed.gone_since == T0
    assert gone("removed", T0, T0 + 5 * HOUR, HOUR) is None                       # told once


def test_only_the_posts_own_page_brings_it_back_and_a_removed_post_is_restored():
    assert back_online("gone_pending", origin="listing") is None       # a listing line can outlive the page
    assert back_online("removed", origin="feed") is None
    assert back_online("gone_pending") == PostMove("active", None, None)
    assert back_online("removed") == PostMove("active", None, "restored")
    assert back_online("active") is None


def test_a_glitch_404_then_the_page_again_makes_no_event():
    missing = gone("active", None, T0, HOUR)
    back = back_online(missing.status)
    assert missing.event is None and back.event is None and back.status == "active"


def test_a_restore_that_undoes_a_held_removal_cancels_both():
    restore = EventDraft("restored", 1, "https://blog.example/p/1", "One")
    other_restore = EventDraft("restored", 2, "https://blog.example/p/2", "Two")
    new = EventDraft("new", 1, "https://blog.example/p/1", "One")
    kept, dismissed = cancel_reversals([restore, other_restore, new], held_removals={1: 41})
    assert kept == [other_restore, new] and dismissed == [41]
    assert cancel_reversals([restore], held_removals={}) == ([restore], [])
