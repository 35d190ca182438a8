"""The check use case: one sweep of many sources (plan each source's check, ask the first
conditional GETs with the lean client, crawl what needs more, conclude each source on its own),
what a check tells the operator, and the check side's health."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

from crawler.plan import CrawlPlan, CrawlReport, SourceSpec, feed_alone
from postwatch.config import Config
from state import SourceRecord, StorageError

if TYPE_CHECKING:
    from crawler.revalidate import Revalidation
    from postwatch.alerts import Alerts
    from postwatch.metrics import Metrics
    from postwatch.settings import SourceSettings
    from state import Store

# Scrapy and Twisted (crawler.run, 0.5-1.2 s measured on this 2-core machine) are imported only
# by a sweep with more to read than its first conditional GETs.

log = logging.getLogger("postwatch")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class CheckSummary:
    source: str
    ok: bool
    error: str | None = None
    baseline: bool = False
    held: bool = False
    hold_reason: str | None = None
    full_sweep: bool = False
    not_modified: bool = False
    posts_seen: int = 0
    requests: int = 0
    response_bytes: int = 0
    events: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    pending_edits: int = 0            # new content seen once: an edit if the next check sees it again
    published_held: int = 0           # held changes this check confirmed (they go out like new events)
    became_volatile: list[str] = field(default_factory=list)

    def then(self, confirming: "CheckSummary") -> "CheckSummary":
        """This check with the confirming pass that followed it within the same check."""
        self.ok, self.error = confirming.ok, confirming.error or self.error
        self.events = [*self.events, *confirming.events]
        self.requests += confirming.requests
        self.response_bytes += confirming.response_bytes
        self.pending_edits = confirming.pending_edits
        self.published_held += confirming.published_held
        self.became_volatile = [*self.became_volatile, *confirming.became_volatile]
        self.held, self.hold_reason = self.held or confirming.held, self.hold_reason or confirming.hold_reason
        return self


def describe_summary(summary: CheckSummary) -> str:
    if not summary.ok:
        return summary.error or f"{summary.source}: check failed"
    if summary.baseline:
        return f"{summary.source}: baseline recorded, {summary.posts_seen} posts ({summary.requests} requests)"
    counts: dict[str, int] = {}
    for event in summary.events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    changes = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no changes"
    held = f" — HELD as suspect: {summary.hold_reason}" if summary.held else ""
    if summary.published_held:
        held += f"; {summary.published_held} held change(s) confirmed and published"
    if summary.pending_edits:
        held += f"; {summary.pending_edits} edit(s) seen once, to be confirmed by the next check"
    if summary.became_volatile:
        held += f"; {len(summary.became_volatile)} post(s) change on every fetch (volatile, not mailed)"
    sweep = ", full sweep" if summary.full_sweep else ""
    return f"{summary.source}: {changes}{held} ({summary.requests} requests, {summary.response_bytes} bytes{sweep})"


def check_kind(state, full: bool | None, now: datetime, full_sweep_every) -> tuple[bool, bool]:
    """(baseline, full sweep) for a source's check now. A baseline is never a sweep; a
    sweep is asked for (`full`) or due ([crawl] full_sweep_every)."""
    if not state.baseline_done:
        return True, False
    if full is not None:
        return False, full
    last = state.last_full_sweep_at
    return False, last is not None and now - last >= full_sweep_every


def plan_check(record: SourceRecord, state, baseline: bool, sweep: bool, now: datetime) -> CrawlPlan:
    """What the crawl of one source is asked to do. An edit seen once (or held as suspect) is
    looked at again at this very check, and a sweep re-reads volatile posts in full to see
    whether they settled."""
    awaiting = {} if baseline else state.awaiting_confirmation
    return CrawlPlan(
        source=SourceSpec(name=record.name, url=record.url, kind=record.kind, feed_url=record.read_feed_url,
                          sitemap_url=record.sitemap_url, selectors=dict(record.selectors or {}),
                          feed_discovered=not record.feed_url and bool(record.discovered_feed_url)),
        known_urls={url for url, post in state.known.items() if post.status != "removed"},
        known_published={url: post.published_at for url, post in state.known.items()
                         if post.status != "removed" and post.published_at},
        validators=state.validators,
        robots=state.robots,
        baseline=baseline,
        # A full sweep reads every known page; otherwise those the revisit schedule says.
        sweep_urls=list(state.known) if sweep else ([] if baseline else list(state.revisits)),
        recheck_urls=sorted(_recheck_urls(state, awaiting, baseline, sweep)),
        recheck_feed=any("feed" in origins for origins in awaiting.values()),
        # An "auto" source between two reads of its listing asks its discovered feed alone
        # (crawler.plan.feed_alone); a baseline and a full sweep read the listing too.
        feed_alone=not (baseline or sweep) and feed_alone(record.kind, record.feed_url, record.discovered_feed_url,
                                                          state.listing_read_at, now),
    )


def _recheck_urls(state, awaiting: dict, baseline: bool, sweep: bool) -> set[str]:
    """The pages a check reads again without validators: an edit awaiting its confirming
    fetch, a removal to confirm, and at a sweep the volatile posts."""
    urls = {url for url, origins in awaiting.items() if "page" in origins}
    if sweep:
        urls |= state.volatile_pages
    if not baseline:
        urls |= set(state.removals_to_confirm)
    return urls


@dataclass
class Sweep:
    """One sweep's working set: the sources' records, what each check is (baseline, full
    sweep), their crawl states, the lean client's answers, and the reports and summaries so far."""
    records: dict[str, SourceRecord]
    now: datetime
    summaries: dict[str, CheckSummary] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    revalidations: dict[str, Revalidation] = field(default_factory=dict)
    reports: dict[str, CrawlReport] = field(default_factory=dict)

    def plan(self, name: str) -> CrawlPlan:
        return plan_check(self.records[name], self.states[name], *self.kinds[name], now=self.now)

    def quiet(self) -> list[str]:
        """The sources the lean client settled with nothing held: recorded by one UPDATE."""
        return [n for n in self.reports
                if n in self.revalidations and self.revalidations[n].settled and self.states[n].quiet]


class Checker:
    """Checks sources: `check_many` is one sweep, with a confirming pass for edits seen once."""

    def __init__(self, config: Config, store: Store, metrics: Metrics, alerts: Alerts,
                 interval: Callable[[str], timedelta], crawl_settings: dict[str, Any]):
        self.config, self.store, self.metrics, self.alerts = config, store, metrics, alerts
        self.interval = interval                  # source name -> its interval (SourceSettings.interval)
        self.crawl_settings = crawl_settings
        self.last_cycle_end: float | None = None
        self.sweep_started: float | None = None        # time.time() of the check_many under way
        self.crash_streaks: dict[str, int] = {}        # source -> checks crashed in a row (this process)
        self.log_failures = True      # the CLI prints its own one line per failed source

    async def check_source(self, name: str, *, full: bool | None = None) -> CheckSummary:
        """Check one source (a sweep of one)."""
        return (await self.check_many([name], full=full))[0]

    async def check_many(self, names: Iterable[str], *, full: bool | None = None, progress=None) -> list[CheckSummary]:
        """Check the named sources in one sweep. Sources where an edit was seen once are looked
        at again `[crawl] confirm_edits_after` later, within the same check: the edit is mailed
        when that fetch sees the same content (a rotating ad or counter would differ), without
        waiting for the next interval."""
        started = time.monotonic()
        self.sweep_started = time.time()
        names = list(dict.fromkeys(names))
        if progress:
            for name in names:
                progress(f"checking {name} …")
        try:
            summaries = await self._sweep(names, full)
            confirm = [n for n, s in summaries.items() if s.ok and s.pending_edits]
            if confirm:
                await asyncio.sleep(self.config.crawl.confirm_edits_after.total_seconds())
                for name, confirming in (await self._sweep(confirm, False)).items():
                    summaries[name].then(confirming)
        finally:
            self.sweep_started = None
        seconds = time.monotonic() - started
        for summary in summaries.values():
            summary.seconds = seconds
        self.last_cycle_end = time.time()
        self.metrics.check_cycle_end.set(self.last_cycle_end)
        return [summaries[n] for n in names]

    async def _sweep(self, names: list[str], full: bool | None) -> dict[str, CheckSummary]:
        """One sweep: the named sources' state read at once, their first conditional GETs asked by
        the lean client (crawler.revalidate), one Scrapy crawl for the sources that need more,
        and every source's result applied in a transaction of its own (the checks that saw
        nothing new share one), so one source's failure changes no other source's result."""
        sweep = Sweep(records={r.name: r for r in self.store.list_sources() if r.name in set(names)}, now=utcnow())
        sweep.summaries = {n: CheckSummary(source=n, ok=False, error=f"{n}: no such source")
                           for n in names if n not in sweep.records}
        sweep.states = self._crawl_states(sweep, sweep.records, posts_too=False)
        sweep.kinds = {name: check_kind(state, full, sweep.now, self.config.crawl.full_sweep_every)
                       for name, state in sweep.states.items()}
        await self._revalidate(sweep)
        to_crawl = [n for n in sweep.states if n not in sweep.reports]
        if to_crawl:
            await self._crawl(sweep, to_crawl)
        quiet = self._record_quiet(sweep)
        for name, record in sweep.records.items():
            if name not in sweep.summaries and name in sweep.reports:
                sweep.summaries[name] = self._conclude_safely(sweep, record, quiet=name in quiet)
        return sweep.summaries

    async def _revalidate(self, sweep: Sweep) -> None:
        """The normal checks' first conditional GETs, with the lean client: a source they settle
        has its report; one too slow for its first exchange's deadline has failed its check."""
        from crawler.revalidate import revalidator

        lean = [sweep.plan(n) for n in sweep.states if not any(sweep.kinds[n])]
        if not lean:
            return
        sweep.revalidations = await revalidator(self.config.crawl.parallel_sources).revalidate(lean, self.crawl_settings)
        for name, answer in sweep.revalidations.items():
            if answer.timed_out:        # the check failed, and the sweep goes on
                sweep.reports[name] = answer.timed_out_report()
            elif answer.settled:
                sweep.reports[name] = answer.settled_report()

    async def _crawl(self, sweep: Sweep, names: list[str]) -> None:
        """One Scrapy crawl for the sources that need more than their first answers, handed
        those answers so that no URL is asked twice."""
        from crawler.run import crawl_sources    # Scrapy and Twisted: only a sweep with more to read loads them

        full_states = self._crawl_states(sweep, {n: sweep.records[n] for n in names})
        sweep.states.update(full_states)
        names = [n for n in names if n in full_states]
        plans = []
        for name in names:
            plan = sweep.plan(name)
            if name in sweep.revalidations:
                plan.prefetched = dict(sweep.revalidations[name].answers)
            plans.append(plan)
        try:
            crawled = await crawl_sources(plans, self.crawl_settings) if plans else {}
        except StorageError:
            raise
        except Exception as exc:    # a bug in the crawl: each of its sources' checks crashed
            crawled = {}
            for name in names:
                sweep.summaries[name] = self._crashed(sweep.records[name], exc)
        for name, report in crawled.items():
            if name in sweep.revalidations:
                report.requests += sweep.revalidations[name].unanswered
        sweep.reports.update(crawled)

    def _record_quiet(self, sweep: Sweep) -> set[str]:
        """The quiet checks recorded by one UPDATE, at the sweep's start time: checked when the
        sweep began, not when its slowest source gave up (a slow host's deadline must not push
        the other sources' next checks later at every sweep)."""
        quiet = sweep.quiet()
        try:
            listing_read = [n for n in quiet if sweep.revalidations[n].listing_read]
            self.store.record_quiet_checks(quiet, sweep.now, listing_read=listing_read)
        except StorageError as exc:
            for name in quiet:
                sweep.summaries[name] = self._storage_failure(name, exc)
        return set(quiet)

    def _crawl_states(self, sweep: Sweep, records: dict[str, SourceRecord], **options) -> dict:
        """The sources' crawl states in one read; when that read crashes (a malformed row of one
        source), each source's on its own, so that only the sources it crashes on fail their
        check (recorded in the sweep's summaries)."""
        try:
            return self.store.crawl_states(records, now=sweep.now, **options)
        except StorageError:
            raise
        except Exception:
            states = {}
            for name, record in records.items():
                try:
                    states.update(self.store.crawl_states([name], now=sweep.now, **options))
                except StorageError:
                    raise
                except Exception as exc:
                    sweep.summaries[name] = self._crashed(record, exc)
            return states

    def _crashed(self, record: SourceRecord, exc: Exception) -> CheckSummary:
        """A check that crashed is a failed check like any other: recorded (so it waits its
        interval, not the next tick), counted, alerted; its traceback logged at the first crash."""
        name = record.name
        streak = self.crash_streaks[name] = self.crash_streaks.get(name, 0) + 1
        self.metrics.check_crashes.labels(name).inc()
        error = f"{name}: check crashed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        try:
            self._record_failure(record, error, traceback_of=exc if streak == 1 else None)
        except StorageError as storage:
            return self._storage_failure(name, storage)
        return CheckSummary(source=name, ok=False, error=error)

    def _record_failure(self, record: SourceRecord, error: str, traceback_of: Exception | None = None) -> int:
        """One more failed check of `record`'s source: stored, counted, told once when it starts
        failing (with the traceback of a first crash: a bug to report), and alerted after
        [alerts] failures_before_alert in a row."""
        name = record.name
        failures = self.store.record_check_failure(name, error, utcnow())
        self.metrics.checks.labels(name, "error").inc()
        if traceback_of is not None:
            log.error("%s", error, exc_info=traceback_of, extra={"source": name})
        elif self.log_failures:
            if failures == 1:
                log.error("%s (started failing)", error, extra={"source": name})
            else:
                log.info("%s (%d failed checks in a row)", error, failures, extra={"source": name})
        if failures >= self.config.alerts.failures_before_alert:
            self.alerts.failing(name, record.url, failures, error)
        return failures

    def _storage_failure(self, name: str, exc: StorageError) -> CheckSummary:
        log.error("%s: %s", name, exc, extra={"source": name})
        return CheckSummary(source=name, ok=False, error=f"{name}: {exc}")

    def _conclude_safely(self, sweep: Sweep, record: SourceRecord, *, quiet: bool) -> CheckSummary:
        name = record.name
        baseline, full = sweep.kinds[name]
        try:
            return self._conclude(record, sweep.reports[name], baseline=baseline, sweep=full, quiet=quiet,
                                  failures_before=sweep.states[name].failures)
        except StorageError as exc:     # the database may come back: one line, no traceback
            return self._storage_failure(name, exc)
        except Exception as exc:  # a bug in one source must not stop the others
            return self._crashed(record, exc)

    def _conclude(self, record: SourceRecord, report: CrawlReport, *, baseline: bool, sweep: bool, quiet: bool,
                  failures_before: int = 0) -> CheckSummary:
        """Apply one source's report to the stored state (unless it was a quiet check, already
        recorded) and tell the operator what needs telling (`failures_before`: failed checks in a
        row before this one)."""
        name = record.name
        summary = CheckSummary(source=name, ok=report.ok, error=report.error, baseline=baseline, full_sweep=sweep,
                               not_modified=report.not_modified, posts_seen=len(report.posts),
                               requests=report.requests, response_bytes=report.response_bytes)
        self.metrics.requests.labels(name).inc(report.requests)
        self.metrics.not_modified.labels(name).inc(report.not_modified_count)
        self.metrics.response_bytes.labels(name).inc(report.response_bytes)
        now = utcnow()
        self.store.record_check_traffic(name, report.traffic(), now)     # the console's figures (state.traffic)
        if not report.ok:
            self.crash_streaks.pop(name, None)
            self._record_failure(record, report.error or f"{name}: check failed")
            return summary
        # A crash in applying the check (a bug, a malformed stored row) extends the streak.
        result = None if quiet else self.store.apply_check(name, report, now)
        self.crash_streaks.pop(name, None)
        self.metrics.checks.labels(name, "ok").inc()
        self.metrics.last_success.labels(name).set(now.timestamp())
        if failures_before and self.log_failures:
            log.info("%s: stopped failing after %d checks", name, failures_before, extra={"source": name})
        if report.feed_problem:
            self.alerts.feed_problem(name, record.url, report.feed_problem)
        if result is None:
            return summary
        if sweep or baseline:
            self.store.mark_full_sweep(name, now)
        self._tell(summary, result, report)
        return summary

    def _tell(self, summary: CheckSummary, result, report: CrawlReport) -> None:
        """What an applied check found, into its summary, the metrics, the log and the alerts."""
        name = summary.source
        summary.events, summary.held, summary.hold_reason = result.events, result.held, result.hold_reason
        summary.baseline = result.baseline
        summary.pending_edits, summary.became_volatile = result.pending_edits, result.became_volatile
        summary.published_held = result.published_held
        for event in result.events:
            self.metrics.events.labels(name, event.kind).inc()
        if result.held:
            log.warning("%s: %d changes held as suspect: %s", name, len(result.events), result.hold_reason,
                        extra={"source": name})
            self.alerts.held(name, len(result.events), result.hold_reason)
        if result.became_volatile:
            self.alerts.volatile(name, result.became_volatile)
        for url, error in report.failed.items():
            log.warning("%s: %s: %s", name, url, error, extra={"source": name})

    # -- health ----------------------------------------------------------------------------
    def sweep_limit(self) -> float:
        """How long a sweep may run before /healthz calls the daemon stuck: twice the longest
        interval plus the jitter (as for the age of the last sweep), or, when that is shorter,
        what a sweep's timeouts allow — every exchange ([crawl] timeout, the whole of it) tried
        1 + [crawl] retries times, four rounds of them (the lean first GETs, the listing, the posts,
        robots.txt), plus the wait before an edit is confirmed."""
        crawl = self.config.crawl
        intervals = [self.interval(s.name) for s in self.config.sources] or [crawl.interval]
        by_interval = 2 * max([*intervals, crawl.interval]).total_seconds() + crawl.jitter.total_seconds()
        by_timeouts = 4 * crawl.timeout * (crawl.retries + 1) + crawl.confirm_edits_after.total_seconds()
        return max(by_interval, by_timeouts)

    def check_problem(self) -> str | None:
        """Why the check side is unhealthy, in one line: a sweep running past sweep_limit(), or
        sources whose last [alerts] failures_before_alert checks (or more) all crashed."""
        if self.sweep_started is not None:
            running, limit = time.time() - self.sweep_started, self.sweep_limit()
            if running > limit:
                return f"a sweep has been running for {running:.0f}s (limit {limit:.0f}s)"
        crashing = sorted(n for n, streak in self.crash_streaks.items()
                          if streak >= self.config.alerts.failures_before_alert)
        if crashing:
            return f"checks crashed {self.config.alerts.failures_before_alert}+ times in a row: {', '.join(crashing)}"
        return None

    def cycle_health(self) -> tuple[bool, str]:
        """(ok, detail) of the sweeps for /healthz: the last one ended within twice the longest
        interval plus the jitter."""
        if self.last_cycle_end is None:
            return True, "starting"
        intervals = [self.interval(s.name) for s in self.store.list_sources()] or [self.config.crawl.interval]
        allowed = 2 * max(intervals).total_seconds() + self.config.crawl.jitter.total_seconds()
        age = time.time() - self.last_cycle_end
        if age > allowed:
            return False, f"last check ended {age:.0f}s ago (limit {allowed:.0f}s)"
        return True, f"last check ended {age:.0f}s ago"
