"""Cluster figures (issue #19): sources checked per second and digests per second with 1, 2 and 3
`postwatch worker` processes on one PostgreSQL database, and the PostgreSQL load per check.

Replica blogs (a replica farm in a process of its own: postwatch.testing.farm) on HOSTS loopback
addresses, SOURCES_PER_HOST each, no per-host delay: the figure is postwatch's and PostgreSQL's, not politeness. A check round makes every
source due at once (next_check_at = NULL) and times until every source's last_check_at has
moved; after one baseline round, rounds are no-change checks (one conditional GET each). A
digest round defers compose jobs for SUBSCRIBERS daily subscribers (the jobs plan_digests
would defer) after a new post, and times until the SMTP server (aiosmtpd, in a process of its
own too) has every message.

PostgreSQL load: transactions in the database (pg_stat_database xact_commit + xact_rollback
deltas, every worker's job fetching, polling and heartbeats included) per source checked and
per digest sent. (pg_stat_statements is not installed here; transactions are what the server
counts on its own.)

    .venv/bin/python bench/bench_cluster.py [--workers 1 2 3] [--hosts 12] [--per-host 20] [--subscribers 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from postwatch.testing.cluster import ClusterTrial  # noqa: E402
from postwatch.testing.harness import sql, wait_for  # noqa: E402
from postwatch.testing.mailcatcher import MailCatcherProcess  # noqa: E402


def xacts(database: str) -> int:
    return sql("postgres", "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", database)[0][0]


def check_round(trial: ClusterTrial, sources: int) -> tuple[float, int]:
    start = sql(trial.database, "SELECT now()")[0][0]
    before = xacts(trial.database)
    sql(trial.database, "UPDATE sources SET next_check_at = NULL")
    began = time.monotonic()
    wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE last_check_at >= %s", start)[0][0] == sources,
             timeout=600, every=0.05, what="every source checked")
    return time.monotonic() - began, xacts(trial.database) - before


def digest_round(trial: ClusterTrial, smtp: MailCatcherProcess, subscribers: int) -> tuple[float, int]:
    from state.cluster import COMPOSE_TASK

    site = trial.sites[0]
    site.replica.add_post(f"Bench post {time.time()}")
    start = sql(trial.database, "SELECT now()")[0][0]
    sql(trial.database, "UPDATE sources SET next_check_at = NULL WHERE name = %s", site.name)
    wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE name = %s AND last_check_at >= %s",
                         site.name, start)[0][0] == 1, timeout=60, every=0.05, what="the new post's check")
    ids = [row[0] for row in sql(trial.database, "SELECT id FROM subscribers WHERE cadence = 'daily' ORDER BY id")]
    had = smtp.count()
    before = xacts(trial.database)
    began = time.monotonic()
    for start_at in range(0, len(ids), 250):
        batch = ids[start_at:start_at + 250]
        sql(trial.database, "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('postwatch', %s, 5, NULL, NULL, %s::jsonb, NULL)"
                            "::procrastinate_job_to_defer_v1])", COMPOSE_TASK, '{"subscribers": %s}' % batch)
    wait_for(lambda: smtp.count() - had >= subscribers, timeout=600, every=0.05, what="every digest delivered")
    return time.monotonic() - began, xacts(trial.database) - before


def run(workers: int, hosts: int, per_host: int, subscribers: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as folder, MailCatcherProcess(Path(folder) / "received.jsonl") as smtp:
        addresses = [f"127.0.0.{2 + n}" for n in range(hosts)]
        with ClusterTrial(Path(folder), addresses, per_host, smtp.port, interval="1h", jitter="0s", delay=0.0,
                          posts_per_blog=3, farm=True, worker_args=("--plan-every", "1", "--batch", "50")) as trial:
            people = Path(folder) / "people.csv"
            people.write_text("".join(f"reader{n}@example.org,daily,08:00,UTC\n" for n in range(subscribers)))
            trial.cli("subscribers", "import", str(people), check=True)
            trial.start_workers(workers)
            sources = hosts * per_host
            wait_for(lambda: sql(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0] == sources,
                     timeout=600, what="every baseline")
            checks = [check_round(trial, sources) for _ in range(rounds)]
            digests = [digest_round(trial, smtp, subscribers) for _ in range(max(1, rounds - 1))]
            codes = trial.stop_workers()
            delivered = smtp.message_ids()
            duplicates = len(delivered) - len(set(delivered))
            if any(codes):
                print(trial.worker_output()[-3000:])
    best_check = min(checks)
    best_digest = min(digests)
    return {"workers": workers, "sources": sources, "checks_per_s": sources / best_check[0],
            "check_round_s": [round(c[0], 2) for c in checks], "xacts_per_check": best_check[1] / sources,
            "digests_per_s": subscribers / best_digest[0], "digest_round_s": [round(d[0], 2) for d in digests],
            "xacts_per_digest": best_digest[1] / subscribers, "duplicates": duplicates, "exit": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = [run(n, args.hosts, args.per_host, args.subscribers, args.rounds) for n in args.workers]
    print(f"{'workers':>7} {'sources':>7} {'checked/s':>9} {'xact/check':>10} {'digests/s':>9} {'xact/digest':>11} "
          f"{'dup':>3}  rounds (s)")
    for r in results:
        print(f"{r['workers']:>7} {r['sources']:>7} {r['checks_per_s']:>9.1f} {r['xacts_per_check']:>10.2f} "
              f"{r['digests_per_s']:>9.1f} {r['xacts_per_digest']:>11.3f} {r['duplicates']:>3}  "
              f"checks {r['check_round_s']} digests {r['digest_round_s']} exit {r['exit']}")


if __name__ == "__main__":
    main()
