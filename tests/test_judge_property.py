"""Whole checks, judged by state.judge and saved by a real SQLite Store: random histories of a
few posts' pages (new content, the same again, 304, 404, not fetched) and what a subscriber
notices of them."""
from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import Phase, example, given, settings, strategies as st

from crawler.items import PostItem
from state import ApplyResult, CheckInput, SourceRecord, Store
from state.changes import MIN_FLOOD_EVENTS

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
CONFIRM_REMOVAL = timedelta(hours=1)
FLOOD_SHARE = 0.30
URLS = [f"https://blog.example/p/{n}" for n in range(5)]
BODIES = ["<p>First words.</p><p>The rest.</p>", "<p>First words, corrected.</p><p>The rest.</p>",
          "<p>Other words.</p><p>The rest, longer.</p>"]
ABSENT, NOT_MODIFIED, GONE = "absent", "304", "404"

answer = st.one_of(st.sampled_from([ABSENT, NOT_MODIFIED, GONE, GONE]), st.sampled_from(BODIES))   # 404s often enough to remove
check = st.tuples(st.tuples(*[answer] * len(URLS)),            # each post's page: a body, a 304, a 404 or no fetch
                  st.integers(min_value=20, max_value=100),      # minutes since the check before
                  st.sampled_from([1, 2, 4]))                    # times it is made (at once) in a row
names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("judge") / "state.db"), removal_confirm_after=CONFIRM_REMOVAL,
                  flood_share=FLOOD_SHARE)
    yield store
    store.close()


def check_input(answers: tuple[str, ...]) -> CheckInput:
    return CheckInput(posts=[PostItem(url=url, title="A post", published=START, body_html=body, summary=None,
                                      origin="page")
                             for url, body in zip(URLS, answers) if body in BODIES],
                      unchanged_urls={url for url, a in zip(URLS, answers) if a == NOT_MODIFIED},
                      gone={url: 404 for url, a in zip(URLS, answers) if a == GONE})


class Subscriber:
    """What a subscriber could tell from the outside, checked after every check."""

    def __init__(self, store: Store, source: str):
        self.store, self.source = store, source
        self.known: set[str] = set()                      # seen as a page: the store keeps it
        self.baseline: dict[str, str] = {}                # the silent first check's bodies
        self.created: dict[str, list[str]] = defaultdict(list)
        self.missing_since: dict[str, datetime] = {}

    def check(self, answers: tuple[str, ...], now: datetime) -> ApplyResult:
        posts_before = self.store.crawl_state(self.source).known.values()
        known = sum(1 for p in posts_before if p.status != "removed")
        seq_before = self.store.newest_event_seq()
        result = self.store.apply_check(self.source, check_input(answers), now)
        if result.baseline:
            self.baseline = {url: a for url, a in zip(URLS, answers) if a in BODIES}
        for event in result.events:
            if event.kind == "removed":      # a removal needs its confirmation: missing for a while
                assert answers[URLS.index(event.url)] == GONE
                assert now - self.missing_since[event.url] >= CONFIRM_REMOVAL
            if event.kind == "restored":     # only a removed post comes back
                assert "removed" in self.created[event.url]
            self.created[event.url].append(event.kind)
        changes = len(result.events)
        if known and changes >= MIN_FLOOD_EVENTS and changes / known > FLOOD_SHARE:
            assert result.held, f"{changes} changes of {known} posts went out"
        if result.held:                      # a held check publishes nothing
            assert all(e.status == "held" for e in result.events)
            assert self.store.newest_event_seq() == seq_before
        for url, a in zip(URLS, answers):
            if a == GONE and url in self.known:
                self.missing_since.setdefault(url, now)
            elif a in BODIES or a == NOT_MODIFIED:
                self.missing_since.pop(url, None)
            if a in BODIES:
                self.known.add(url)
        return result

    def announced(self) -> dict[str, list[str]]:
        """Per post, the bodies subscribers were told of, in order (the baseline's first)."""
        told = {url: [body] for url, body in self.baseline.items()}
        published = self.store.source_events(self.source, status="published", limit=1000)
        for event in sorted(published, key=lambda e: e.seq):
            if event.kind in ("new", "updated"):
                told.setdefault(event.url, []).append(event.body_html)
        return told


# Shrinking a failure through a real store takes minutes: the failing history is reported as it came.
@settings(max_examples=30, deadline=None, database=None, phases=[Phase.explicit, Phase.generate])
# Always: a post removed (two 404s an hour and a half apart) while four are edited (a flood, held), then restored.
@example(history=[((BODIES[0],) * 5, 30, 1), ((GONE,) + (BODIES[0],) * 4, 30, 1), ((GONE,) + (BODIES[1],) * 4, 90, 2)],
         final=(BODIES[0],) + (BODIES[1],) * 4)
@given(history=st.lists(check, min_size=1, max_size=5), final=st.tuples(*[st.sampled_from(BODIES)] * len(URLS)))
def test_what_subscribers_hear_of_a_random_history_of_checks(store, history, final):
    source = f"blog{next(names)}"
    store.sync_sources([SourceRecord(name=source, url="https://blog.example/", kind="html")])
    subscriber = Subscriber(store, source)
    now = START
    for answers, minutes, times in history:
        now += timedelta(minutes=minutes)
        results = [subscriber.check(answers, now) for _ in range(times)]
        if times == 4:          # a second fetch confirms an edit, a calm check publishes a held flood of
            last = results[3]   # them: then an unchanged re-check has nothing left to tell
            assert (last.events, last.published_held, last.pending_edits) == ([], 0, 0)
    for _ in range(4):          # the posts settle at their final bodies: edits confirmed, held ones published
        now += timedelta(hours=2)
        subscriber.check(final, now)
    settled = subscriber.check(final, now + timedelta(hours=2))
    assert (settled.events, settled.held, settled.published_held, settled.pending_edits) == ([], False, 0, 0)

    for url in subscriber.known | set(URLS):
        news = subscriber.created[url].count("new")
        assert news == (0 if url in subscriber.baseline else 1), f"{url} announced new {news} times"
    held_new = {e.url for e in store.source_events(source, status="held", limit=1000) if e.kind == "new"}
    for url, bodies in subscriber.announced().items():
        if url in held_new:
            continue            # a flood of new posts waits for the operator, and so do their edits
        assert all(a != b for a, b in zip(bodies, bodies[1:])), f"{url}: an edit told twice: {bodies}"
        assert bodies[-1] == final[URLS.index(url)], f"{url}: subscribers last heard of {bodies[-1]!r}"
