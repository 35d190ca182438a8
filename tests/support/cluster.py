"""A cluster on this machine, for the cluster tests and bench/bench_cluster.py: replica blogs bound
to several loopback addresses (each address is one host to the crawl's politeness gate), a
PostgreSQL database of its own, a config watching every replica, and `postwatch worker`
processes. What the replicas logged tells whether the per-host delay held across workers.

The replicas run in the trial's process (BlogReplica threads: a few dozen, for the short tests
that change a replica's behaviour) or, with farm=True, in a replica farm process of their own
(tests/support/farm.py: a thousand, whose serving must not share the trial's cores and GIL).
The assertions the trials share are here too."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Iterator

from support.farm import LISTING_PATH, Farm, blog_name
from support.harness import PG_SERVER, Cli, free_port, sql
from postwatch.testing.mailcatcher import Delivery
from postwatch.testing.replica import BlogReplica, LoggedRequest, generate_posts


# postwatch.cluster's line at the end of each check job.
_CHECKED = re.compile(r"checked \d+ sources on (?P<host>\S+) \(.*\) in (?P<seconds>[\d.]+)s$")


@dataclass(frozen=True)
class RecoveredCheck:
    """A check whose worker was killed: from its start to its recovery marking it failed (epoch
    seconds), and the sources it was to check."""
    started: float
    failed: float
    sources: tuple[str, ...]


@dataclass
class ClusterSite:
    name: str
    host: str
    replica: BlogReplica        # or a FarmBlog: blog_url, add_post(title), post_url(post), requests

    @property
    def listing_path(self) -> str:
        return LISTING_PATH


def create_database() -> str:
    import psycopg

    name = f"pw_cluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ClusterTrial:
    """`with ClusterTrial(folder, hosts, per_host, ...) as trial:` — replicas started (in a farm
    process with farm=True), config written, database created (and dropped on the way out);
    trial.start_workers(n) starts workers."""
    folder: Path
    hosts: list[str]
    per_host: int
    smtp_port: int | None
    interval: str = "12s"
    jitter: str = "2s"
    delay: float = 0.2
    posts_per_blog: int = 3
    send_lease: str | None = None   # [digest] send_lease (None: postwatch's own, 5 minutes)
    smtp_connections: int | None = None     # [smtp] connections (None: postwatch's own, 4)
    shutdown_grace: str = "3s"      # [daemon] shutdown_grace: how long running jobs get after a SIGTERM
    # Short periods, but a stall well above what a loaded 2-core machine holds a loop for.
    worker_args: tuple[str, ...] = ("--plan-every", "2", "--heartbeat", "1", "--stalled-after", "10")
    farm: bool = False
    verbose: int = 0                # -v per step: 2 logs each planning's batches and the hosts it left
    database: str = ""
    sites: list[ClusterSite] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)       # when a worker was SIGKILLed (time.time())
    replica_farm: Farm | None = None

    def __enter__(self) -> "ClusterTrial":
        self.database = create_database()
        try:
            if self.farm:
                self.replica_farm = Farm(self.hosts, self.per_host, self.posts_per_blog, log=self.folder / "farm.log").start()
                self.sites = [ClusterSite(blog.name, blog.host, blog) for blog in self.replica_farm.blogs]
            else:
                for host in self.hosts:
                    for i in range(self.per_host):
                        replica = BlogReplica(generate_posts(self.posts_per_blog), host=host).start()
                        self.sites.append(ClusterSite(blog_name(host, i), host, replica))
            self.cli = Cli(self.write_config())
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def database_url(self) -> str:
        return f"{PG_SERVER}/{self.database}"

    def write_config(self) -> Path:
        sources = "".join(f'[[sources]]\nname = "{s.name}"\nurl = "{s.replica.blog_url}"\nkind = "link"\n\n' for s in self.sites)
        lease = f'send_lease = "{self.send_lease}"\n' if self.send_lease else ""
        smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {self.smtp_port}\nsecurity = "none"\n' if self.smtp_port else ""
        if self.smtp_port and self.smtp_connections:
            smtp += f"connections = {self.smtp_connections}\n"
        path = self.folder / "postwatch.toml"
        path.write_text(f'''database = "{self.database_url}"

[crawl]
interval = "{self.interval}"
jitter = "{self.jitter}"
download_delay = {self.delay}
concurrency_per_host = 1
autothrottle = false
timeout = 5
retries = 1

{sources}
[digest]
from = "postwatch <digest@postwatch.test>"
{lease}
{smtp}
[daemon]
listen = "127.0.0.1:{free_port()}"
shutdown_grace = "{self.shutdown_grace}"
''', encoding="utf-8")
        return path

    def start_workers(self, count: int, *extra: str) -> None:
        for _ in range(count):
            self.start_worker(*extra)

    def start_worker(self, *extra: str) -> subprocess.Popen:
        log = self.folder / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log)
        handle = log.open("w")
        process = subprocess.Popen(self.cli._command(("--log-format", "json", *["-v"] * self.verbose, "worker", *self.worker_args, *extra)), stdout=handle,
                                   stderr=subprocess.STDOUT, text=True, cwd=self.folder,
                                   env={**os.environ, "POSTWATCH_SECRET": "test-secret"})
        handle.close()
        self.workers.append(process)
        return process

    def stop_workers(self, timeout: float = 15) -> list[int]:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.workers:
            try:
                codes.append(process.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def checks_running(self) -> int:
        """How many check jobs the queue has running now."""
        from state.cluster import CHECK_TASK

        return sql(self.database, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'doing'",
                   CHECK_TASK)[0][0]

    def kill_a_worker(self, rng: random.Random, mid_check: bool = False) -> bool:
        """SIGKILL one live worker chosen by `rng`, at whatever it is doing, and start another in
        its place; False when none is alive. With `mid_check`, first wait (up to 10 s) for a
        moment a check is running: the worker killed is still a random one, which is the one
        running it often enough (which worker runs a job, the queue does not say)."""
        if mid_check:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.checks_running():
                time.sleep(0.1)
        alive = [process for process in self.workers if process.poll() is None]
        if not alive:
            return False
        rng.choice(alive).send_signal(signal.SIGKILL)
        self.kills.append(time.time())
        self.start_worker()
        return True

    def recovered_checks(self) -> dict[str, list[RecoveredCheck]]:
        """Per host, the checks a stalled worker held, from the queue's own events (a failed job
        and its events are kept)."""
        from state.cluster import CHECK_TASK

        rows = sql(self.database, """
            SELECT j.lock, min(e.at) FILTER (WHERE e.type = 'started'), max(e.at) FILTER (WHERE e.type = 'failed'),
                   j.args -> 'sources'
              FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
             WHERE j.task_name = %s AND j.status = 'failed' GROUP BY j.id, j.lock""", CHECK_TASK)
        held: dict[str, list[RecoveredCheck]] = {}
        for host, started, failed, sources in rows:
            held.setdefault(host, []).append(RecoveredCheck(started.timestamp(), failed.timestamp(), tuple(sources)))
        return held

    def check_turns(self, recovered: dict[str, list[RecoveredCheck]] | None = None) -> dict[str, list[tuple[float, float, bool]]]:
        """Per host, every check that ran: (started, ended, killed), epoch seconds. The host's lock
        is held from the check job's start to its end: the turn's wait, the crawl, storing the
        results. A check that ended is its worker's "checked N sources on HOST ... in Xs" line
        (the queue deletes a job that succeeded); a killed one, the queue's failed job, held
        until its recovery (`recovered`, read from the queue when not given)."""
        recovered = self.recovered_checks() if recovered is None else recovered
        turns: dict[str, list[tuple[float, float, bool]]] = {}
        for record in self.log_records():
            if checked := _CHECKED.match(record["message"]):
                ended = datetime.fromisoformat(record["time"]).timestamp()
                turns.setdefault(checked["host"], []).append((ended - float(checked["seconds"]), ended, False))
        for host, checks in recovered.items():
            turns.setdefault(host, []).extend((check.started, check.failed, True) for check in checks)
        return {host: sorted(windows) for host, windows in turns.items()}

    def accepted_but_pending(self, delivered: set[str]) -> set[str]:
        """Message-IDs the mail server has, whose outbox row is still pending: right after a
        SIGKILL, the messages a killed sender had handed over but not yet marked sent (the
        window SMTP cannot close, RFC 1047: each goes out again). bench/reliability.py's rule."""
        pending = {row[0] for row in sql(self.database, "SELECT message_id FROM outbox WHERE status = 'pending'")}
        return pending & delivered

    def log_lines(self) -> Iterator[tuple[Path, str, dict | None]]:
        """Each line the workers wrote: (log, line, its JSON log record, or None for what reached
        stderr outside logging)."""
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
                try:
                    yield log, line, json.loads(line)
                except ValueError:
                    yield log, line, None

    def log_records(self) -> Iterator[dict]:
        """The workers' log records (they log JSON lines: times to the millisecond)."""
        return (record for _, _, record in self.log_lines() if record is not None)

    def worker_output(self) -> str:
        """Every worker's output, as text: a JSON log record as its time, level and message (and
        traceback), any other line as it is."""
        shown: dict[Path, list[str]] = {}
        for log, line, record in self.log_lines():
            if record is not None:
                line = f"{record['time']} {record['level'].upper():7} {record['message']}"
                if "exception" in record:
                    line += f"\n{record['exception']}"
            shown.setdefault(log, []).append(line)
        return "\n".join(f"--- {log.name}\n" + "\n".join(lines) for log, lines in shown.items())

    def requests_by_site(self) -> dict[str, list[LoggedRequest]]:
        """Every replica's request log, by source name (from the farm: one snapshot)."""
        if self.replica_farm is not None:
            return self.replica_farm.requests()
        return {site.name: list(site.replica.requests) for site in self.sites}

    def requests_by_host(self, by_site: dict[str, list[LoggedRequest]] | None = None) -> dict[str, list[LoggedRequest]]:
        by_site = self.requests_by_site() if by_site is None else by_site
        by_host: dict[str, list[LoggedRequest]] = {}
        for site in self.sites:
            by_host.setdefault(site.host, []).extend(by_site[site.name])
        return {host: sorted(requests, key=lambda r: r.time) for host, requests in by_host.items()}

    def check_times_by_site(self) -> dict[str, list[float]]:
        """When each check of each source began: its listing's requests (the first URL of every check)."""
        if self.replica_farm is not None:
            return self.replica_farm.check_times()
        return {name: _check_times(requests) for name, requests in self.requests_by_site().items()}

    def check_times(self, site: ClusterSite) -> list[float]:
        if self.replica_farm is not None:
            return self.check_times_by_site()[site.name]
        return _check_times(site.replica.requests)

    def __exit__(self, *exc) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.replica_farm is not None:
            self.replica_farm.close()
        else:
            # One at a time, each stop waits out its server's 0.5 s poll: 15 s for 30 replicas.
            with ThreadPoolExecutor(max_workers=32) as pool:
                list(pool.map(lambda site: site.replica.stop(), self.sites))
        if self.database:
            time.sleep(0.1)
            drop_database(self.database)


def overlaps_and_gaps(requests: list[LoggedRequest]) -> tuple[int, float]:
    """How many requests (sorted by arrival) started while the one before them was still being
    answered, and the smallest gap between two request starts."""
    overlapping = sum(1 for before, after in zip(requests, requests[1:])
                      if before.finished is None or after.time < before.finished)
    gaps = [after.time - before.time for before, after in zip(requests, requests[1:])]
    return overlapping, min(gaps) if gaps else float("inf")


def _check_times(requests: list[LoggedRequest]) -> list[float]:
    return sorted(r.time for r in requests if r.path == LISTING_PATH and not r.query)


# ---------------------------------------------------------------------------------------------
# What the trials assert
# ---------------------------------------------------------------------------------------------
def all_checked(trial: ClusterTrial, times: int = 1) -> bool:
    return all(len(checks) >= times for checks in trial.check_times_by_site().values())


def check_lags(trial: ClusterTrial, idle_gap: float, by_site: dict[str, list[LoggedRequest]] | None = None,
               turns: dict[str, list[tuple[float, float, bool]]] | None = None,
               plan_every: float = 0.0) -> dict[str, list[tuple[float, float]]]:
    """Per source, (start, lag) of each check: lag is how long its host had been busy when the
    check began, since the host's last pause longer than `idle_gap` (the longest a planned
    batch may wait for a worker to take it). A check's sources are planned together and
    crawled one after the other (the per-host delay), and a batch planned while another of its
    host runs waits for it (the host's lock): a check begins at most `lag` + idle_gap after it
    was planned. The host is busy while a request of it is answered and through every check
    job's turn (`turns`: also while a worker stores what it read, and while a killed worker's
    check holds the host's lock until its recovery), and for `plan_every` after a turn begins:
    the queue holds one waiting batch per host, so a source due while one waits is planned at
    the first planning after that batch begins (measured: 3.5 s idle between a 1.7 s batch and
    the next planning's)."""
    by_site = trial.requests_by_site() if by_site is None else by_site
    turns = trial.check_turns() if turns is None else turns
    lags: dict[str, list[tuple[float, float]]] = {name: [] for name in by_site}
    host_of = {site.name: site.host for site in trial.sites}
    per_host: dict[str, list[tuple[float, float, str | None, bool]]] = {}
    for name, requests in by_site.items():
        for r in requests:
            listing = r.path == LISTING_PATH and not r.query
            per_host.setdefault(host_of[name], []).append((r.time, r.finished or r.time, name, listing))
    for host, windows in turns.items():
        per_host.setdefault(host, []).extend((start, max(end, start + plan_every), None, False) for start, end, _ in windows)
    for requests in per_host.values():
        requests.sort()
        run_start, busy_until = None, None
        for started, finished, name, listing in requests:
            if busy_until is None or started - busy_until > idle_gap:
                run_start = started
            busy_until = max(busy_until or finished, finished)
            if listing:
                lags[name].append((started, started - run_start))
    return lags


def longest_turn_pause(trial: ClusterTrial, turns: dict[str, list[tuple[float, float, bool]]],
                       by_site: dict[str, list[LoggedRequest]]) -> float:
    """The longest time a check that ended (not a killed one) held its host with no request in
    flight: waiting for its turn, the gate's quiet time, the edit confirmation's pause, storing."""
    by_host = trial.requests_by_host(by_site)
    longest = 0.0
    for host, windows in turns.items():
        requests = by_host.get(host, [])
        for started, ended, failed in windows:
            if failed:
                continue
            busy_until = started
            for r in requests:
                if r.time > ended:
                    break
                if (r.finished or r.time) < started:
                    continue
                longest = max(longest, r.time - busy_until)
                busy_until = max(busy_until, r.finished or r.time)
            longest = max(longest, ended - busy_until)
    return longest


def assert_checked_once_per_interval(trial: ClusterTrial, *, interval: float, jitter: float, plan_every: float,
                                     lag: float, turn_pause: float,
                                     by_site: dict[str, list[LoggedRequest]] | None = None) -> dict:
    """Each source's consecutive checks are an interval apart, give or take its jitter share, the
    planning period and the time its host was busy (check_lags): a check begins between its
    planning and its lag after it, and a source's next check is planned an interval plus its
    jitter share after its planning, at the next planning run. Next checks are planned from the
    planning time, so a late check does not push the source's later checks back.

    A killed worker's check holds its host from its start to its recovery (--stalled-after
    later), which makes the sources it had not recorded due at once: for those sources the next
    check comes at most a planning period and the host's lag after the recovery, and may come
    sooner than an interval after a check the kill cut short. No other slack. And no check that
    ended held its host longer than `turn_pause` with no request in flight (a turn that hangs
    would count as busy otherwise). Returns the figures."""
    by_site = trial.requests_by_site() if by_site is None else by_site
    recovered = trial.recovered_checks()
    turns = trial.check_turns(recovered)
    lags = check_lags(trial, lag, by_site, turns, plan_every)
    pause = longest_turn_pause(trial, turns, by_site)
    assert pause <= turn_pause, f"a check held its host {pause:.1f}s with no request in flight (at most {turn_pause}s)"
    killed: dict[str, list[RecoveredCheck]] = {}
    for checks in recovered.values():
        for check in checks:
            for name in check.sources:
                killed.setdefault(name, []).append(check)
    latest, checks_seen, retried = 0.0, 0, 0
    for name, starts in lags.items():
        checks_seen += len(starts)
        for (before, lag_before), (after, lag_after) in zip(starts, starts[1:]):
            gap = after - before
            low = interval - lag_before - lag
            high = interval + jitter + plan_every + lag_after + lag
            cut = [check for check in killed.get(name, ()) if check.started <= after and check.failed >= before]
            if cut:
                retried += 1
                low = 0.0
                high = max(high, max(check.failed for check in cut) - before + plan_every + lag_after + lag)
            assert low <= gap <= high, (f"{name}: checks at {before:.1f} and {after:.1f} {gap:.1f}s apart, not "
                                        f"{low:.1f}..{high:.1f}s (lags {lag_before:.1f}s, {lag_after:.1f}s"
                                        f"{', a killed check retried' if cut else ''})")
            latest = max(latest, gap - interval - jitter)
    return {"checks": checks_seen, "max_check_late_s": round(latest, 1), "retried_after_a_kill": retried,
            "longest_turn_pause_s": round(pause, 1)}


def assert_politeness(trial: ClusterTrial, delay: float, slack: float = 0.05,
                      by_site: dict[str, list[LoggedRequest]] | None = None) -> dict[str, float]:
    """No request to a host began before the one before it was answered, and request starts
    to a host are at least half the delay apart (the gate's jitter is ±50 %; `slack` for the
    clocks of the gate and the replica). Returns each host's smallest gap."""
    gaps = {}
    for host, requests in trial.requests_by_host(by_site).items():
        overlapping, min_gap = overlaps_and_gaps(requests)
        assert overlapping == 0, f"{host}: {overlapping} requests started while another was in flight"
        assert min_gap >= delay * 0.5 - slack, f"{host}: two requests {min_gap:.3f}s apart (delay {delay}s)"
        gaps[host] = min_gap
    return gaps


def told_by_address(deliveries: list[Delivery], urls: set[str]) -> dict[str, Counter]:
    """Per recipient (the To header's address, lower-cased): how many messages named each of `urls`."""
    told: dict[str, Counter] = {}
    for delivery in deliveries:
        counter = told.setdefault(parseaddr(delivery.to)[1].lower(), Counter())
        counter.update(delivery.urls & urls)
    return told


def assert_sent_once(trial: ClusterTrial, deliveries: list[Delivery]) -> None:
    """No Message-ID delivered twice, and the messages delivered are the ones the outbox sent."""
    delivered = [d.message_id for d in deliveries]
    duplicates = [m for m, n in Counter(delivered).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} Message-IDs delivered twice: {duplicates[:5]}"
    sent = {row[0] for row in sql(trial.database, "SELECT message_id FROM outbox WHERE status = 'sent'")}
    assert set(delivered) == sent, (f"the messages delivered are not the ones the outbox sent: "
                                    f"{len(set(delivered) - sent)} delivered not sent, {len(sent - set(delivered))} sent not delivered")


def assert_mailed_once(trial: ClusterTrial, deliveries: list[Delivery], subscribers: list[str], new_urls: set[str]) -> None:
    """assert_sent_once, and every one of `subscribers` told every new post exactly once."""
    assert_sent_once(trial, deliveries)
    told = told_by_address(deliveries, new_urls)
    expected = Counter({url: 1 for url in new_urls})
    for address in subscribers:
        assert told.get(address.lower(), Counter()) == expected, f"{address}: {told.get(address.lower())}"


def published_events(trial: ClusterTrial, urls: set[str]) -> dict[str, tuple[int, float]]:
    """url -> (seq, published at, epoch seconds) of the published "new" event of each of `urls`."""
    rows = sql(trial.database, "SELECT url, seq, created_at FROM events WHERE status = 'published' AND kind = 'new'")
    return {url: (seq, created.timestamp()) for url, seq, created in rows if url in urls}


def assert_digests_told_once_or_pending(trial: ClusterTrial, deliveries: list[Delivery], due_at: dict[str, float],
                                        new_urls: set[str], compose_within: float, publish_lag: float = 5.0) -> dict:
    """Digest subscribers (address -> when their digest fell due, epoch seconds): each new post
    told at most once; every post published before their digest (by more than `publish_lag`:
    an event's time is taken just before its check's transaction commits) told in it, none
    published more than `compose_within` after it; and nothing lost: a post not told is still
    pending for them (its event after their cursor)."""
    events = published_events(trial, new_urls)
    assert set(events) == new_urls, f"new posts without a published event: {sorted(new_urls - set(events))[:5]}"
    cursors = {email.lower(): cursor for email, cursor in sql(trial.database, "SELECT email, cursor FROM subscribers")}
    told = told_by_address(deliveries, new_urls)
    figures = Counter()
    for address, due in due_at.items():
        counts = told.get(address.lower(), Counter())
        twice = [url for url, n in counts.items() if n > 1]
        assert not twice, f"{address}: told {twice} more than once"
        for url in new_urls:
            seq, published = events[url]
            if counts[url]:
                assert published <= due + compose_within, (f"{address}: told {url}, published {published - due:.0f}s "
                                                           "after their digest fell due")
                figures["told"] += 1
            else:
                assert seq > cursors[address.lower()], f"{address}: {url} neither told nor pending (lost)"
                assert published > due - publish_lag, (f"{address}: {url}, published {due - published:.0f}s before "
                                                       "their digest, not in it")
                figures["pending"] += 1
    return dict(figures)
