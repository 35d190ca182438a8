"""`postwatch worker` (issue #19): several workers on one PostgreSQL database, against replica blogs
bound to three loopback addresses (three hosts to the politeness gate), a real SMTP server, the
workers as subprocesses. Every source is checked once per interval, no host ever has two
requests in flight and its delay holds across workers (the replicas' own request logs), new
posts are mailed exactly once; the planners and the mail jobs are idempotent; SQLite is refused."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from support.cluster import (ClusterTrial, all_checked, assert_checked_once_per_interval, assert_mailed_once,
                                       assert_politeness)
from support.harness import ENVIRONMENT, free_port, get, sql, wait_for, write_config
from postwatch.testing.mailcatcher import MailCatcher, deliveries_of
from state.cluster import CHECK_TASK

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
INTERVAL, JITTER, PLAN_EVERY, DELAY = 10.0, 2.0, 2.0, 0.2
SLACK = 0.05    # scheduling slack between the gate's clock and the replica's
LAG = 1.5       # from a batch's planning to its first request, at most (2 loaded cores)
TURN_PAUSE = 10.0   # a check's longest hold on its host with no request in flight (loading Scrapy, storing)


def body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


@pytest.fixture
def smtp(tmp_path):
    with MailCatcher(tmp_path / "received") as catcher:
        yield catcher


def test_three_workers_share_the_checks_politely_and_mail_new_posts_once(tmp_path, smtp):
    subscribers = ["ada@example.org", "kim@example.org"]
    with ClusterTrial(tmp_path, HOSTS, 10, smtp.port, interval=f"{INTERVAL:.0f}s", jitter=f"{JITTER:.0f}s",
                      delay=DELAY) as trial:
        for address in subscribers:
            trial.cli("subscribers", "add", address, "--cadence", "immediate", check=True)
        metrics_port = free_port()
        trial.start_workers(2)
        trial.start_worker("--metrics", f"127.0.0.1:{metrics_port}")
        try:
            wait_for(lambda: all_checked(trial), timeout=40, what="every source's first check (baseline)")
            wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE NOT baseline_done")[0][0] == 0,
                     timeout=10, what="the baselines recorded")
            new = [site.replica.add_post(f"News from {site.name}") for site in trial.sites[::5]]
            new_urls = {site.replica.post_url(post) for site, post in zip(trial.sites[::5], new)}
            wait_for(lambda: all_checked(trial, 3), timeout=2 * (INTERVAL + JITTER + PLAN_EVERY) + 15,
                     what="three checks of every source")
            wait_for(lambda: len(smtp.messages) >= len(subscribers)
                     and all(any(url in body(m) for m in smtp.messages) for url in new_urls),
                     timeout=15, what="the new posts mailed")
            status = trial.cli("status", check=True).stdout
            _, metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            codes = trial.stop_workers()
        output = trial.worker_output()
        assert codes == [0, 0, 0], output
        assert "postwatch_cluster_workers_alive 3.0" in metrics, metrics
        assert 'postwatch_checks_total{result="ok",source="blog-' in metrics

        assert_checked_once_per_interval(trial, interval=INTERVAL, jitter=JITTER, plan_every=PLAN_EVERY, lag=LAG,
                                         turn_pause=TURN_PAUSE)
        assert_politeness(trial, DELAY, SLACK)
        time.sleep(0.5)
        assert_mailed_once(trial, deliveries_of(smtp), subscribers, new_urls)
        assert "cluster: " in status and " 0 failed" in status.split("cluster: ")[1], status
        assert "Traceback" not in output, output


def test_planning_twice_plans_nothing_twice_and_mail_jobs_run_twice_send_once(tmp_path, smtp):
    """The jobs as a worker runs them, called directly (no worker process): a second planning at
    the same moment finds nothing due and no idle host; a delivery or a digest run twice sends
    nothing twice."""
    from postwatch.cluster import Worker, WorkerSettings
    from postwatch.config import load_config
    from postwatch.planner import digest_due_between, next_check

    with ClusterTrial(tmp_path, HOSTS[:2], 2, smtp.port) as trial:
        trial.cli("subscribers", "add", "lee@example.org", "--cadence", "immediate", check=True)
        trial.cli("subscribers", "add", "bo@example.org", "--cadence", "daily", "--at", "08:00", "--tz", "UTC", check=True)
        worker = Worker(load_config(trial.cli.config), WorkerSettings())
        worker.open()
        try:
            store = worker.app.store
            now = datetime.now(timezone.utc)
            def next_of(name):
                return next_check(name, now, worker.app.sources.interval(name), timedelta(0))

            first = store.plan_checks(now, next_of, timedelta(hours=1), 50)
            assert sorted(b.host for b in first) == HOSTS[:2] and sum(len(b.sources) for b in first) == 4
            assert store.plan_checks(now, next_of, timedelta(hours=1), 50) == []
            jobs = sql(trial.database, "SELECT lock, args FROM procrastinate_jobs WHERE task_name = %s", CHECK_TASK)
            assert sorted(lock for lock, _ in jobs) == HOSTS[:2]

            # The checks run here (jobs left in the queue: no worker takes them), then a post appears.
            from crawler.runtime import run

            for host in HOSTS[:2]:
                run(lambda: worker.check_batch([s.name for s in trial.sites if s.host == host], host))
            post = trial.sites[0].replica.add_post("Only once")
            run(lambda: worker.check_batch([trial.sites[0].name], trial.sites[0].host))
            worker.deliver([])
            worker.deliver([])
            worker.flush_if_due()
            lee = [m for m in smtp.messages if "lee@example.org" in str(m["To"])]
            assert len(lee) == 1 and trial.sites[0].replica.post_url(post) in body(lee[0])

            due = digest_due_between
            eight = datetime(2030, 1, 2, 8, 0, 30, tzinfo=timezone.utc)
            sql(trial.database, "INSERT INTO counters (name, value) VALUES ('cluster_digests_planned_until', %s)",
                int(eight.timestamp()) - 60)
            [[bo]] = store.plan_digests(eight, due, 500)
            assert store.plan_digests(eight, due, 500) == []          # the same minute again: nothing
            assert store.plan_digests(eight + timedelta(minutes=1), due, 500) == []     # 08:01: not due
            worker.deliver([bo])
            worker.deliver([bo])
            to_bo = [m for m in smtp.messages if "bo@example.org" in str(m["To"])]
            assert len(to_bo) == 1 and trial.sites[0].replica.post_url(post) in body(to_bo[0])
            ids = smtp.message_ids()
            assert len(ids) == len(set(ids)) == 2
        finally:
            worker.close()


def test_a_worker_killed_mid_check_is_recovered_and_its_host_checked_again(tmp_path):
    """SIGKILL while a check is in flight: another worker finds the job stalled (no heartbeat
    for --stalled-after), marks it failed, which frees the host's lock, and the sources the
    killed check had not recorded are checked at once, not a (minute's) interval later. `status`
    shows the failed job."""
    with ClusterTrial(tmp_path, HOSTS[:1], 2, None, interval="60s", jitter="0s",
                      worker_args=("--plan-every", "1", "--heartbeat", "1", "--stalled-after", "3")) as trial:
        trial.sites[0].replica.set_fault("/blog", delay=30, times=1)       # its first listing request hangs
        doomed = trial.start_worker()
        wait_for(lambda: trial.sites[0].replica.requests and trial.checks_running() == 1,
                 timeout=30, what="a check in flight")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        trial.start_worker()
        try:
            failed = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'failed'"
            wait_for(lambda: sql(trial.database, failed, CHECK_TASK)[0][0] == 1, timeout=20, what="the stalled check failed")
            wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE last_success_at IS NOT NULL")[0][0] == 2,
                     timeout=20, what="both sources checked by the other worker")
            status = trial.cli("status", check=True).stdout
        except AssertionError as exc:      # what the workers said, to tell why
            raise AssertionError(f"{exc}\n{trial.worker_output()[-4000:]}") from None
        finally:
            codes = trial.stop_workers()
        assert codes == [-signal.SIGKILL, 0], trial.worker_output()
        # The planners run every second (--plan-every 1): one may be waiting or running just then.
        assert re.search(r"jobs \d+ waiting, \d+ running, 1 failed\n\s+failed job \d+: check_batch", status), status
        assert "stalled (its worker stopped): marked failed; the 2 of its sources it had not recorded" in trial.worker_output()
        # The hung request's server thread sleeps on after its client was killed: the politeness
        # that matters is that of the live workers.
        hung = [r for r in trial.sites[0].replica.requests if r.finished is None or r.finished - r.time > 20]
        assert len(hung) == 1
        trial.sites[0].replica.requests.remove(hung[0])
        assert_politeness(trial, DELAY, SLACK)


def test_a_silent_worker_that_is_alive_keeps_its_host_and_no_one_crawls_beside_it(tmp_path):
    """A worker SIGSTOPped mid-check sends no heartbeat, but its process, and so its turn at the
    host, is alive: the other worker leaves its check running instead of taking it for dead, and
    its own next check of that host waits. Resumed, the first worker finishes; then, after the
    per-host delay, the second one checks. From the replica's log: no request while the first was
    stopped, no two at once, the per-host gap held throughout; and no error in either worker: the
    resumed one, whose registration the other removed at its start, registers again and goes on
    working."""
    delay = 0.5
    with ClusterTrial(tmp_path, HOSTS[:1], 8, None, interval="5s", jitter="0s", delay=delay,
                      worker_args=("--plan-every", "1", "--heartbeat", "1", "--stalled-after", "3")) as trial:
        paused = trial.start_worker()
        wait_for(lambda: len(trial.requests_by_host().get(HOSTS[0], [])) >= 3, timeout=40, what="a check under way")
        paused.send_signal(signal.SIGSTOP)
        stopped_at = time.time()       # the replica logs wall-clock times
        # Past the stall timeout: the new worker's start removes the silent one's registration.
        time.sleep(4)
        trial.start_worker()
        try:
            wait_for(lambda: "still holds 127.0.0.2, so it is alive" in trial.logs[1].read_text(), timeout=30,
                     what="the silent worker's check noticed and left running")
            waiting = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo'"
            wait_for(lambda: sql(trial.database, waiting, CHECK_TASK)[0][0] == 1, timeout=30,
                     what="the host's next check planned")
            time.sleep(3 * delay * 2)        # were the host free, three requests would have been made
            requests_while_stopped = [r for r in trial.requests_by_host()[HOSTS[0]] if r.time > stopped_at]
            paused.send_signal(signal.SIGCONT)
            wait_for(lambda: trial.worker_output().count("checked 8 sources") >= 2, timeout=60,
                     what="the resumed check finished and the next one done")
            wait_for(lambda: "registers again and goes on" in trial.logs[0].read_text(), timeout=20,
                     what="the resumed worker registered again")
            wait_for(lambda: sql(trial.database, "SELECT count(*) FROM procrastinate_workers WHERE "
                                 "last_heartbeat > now() - interval '2 seconds'")[0][0] == 2, timeout=10,
                     what="both workers alive")
        finally:
            paused.send_signal(signal.SIGCONT)
            codes = trial.stop_workers()
        output = trial.worker_output()
        assert requests_while_stopped == [], output
        assert codes == [0, 0] and "marked failed" not in output and "Traceback" not in output, output
        # From the replica's log: also at the hand-over from the resumed worker to the other
        # one, and for the request the first had let go just before it was stopped.
        assert_politeness(trial, delay, SLACK)


def test_a_stalled_mail_job_whose_kind_is_already_waiting_is_closed_not_retried(tmp_path):
    """A worker killed while it delivered leaves its job running, and a newer delivery job waits
    behind the same queueing lock (deferred by a later check). The queue allows one waiting job
    per lock, so retrying the stalled one would fail at every recovery and leave it "running"
    for ever in `status`: it is marked failed, the waiting one does its work."""
    from state.cluster import DELIVER_TASK

    with ClusterTrial(tmp_path, HOSTS[:1], 1, None, interval="1h",
                      worker_args=("--plan-every", "1", "--heartbeat", "1", "--stalled-after", "3")) as trial:
        trial.start_worker()
        try:
            wait_for(lambda: "started" in trial.logs[0].read_text(), timeout=30, what="the worker started")
            # In one statement: the killed worker's job, taken, then its worker gone (a NULL worker
            # is a dead one), and the one deferred after it, not yet due. (Apart, the recovery
            # could retry the first to 'todo' before the second went in: one waiting job per lock.)
            later = datetime.now(timezone.utc) + timedelta(hours=1)
            [[stalled, waiting]] = sql(trial.database, """
                WITH stalled AS (INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args, scheduled_at, status)
                                 VALUES ('postwatch', %s, %s, '{}', %s, 'doing') RETURNING id),
                     waiting AS (INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args, scheduled_at)
                                 VALUES ('postwatch', %s, %s, '{}', %s) RETURNING id)
                SELECT (SELECT id FROM stalled), (SELECT id FROM waiting)""",
                DELIVER_TASK, DELIVER_TASK, later, DELIVER_TASK, DELIVER_TASK, later)
            wait_for(lambda: f"job {stalled} stalled (its worker stopped): marked failed" in trial.logs[0].read_text(),
                     timeout=20, what="the stalled delivery closed")
            time.sleep(2)           # two more recoveries: nothing left to do, nothing raised
            states = dict(sql(trial.database, "SELECT id, status::text FROM procrastinate_jobs WHERE task_name = %s",
                              DELIVER_TASK))
            status = trial.cli("status", check=True).stdout
        finally:
            codes = trial.stop_workers()
        output = trial.worker_output()
        assert states == {stalled: "failed", waiting: "todo"}, output
        assert codes == [0] and output.count("marked failed") == 1, output
        assert "Traceback" not in output and "UniqueViolation" not in output and "error" not in output.lower(), output
        assert "0 running, 1 failed" in status, status


def test_two_recoveries_at_once_close_a_stalled_check_once_and_raise_nothing(tmp_path, caplog):
    """A recovery on a loaded machine can outlast its period, and the next period's starts beside
    it (the full-size kill trial: a 6.5 s recovery, a 5 s period; the second to reach the
    stalled job failed with "Job was not found", a traceback in the worker's log). Two workers'
    recoveries run at the same moment, as the queue runs them (called directly, on the
    worker's loop): one marks the stalled check failed and makes its sources due, the other
    leaves it to that one, and neither raises."""
    import asyncio
    import logging

    from postwatch.cluster import Worker, WorkerSettings
    from postwatch.config import load_config
    from crawler.runtime import run

    with ClusterTrial(tmp_path, HOSTS[:1], 2, None, interval="1h") as trial:
        config = load_config(trial.cli.config)
        workers = [Worker(config, WorkerSettings(stalled_after=3)) for _ in range(2)]
        for worker in workers:
            worker.open()
        try:
            names = [site.name for site in trial.sites]
            # A killed worker's check: taken, then its worker gone (a NULL worker is a dead one).
            [[stalled]] = sql(trial.database, "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status) "
                              "VALUES ('postwatch', %s, %s, %s, 'doing') RETURNING id", CHECK_TASK, HOSTS[0],
                              json.dumps({"sources": names, "host": HOSTS[0]}))
            sql(trial.database, "UPDATE sources SET next_check_at = now() + interval '1 hour'")

            async def recover_at_once():
                async with workers[0].queue.open_async(), workers[1].queue.open_async():
                    await asyncio.gather(*(worker.recover_stalled() for worker in workers))

            with caplog.at_level(logging.DEBUG, logger="postwatch"):
                run(recover_at_once)
            state = sql(trial.database, "SELECT status::text FROM procrastinate_jobs WHERE id = %s", stalled)[0][0]
            due = sql(trial.database, "SELECT count(*) FROM sources WHERE next_check_at <= now()")[0][0]
        finally:
            for worker in workers:
                worker.close()
    assert state == "failed"
    assert due == 2
    assert caplog.text.count("stalled (its worker stopped): marked failed") == 1, caplog.text
    assert "another worker's recovery is still running" in caplog.text, caplog.text


def test_a_worker_starting_writes_no_source_another_worker_is_recording(tmp_path):
    """Every worker syncs the config's sources as it starts. Rewriting every row locked the
    sources other workers' checks were recording, in another order: in the kill trial, 20 of
    those checks failed with "deadlock detected" as restarted workers came up. Here a source's
    row is held as a check recording it holds it; a worker started with the config unchanged
    comes up at once, and one whose config changes that source waits for the row."""
    import psycopg

    from support.harness import PG_SERVER

    with ClusterTrial(tmp_path, HOSTS[:1], 3, None, interval="1h") as trial:
        trial.start_worker()
        baselines = "SELECT count(*) FROM sources WHERE baseline_done"
        wait_for(lambda: sql(trial.database, "SELECT to_regclass('sources')")[0][0] is not None   # the worker migrates
                 and sql(trial.database, baselines)[0][0] == 3, timeout=90, what="the sources' baselines")
        assert trial.stop_workers() == [0]          # nothing due for an hour: the next workers only start
        with psycopg.connect(f"{PG_SERVER}/{trial.database}") as recording:
            recording.execute("SELECT 1 FROM sources WHERE name = %s FOR UPDATE", (trial.sites[0].name,))
            try:
                trial.start_worker()
                wait_for(lambda: "started" in trial.logs[1].read_text(), timeout=30,
                         what="the second worker started while a source's row is held")
                assert trial.stop_workers()[-1] == 0
                # The same source with a new URL: its row is written, after the check's commit.
                url = trial.sites[0].replica.blog_url
                config = trial.cli.config.read_text()
                trial.cli.config.write_text(config.replace(f'url = "{url}"', f'url = "{url}?moved=1"', 1))
                blocked = trial.start_worker()
                time.sleep(3)
                assert "started" not in trial.logs[2].read_text()
            finally:
                recording.rollback()
            wait_for(lambda: "started" in trial.logs[2].read_text(), timeout=30, what="the third worker started")
        codes = trial.stop_workers()
        moved = sql(trial.database, "SELECT url FROM sources WHERE name = %s", trial.sites[0].name)[0][0]
    assert codes[-1] == 0 and blocked.returncode == 0, trial.worker_output()
    assert moved.endswith("?moved=1")


class SessionCountingServer:
    """Accepts every message after `seconds`, noting the Message-IDs and the most messages it was
    receiving at once (a sender has one message in flight per SMTP session: the sessions sending
    at once)."""

    def __init__(self, seconds: float):
        import threading

        self.seconds, self.accepted, self.in_flight, self.most = seconds, [], 0, 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        import asyncio
        from email import message_from_bytes, policy

        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            with self._lock:
                self.in_flight -= 1
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self._lock:
            self.accepted.append(str(message["Message-ID"]))
        return "250 OK"


def test_a_worker_running_several_mail_jobs_keeps_to_its_smtp_connections(tmp_path):
    """[smtp] connections is what the operator's provider allows at once. A worker runs several
    mail jobs at once (compose batches, the immediate delivery, the periodic flush), each ending
    in a flush: a job that finds a flush running leaves what it composed to that flush or the
    next period's, so the worker never has more sessions sending than the setting (the full-size
    kill trial: up to 14 messages of one killed worker in the SMTP window, with 4 connections).
    The jobs as the worker runs them, three at once, then the periodic flush; every message sent
    once."""
    import threading

    from aiosmtpd.controller import Controller

    from crawler.runtime import run
    from postwatch.cluster import Worker, WorkerSettings
    from postwatch.config import load_config

    server = SessionCountingServer(0.05)
    controller = Controller(server, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with ClusterTrial(tmp_path, HOSTS[:1], 1, controller.port, smtp_connections=2) as trial:
            worker = Worker(load_config(trial.cli.config), WorkerSettings())
            worker.open()
            try:
                site = trial.sites[0]
                run(lambda: worker.check_batch([site.name], site.host))           # the baseline
                store = worker.app.store
                readers = [store.add_subscriber(f"reader{n}@example.org", cadence="daily") for n in range(45)]
                site.replica.add_post("For forty-five readers")
                run(lambda: worker.check_batch([site.name], site.host))
                ids = [reader.id for reader in readers]
                jobs = [threading.Thread(target=worker.deliver, args=(ids[k::3],)) for k in range(3)]
                for job in jobs:
                    job.start()
                for job in jobs:
                    job.join(timeout=60)
                worker.flush_if_due()      # the next period's flush: what the running flush left
            finally:
                worker.close()
    finally:
        controller.stop()
    assert len(server.accepted) == 45 == len(set(server.accepted))
    assert server.most <= 2, f"{server.most} messages in flight at once with [smtp] connections = 2"


def test_a_hosts_next_batch_starts_as_soon_as_the_one_before_it_ends(tmp_path):
    """Two batches of one host (--batch 1, two sources), planned together: the second waits
    behind the host's lock and starts when the first ends, not at the worker's next poll for
    jobs (5 s) with the host idle meanwhile."""
    with ClusterTrial(tmp_path, HOSTS[:1], 2, None, interval="1h", jitter="0s",
                      worker_args=("--plan-every", "30", "--heartbeat", "1", "--stalled-after", "10", "--batch", "1")) as trial:
        trial.start_worker()
        try:
            baselines = "SELECT count(*) FROM sources WHERE baseline_done"
            wait_for(lambda: sql(trial.database, "SELECT to_regclass('sources')")[0][0] is not None   # the worker migrates
                     and sql(trial.database, baselines)[0][0] == 2, timeout=90, what="both sources' baselines")
        finally:
            codes = trial.stop_workers()
        output = trial.worker_output()
        assert codes == [0] and output.count("checked 1 sources on 127.0.0.2") == 2, output
        first, second = sorted((site.replica.requests for site in trial.sites), key=lambda requests: requests[0].time)
        idle = second[0].time - max(r.finished for r in first)
        # The delay (0.2 s) and the first batch storing what it read are all that lies between.
        assert idle < 1.0, f"the host's second batch began {idle:.2f}s after the first batch's last answer\n{output}"


def test_a_queue_installed_before_the_wake_trigger_gets_it_at_the_next_start():
    """A database whose job queue an earlier postwatch installed (no trigger) gets the trigger
    from the next worker to start; the queue itself is not installed twice."""
    from procrastinate.schema import SchemaManager

    from support.cluster import create_database, drop_database
    from support.harness import PG_SERVER
    from state import Store

    name = create_database()
    try:
        store = Store(f"{PG_SERVER}/{name}")
        try:
            trigger = "SELECT count(*) FROM pg_trigger WHERE tgname = 'postwatch_wake_behind_lock_v1'"
            assert store.install_job_queue(SchemaManager.get_schema()) is True
            assert sql(name, trigger)[0][0] == 1
            sql(name, "DROP TRIGGER postwatch_wake_behind_lock_v1 ON procrastinate_jobs")
            assert store.install_job_queue(SchemaManager.get_schema()) is False
            assert store.install_job_queue(SchemaManager.get_schema()) is False
            assert sql(name, trigger)[0][0] == 1
        finally:
            store.close()
    finally:
        drop_database(name)


def test_a_host_turn_is_one_workers_at_a_time_and_hands_the_delay_on():
    """Two turns at one host, as two workers would take them: the second waits for the first to
    end, gives up with HostBusy past its wait, and starts with the quiet time the first left."""
    import asyncio

    from postwatch.cluster import psycopg_conninfo
    from support.cluster import create_database, drop_database
    from support.harness import PG_SERVER
    from state import Store
    from state.cluster import HostBusy, host_turn

    name = create_database()
    try:
        url = f"{PG_SERVER}/{name}"
        Store(url).close()        # migrated: host_fences is there
        conninfo = psycopg_conninfo(url.replace("postgresql://", "postgresql+psycopg://"))

        def turn(wait, quiet_after=lambda: 0.0, host="blog.example.org"):
            return host_turn(conninfo, host, wait=wait, quiet_after=quiet_after, connect_args={})

        async def trial():
            async with turn(1) as quiet:
                assert quiet == 0.0                      # no one was here before
                with pytest.raises(HostBusy, match="blog.example.org is still being crawled by another worker"):
                    async with turn(0.3):
                        pass
                async with turn(0.3, host="other.example.org"):      # another host is not held by it
                    pass
            started = time.monotonic()
            async with turn(1, quiet_after=lambda: 2.0):
                pass
            async with turn(1) as quiet:
                assert 1.5 < quiet <= 2.0, quiet           # what the last turn left, less the time since
            return time.monotonic() - started

        assert asyncio.run(trial()) < 1.5
    finally:
        drop_database(name)


def test_a_worker_stopped_the_moment_it_says_started_stops_cleanly(tmp_path):
    """systemd or an operator may stop a worker as soon as it is up: from its "started" line on,
    SIGTERM is a clean stop (exit 0, "stopped" logged), not a death by the signal's default."""
    with ClusterTrial(tmp_path, HOSTS[:1], 1, None, interval="1h") as trial:
        for attempt in range(3):
            worker = trial.start_worker()
            log = trial.logs[-1]
            wait_for(lambda: " started: " in log.read_text(), timeout=60, every=0.005, what="the worker started")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, trial.worker_output()
            assert " stopped" in log.read_text(), trial.worker_output()


def test_a_worker_stopped_mid_check_finishes_the_check_before_it_exits(tmp_path):
    """SIGTERM while a check runs is a graceful stop within [daemon] shutdown_grace: the check
    ends and is recorded, its job is closed (nothing left for another worker's recovery to check
    again), the worker exits 0. The grace is well above the check's length (3 baselines at a
    0.4 s delay: about 2 s alone, over 3 s on CI's loaded cores, where a 3 s grace cut it off)."""
    with ClusterTrial(tmp_path, HOSTS[:1], 3, None, interval="1h", delay=0.4, shutdown_grace="30s") as trial:
        worker = trial.start_worker()
        wait_for(lambda: " started: " in trial.logs[0].read_text() and trial.checks_running(),
                 timeout=60, every=0.05, what="a check running")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, trial.worker_output()
        output = trial.worker_output()
        assert "checked 3 sources on 127.0.0.2 (0 failed" in output, output
        assert sql(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0] == 3
        assert sql(trial.database, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status IN ('doing', 'todo')",
                   CHECK_TASK)[0][0] == 0


def test_a_check_cut_off_by_a_stop_leaves_its_sources_due_at_once(tmp_path):
    """A stop whose [daemon] shutdown_grace (1 s here) runs out while a check waits on a hung
    listing: the worker still exits 0, says the check was cut off, and the sources it had not
    recorded are checked at the next planning by the next worker, not an hour (their interval)
    later: the planner had already moved their next check on."""
    with ClusterTrial(tmp_path, HOSTS[:1], 2, None, interval="1h", jitter="0s", shutdown_grace="1s",
                      worker_args=("--plan-every", "1", "--heartbeat", "1", "--stalled-after", "10")) as trial:
        trial.sites[0].replica.set_fault("/blog", delay=30, times=1)       # its first listing request hangs
        stopped = trial.start_worker()
        wait_for(lambda: trial.sites[0].replica.requests and trial.checks_running() == 1,
                 timeout=30, what="a check in flight")
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=30) == 0, trial.worker_output()
        assert "the 2 it had not recorded are checked at the next planning" in trial.worker_output(), trial.worker_output()
        assert sql(trial.database, "SELECT count(*) FROM sources WHERE next_check_at <= now()")[0][0] == 2
        trial.start_worker()
        try:
            wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0] == 2,
                     timeout=30, what="both sources checked by the next worker")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{trial.worker_output()[-4000:]}") from None
        finally:
            codes = trial.stop_workers()
        assert codes == [0, 0], trial.worker_output()


def test_a_worker_whose_database_restarts_waits_for_it_and_goes_on(tmp_path):
    """A database restart (every connection cut, new ones refused for 5 s), once while the
    worker is idle and once while a check runs: the worker stays up, says so in one line each
    way and goes on checking every source. procrastinate stops its worker when its LISTEN
    connection fails; the worker used to return with it and exit 0, which no service manager
    restarts: one restart of PostgreSQL would have stopped the whole cluster."""
    from support.harness import kill_backends

    def checked_since(at) -> bool:
        return sql(trial.database, "SELECT bool_and(last_check_at > %s) FROM sources", at)[0][0]

    def restart_database() -> None:
        sql("postgres", f'ALTER DATABASE "{trial.database}" ALLOW_CONNECTIONS false')
        try:
            assert kill_backends(trial.database) >= 2
            time.sleep(5)
        finally:
            sql("postgres", f'ALTER DATABASE "{trial.database}" ALLOW_CONNECTIONS true')

    with ClusterTrial(tmp_path, HOSTS[:1], 2, None, interval="3s", jitter="1s", delay=0.3) as trial:
        worker = trial.start_worker()
        log = trial.logs[0]
        try:
            wait_for(lambda: " started: " in log.read_text()
                     and sql(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0] == 2,
                     timeout=60, what="the baselines")
            restart_database()
            wait_for(lambda: log.read_text().count("the database answers again") == 1, timeout=60, what="the worker back")
            back = sql(trial.database, "SELECT now()")[0][0]
            wait_for(lambda: checked_since(back), timeout=30, what="every source checked after the restart")
            wait_for(lambda: trial.checks_running(),
                     timeout=30, every=0.02, what="a check running")
            restart_database()
            wait_for(lambda: log.read_text().count("the database answers again") == 2, timeout=60,
                     what="the worker back again")
            back = sql(trial.database, "SELECT now()")[0][0]
            # The check cut short is closed by the recovery after --stalled-after (10 s).
            wait_for(lambda: checked_since(back), timeout=45, what="every source checked after the second restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{trial.worker_output()}") from None
        assert worker.poll() is None, trial.worker_output()
        codes = trial.stop_workers()
    output = trial.worker_output()
    assert codes == [0], output
    assert output.count("stopped taking jobs: its job queue lost the database") == 2, output
    assert "Traceback" not in output and "never retrieved" not in output, output


def test_worker_refuses_a_database_a_daemon_runs_on(tmp_path):
    from support.harness import Daemon

    with ClusterTrial(tmp_path, HOSTS[:1], 1, None, interval="1h") as trial:
        port = int(re.search(r'listen = "127.0.0.1:(\d+)"', trial.cli.config.read_text()).group(1))
        with Daemon(trial.cli, port) as daemon:
            result = trial.cli("worker", timeout=60)
            assert daemon.stop() == 0
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "a `postwatch run` daemon" in line and "stop it first" in line, result.stderr


def test_worker_refuses_sqlite_with_one_line(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9/blog", None)
    result = subprocess.run([sys.executable, "-m", "postwatch", "--config", str(config), "worker"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **ENVIRONMENT}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a PostgreSQL database" in lines[0] and "state.db" in lines[0], result.stderr
    assert not (tmp_path / "state.db").exists()        # refused before anything was created


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_workers_killed_at_random_lose_and_double_nothing(tmp_path, smtp):
    """Workers SIGKILLed at random points and started again for two minutes: every new post is
    mailed to every subscriber exactly once, no host ever sees two requests at once."""
    subscribers = [f"reader{i}@example.org" for i in range(5)]
    rng = random.Random(19)
    with ClusterTrial(tmp_path, HOSTS, 10, smtp.port, interval="10s", jitter="2s", delay=DELAY,
                      worker_args=("--plan-every", "2", "--heartbeat", "1", "--stalled-after", "8")) as trial:
        for address in subscribers:
            trial.cli("subscribers", "add", address, "--cadence", "immediate", check=True)
        trial.start_workers(3)
        wait_for(lambda: all_checked(trial), timeout=60, what="every source's baseline")
        wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE NOT baseline_done")[0][0] == 0,
                 timeout=20, what="the baselines recorded")
        new_urls: set[str] = set()
        kills = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            site = rng.choice(trial.sites)
            new_urls.add(site.replica.post_url(site.replica.add_post(f"Post {len(new_urls)} on {site.name}")))
            time.sleep(rng.uniform(1, 6))
            if rng.random() < 0.5 and trial.kill_a_worker(rng):
                kills += 1
        wait_for(lambda: all(sum(url in body(m) for m in smtp.messages if a in str(m["To"])) >= 1
                             for a in subscribers for url in new_urls),
                 timeout=90, what="every new post mailed to every subscriber")
        codes = [c for c in trial.stop_workers()]
        assert codes.count(0) >= 3, trial.worker_output()
        assert_politeness(trial, DELAY, SLACK)
        assert_mailed_once(trial, deliveries_of(smtp), subscribers, new_urls)
        print(f"\n{kills} workers SIGKILLed, {len(new_urls)} new posts, {len(smtp.messages)} messages delivered "
              f"({len(set(smtp.message_ids()))} distinct), "
              f"{sum(len(r) for r in trial.requests_by_host().values())} requests, 0 overlapping")
