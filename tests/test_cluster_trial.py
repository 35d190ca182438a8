"""Issue #19's trial at full size: 1,000 sources served by a replica farm (its own process) on 20
loopback hosts, 10,000 subscribers (immediate, and daily at times spread over the trial in
several time zones), the mail catcher in its own process, 3 `postwatch worker` processes,
intervals of a minute, 10 minutes of new posts at random sources; then the same with workers
SIGKILLed at random points and started again.

From the replicas' own request logs: every source checked once per interval (within its
jitter, the planning period and the time its host was busy; in the kill trial, a check a killed
worker held is recovered after --stalled-after); no host ever has two requests in flight and its
minimum gap holds. From the catcher and the database: the Message-IDs delivered are the outbox's
sent set, none twice; every immediate subscriber told every new post exactly once; every daily
subscriber told each new post at most once, in the digest that fell due after it, and every
post not told still pending for them.

Slow (CI deselects them); sizes from the environment, for a reduced run:

    POSTWATCH_TRIAL_SOURCES=200 POSTWATCH_TRIAL_HOSTS=10 POSTWATCH_TRIAL_SUBSCRIBERS=2000 \\
    POSTWATCH_TRIAL_MINUTES=3 pytest -m slow tests/test_cluster_trial.py -s
"""
from __future__ import annotations

import csv
import json
import os
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from support.cluster import (ClusterTrial, assert_checked_once_per_interval, assert_digests_told_once_or_pending,
                                       assert_mailed_once, assert_politeness)
from support.harness import sql, wait_for
from postwatch.testing.mailcatcher import MailCatcherProcess

SOURCES = int(os.environ.get("POSTWATCH_TRIAL_SOURCES", 1000))
HOST_COUNT = int(os.environ.get("POSTWATCH_TRIAL_HOSTS", 20))
SUBSCRIBERS = int(os.environ.get("POSTWATCH_TRIAL_SUBSCRIBERS", 10_000))
MINUTES = float(os.environ.get("POSTWATCH_TRIAL_MINUTES", 10))
WORKERS = int(os.environ.get("POSTWATCH_TRIAL_WORKERS", 3))
SEED = int(os.environ.get("POSTWATCH_TRIAL_SEED", 19))

HOSTS = [f"127.0.0.{2 + n}" for n in range(HOST_COUNT)]
INTERVAL, JITTER, PLAN_EVERY, DELAY = 60.0, 10.0, 5.0, 0.2
IMMEDIATE_SHARE = 0.2
TIME_ZONES = ["UTC", "Asia/Seoul", "America/New_York", "Europe/Berlin", "Asia/Kolkata"]
POST_EVERY = (20.0, 40.0)          # seconds between new posts, at random sources
# Seconds between SIGKILLs of a worker chosen at random (the kill trial), half of them at a
# moment a check runs (at the reduced size, 13 kills at random instants found none in flight):
# often enough that many hosts lose a check to a kill, rarely enough that 3 workers stay up
# most of the time (a new worker takes a few seconds to load Scrapy and sync the sources).
KILL_EVERY = (5.0, 25.0)
SLACK = 0.05                       # between the gate's clock and the replica's
# The longest a planned batch may wait for a worker to take it (all 3 x 4 job slots busy with
# checks and mail jobs, 2 loaded cores): also the longest pause inside a host's busy spell.
LAG = 3.0
# The longest a check may hold its host with no request in flight (the host counts as busy
# through a check's whole turn): a worker's first check loading Scrapy, storing 50 sources'
# results, the edit confirmation's 2 s, on 2 loaded cores. A turn that hangs fails the trial.
TURN_PAUSE = 10.0
# From a digest's time to its composition: the planner's minute tick, then a compose job of 500
# subscribers behind whatever the workers are doing.
COMPOSE_WITHIN = 120.0
STALLED_AFTER = 15                 # well above a loaded loop's pauses: no false stall
SEND_LEASE = "60s"                 # longer than a flush of 1,000 claimed messages; what a killed sender claimed comes back within a minute
# Every host's batch has a job slot, and each worker one more for mail: 3 x (7 + 1) for 20 hosts. With the default 4 (12 slots), 8 of the 20
# baseline batches (50 sources, about 26 s each at this delay) waited for a slot, so their
# sources' first check began up to 26 s after its planning, and the next one, planned from the
# planning time, 40.6 s after it (measured). Operators size --concurrency the same way.
CONCURRENCY = max(4, -(-HOST_COUNT // WORKERS) + 1)
WORKER_ARGS = ("--plan-every", f"{PLAN_EVERY:.0f}", "--heartbeat", "2", "--stalled-after", str(STALLED_AFTER),
               "--concurrency", str(CONCURRENCY))


def write_subscribers(path: Path, start: float, rng: random.Random) -> tuple[list[str], dict[str, float]]:
    """IMMEDIATE_SHARE immediate subscribers; the others daily, each at a whole minute of the
    trial (from its second minute on) written as the local time of one of TIME_ZONES. Returns
    the immediate addresses and, per daily address, when its digest falls due (epoch)."""
    first_minute = datetime.fromtimestamp(start, timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=2)
    minutes = max(1, int(MINUTES) - 1)
    immediate, daily = [], {}
    with path.open("w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["email", "cadence", "at", "tz"])
        for n in range(SUBSCRIBERS):
            address = f"reader{n}@example.org"
            if n < SUBSCRIBERS * IMMEDIATE_SHARE:
                rows.writerow([address, "immediate", "", ""])
                immediate.append(address)
                continue
            due = first_minute + timedelta(minutes=rng.randrange(minutes))
            zone = rng.choice(TIME_ZONES)
            rows.writerow([address, "daily", due.astimezone(ZoneInfo(zone)).strftime("%H:%M"), zone])
            daily[address] = due.timestamp()
    return immediate, daily


def baselines_done(trial: ClusterTrial) -> int:
    if sql(trial.database, "SELECT to_regclass('sources')")[0][0] is None:      # the first worker migrates
        return 0
    return sql(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0]


def drained(trial: ClusterTrial, new_urls: set[str], last_due: float) -> bool:
    """Every new post published, every immediate subscriber past it, the last digest's time
    passed by COMPOSE_WITHIN, no mail job left and nothing pending in the outbox."""
    from state.cluster import COMPOSE_TASK, DELIVER_TASK

    published = sql(trial.database, "SELECT count(*), max(seq) FROM events WHERE status = 'published' AND kind = 'new'")
    count, newest = published[0]
    if count < len(new_urls) or time.time() < last_due + COMPOSE_WITHIN:
        return False
    behind = sql(trial.database, "SELECT count(*) FROM subscribers WHERE cadence = 'immediate' AND cursor < %s", newest)[0][0]
    jobs = sql(trial.database, "SELECT count(*) FROM procrastinate_jobs WHERE task_name IN (%s, %s) "
                               "AND status IN ('todo', 'doing')", COMPOSE_TASK, DELIVER_TASK)[0][0]
    pending = sql(trial.database, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0]
    return behind == 0 and jobs == 0 and pending == 0


def run_trial(folder: Path, kill: bool) -> None:
    rng = random.Random(SEED + kill)
    began = time.monotonic()
    per_host = SOURCES // HOST_COUNT
    with MailCatcherProcess(folder / "received.jsonl") as smtp, \
            ClusterTrial(folder, HOSTS, per_host, smtp.port, interval=f"{INTERVAL:.0f}s", jitter=f"{JITTER:.0f}s",
                         delay=DELAY, farm=True, send_lease=SEND_LEASE, worker_args=WORKER_ARGS,
                         verbose=2) as trial:
        trial.start_workers(WORKERS)
        wait_for(lambda: baselines_done(trial) == len(trial.sites), timeout=600, every=2, what="every source's baseline")
        immediate, daily = write_subscribers(folder / "people.csv", time.time(), rng)
        trial.cli("subscribers", "import", str(folder / "people.csv"), check=True, timeout=300)

        new_urls: set[str] = set()
        window_ids: set[str] = set()       # accepted by the server, unrecorded when a sender was killed
        window_by_kill: list[int] = []
        now = time.monotonic()
        ends, next_post, next_kill = now + MINUTES * 60, now, now + rng.uniform(*KILL_EVERY) if kill else float("inf")
        while (now := time.monotonic()) < ends:
            if now >= next_post:
                site = rng.choice(trial.sites)
                new_urls.add(site.replica.post_url(site.replica.add_post(f"Post {len(new_urls)} on {site.name}")))
                next_post = now + rng.uniform(*POST_EVERY)
            if now >= next_kill:
                trial.kill_a_worker(rng, mid_check=rng.random() < 0.5)
                # The catcher may still be writing down a message the killed sender had sent
                # whole (it writes before it answers 250); the killed sender's leases hold its
                # messages for SEND_LEASE, so none is sent again meanwhile.
                time.sleep(0.5)
                caught = trial.accepted_but_pending(set(smtp.message_ids())) - window_ids
                window_ids |= caught
                window_by_kill.append(len(caught))
                next_kill = now + rng.uniform(*KILL_EVERY)
            time.sleep(max(0.0, min(next_post, next_kill, ends) - time.monotonic()))
        wait_for(lambda: drained(trial, new_urls, max(daily.values(), default=0)), timeout=600, every=2,
                 what="every new post published and mailed, every digest composed and sent")
        codes = trial.stop_workers()
        ran_s = time.monotonic() - began
        load = os.getloadavg()
        by_site = trial.requests_by_site()
        deliveries = smtp.deliveries()

        recovered = trial.recovered_checks()
        # What the bounds below are judged on, kept beside the workers' logs for a failure's cause.
        (folder / "evidence.json").write_text(json.dumps({
            "kills": trial.kills,
            "smtp_window": {"by_kill": window_by_kill, "message_ids": sorted(window_ids)},
            "requests": {name: [(r.time, r.finished, r.path, r.query, r.status) for r in rows] for name, rows in by_site.items()},
            "recovered": {host: [(c.started, c.failed, c.sources) for c in checks] for host, checks in recovered.items()},
            "sources": sql(trial.database, "SELECT name, extract(epoch FROM next_check_at), extract(epoch FROM last_check_at) "
                                           "FROM sources ORDER BY name"),
        }, default=float))
        output = trial.worker_output()
        assert "Traceback" not in output, output[-5000:]
        assert codes.count(0) == len(codes) - len(trial.kills), codes
        if kill:
            # Every failed check is one a SIGKILL interrupted: started before a kill, failed after it.
            for host, checks in recovered.items():
                for check in checks:
                    assert any(check.started <= k <= check.failed for k in trial.kills), f"{host}: a check failed without a kill"
        else:
            assert recovered == {}, recovered

        # The mail first: duplicates and losses are known even when a timing bound below fails.
        copies = [d for d in deliveries if d.message_id in window_ids]
        duplicates = len(deliveries) - len({d.message_id for d in deliveries})
        # A window copy (the same Message-ID again) is the one duplicate SMTP allows; anything else fails.
        assert duplicates <= len(copies) - len({d.message_id for d in copies}), "duplicates outside the SMTP window"
        firsts = list({d.message_id: d for d in reversed(deliveries)}.values())
        assert_mailed_once(trial, firsts, immediate, new_urls)
        digests = assert_digests_told_once_or_pending(trial, firsts, daily, new_urls, COMPOSE_WITHIN)
        print(f"\nmail: {len(deliveries)} messages ({duplicates} duplicates, {len(window_ids)} in the SMTP window), "
              f"{len(new_urls)} new posts, daily posts told {digests.get('told', 0)} / pending "
              f"{digests.get('pending', 0)}, 0 lost; {len(trial.kills)} SIGKILLs, "
              f"{sum(1 for n in window_by_kill if n)} of them with messages in the SMTP window ({window_by_kill})")
        gaps = assert_politeness(trial, DELAY, SLACK, by_site)
        checks = assert_checked_once_per_interval(trial, interval=INTERVAL, jitter=JITTER, plan_every=PLAN_EVERY, lag=LAG,
                                                  turn_pause=TURN_PAUSE, by_site=by_site)
        print(f"\n{'kill' if kill else 'steady'} trial: {len(trial.sites)} sources on {len(HOSTS)} hosts, {SUBSCRIBERS} "
              f"subscribers ({len(immediate)} immediate), {WORKERS} workers, {MINUTES:g} minutes; "
              f"{checks['checks']} checks, {sum(map(len, by_site.values()))} requests, {len(new_urls)} new posts, "
              f"{len(deliveries)} messages ({duplicates} duplicates, {len(window_ids)} in the SMTP window), daily posts "
              f"told {digests.get('told', 0)} / pending {digests.get('pending', 0)}, 0 lost; {len(trial.kills)} SIGKILLs, "
              f"{sum(map(len, recovered.values()))} checks recovered ({checks['retried_after_a_kill']} sources retried); "
              f"min gap per host {min(gaps.values()):.3f}..{max(gaps.values()):.3f}s, max check lateness "
              f"{checks['max_check_late_s']}s, longest pause in a host's turn {checks['longest_turn_pause_s']}s; "
              f"{ran_s:.0f}s, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        if kill:
            assert recovered, f"none of {len(trial.kills)} kills hit a check: no recovery tried"


TIMEOUT = MINUTES * 60 + 1800


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
def test_full_size_trial_checks_politely_and_mails_every_post_once(tmp_path):
    run_trial(tmp_path, kill=False)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
def test_full_size_trial_with_workers_killed_at_random_loses_and_doubles_nothing(tmp_path):
    run_trial(tmp_path, kill=True)


# -- the trial's servers, in CI -----------------------------------------------------------------
def finished_logs(farm):
    logs = farm.requests()
    return logs if all(r.finished for rows in logs.values() for r in rows) else None


def test_the_replica_farm_serves_each_source_its_own_blog_and_logs_its_requests():
    import urllib.request
    from urllib.parse import urlsplit

    from support.farm import Farm

    with Farm(["127.0.0.2", "127.0.0.3"], 2) as farm:
        assert [b.name for b in farm.blogs] == ["blog-2-0", "blog-2-1", "blog-3-0", "blog-3-1"]
        assert len({b.blog_url for b in farm.blogs}) == 4
        assert {b.host for b in farm.blogs} == {"127.0.0.2", "127.0.0.3"}
        news = farm.blogs[1]
        url = news.post_url(news.add_post("Only on this blog"))
        before = time.time()
        listings = {b.name: urllib.request.urlopen(b.blog_url, timeout=5).read().decode() for b in farm.blogs}
        assert urllib.request.urlopen(url, timeout=5).status == 200
        # The replica notes a response finished just after its last byte left: a moment later.
        logs = wait_for(lambda: finished_logs(farm), timeout=5, every=0.05, what="the responses logged as finished")
        after = time.time()
        assert [name for name, page in listings.items() if "Only on this blog" in page] == [news.name]
        assert [(r.path, r.status) for r in logs[news.name]] == [("/blog", 200), (urlsplit(url).path, 200)]
        # One clock across processes: the farm's times fall inside the client's.
        assert all(before <= r.time <= r.finished <= after for rows in logs.values() for r in rows)
        assert {name: len(times) for name, times in farm.check_times().items()} == dict.fromkeys(listings, 1)
        process = farm.process
    assert process.poll() == 0


def test_the_mail_catcher_process_writes_down_each_message_it_accepts(tmp_path):
    import smtplib
    from email.message import EmailMessage

    with MailCatcherProcess(tmp_path / "received.jsonl") as smtp:
        for n in range(2):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "d@postwatch.test", f"Reader <r{n}@example.org>", "Digest"
            message["Message-ID"] = f"<m{n}@postwatch.test>"
            message.set_content(f"[NEW] A post\nhttp://127.0.0.2:8000/blog/post-{n}\n\nUnsubscribe: http://127.0.0.1:1/u?t={n}\n")
            with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
                client.send_message(message)
        assert smtp.count() == 2
        [first, second] = smtp.deliveries()
    assert (first.message_id, first.to) == ("<m0@postwatch.test>", "Reader <r0@example.org>")
    assert first.urls == {"http://127.0.0.2:8000/blog/post-0", "http://127.0.0.1:1/u?t=0"}
    assert second.message_id == "<m1@postwatch.test>"
