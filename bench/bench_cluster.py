"""Cluster figures (issue #19): sources checked per second and digests per second with 1, 2 and 3
`postwatch worker` processes on one PostgreSQL database, and the PostgreSQL load per check.

Replica blogs (a replica farm in a process of its own: tests/support/farm.py) on HOSTS loopback
addresses, SOURCES_PER_HOST each, no per-host delay: the figure is postwatch's and PostgreSQL's, not politeness. A check round makes every
source due at once (next_check_at = NULL) and times until every source's last_check_at has
moved; after one baseline round, rounds are no-change checks (one conditional GET each). A
digest round defers compose jobs for SUBSCRIBERS daily subscribers (the jobs plan_digests
would defer) after a new post, and times until the SMTP server (aiosmtpd, in a process of its
own too) has every message.

PostgreSQL load, per source checked and per digest sent, every worker's job fetching, polling
and heartbeats included:
- transactions in the database (pg_stat_database xact_commit + xact_rollback deltas);
- statements: the workers' sessions run with log_statement = all (set on the bench's database
  only), and the server log's statement lines for that database are counted (`--server-log`,
  readable by this user; pg_stat_statements needs a server restart to load, and is not loaded
  here). The bench's own probes run with logging off. Logging every statement costs the server
  some time, so the throughput figures are measured in the same rounds: compare them with
  `--no-statements`.

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
sys.path.insert(0, str(ROOT / "tests"))     # support: the test helpers kept out of the wheel

from support.cluster import ClusterTrial  # noqa: E402
from support.harness import PG_SERVER, wait_for  # noqa: E402
from postwatch.testing.mailcatcher import MailCatcherProcess  # noqa: E402


def probe(database: str, query: str, *params):
    """`sql`, in a session whose statements the server does not log: the bench's own."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/{database}", autocommit=True, connect_timeout=5,
                         options="-c log_statement=none") as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def xacts(database: str) -> int:
    return probe("postgres", "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", database)[0][0]


class StatementLog:
    """Statements the server logged for one database (log_statement = all on it), counted from
    the server's log file."""

    def __init__(self, path: Path | None, database: str):
        self.path, self.database = path, database
        self.marks = (f"@{database} LOG:  statement: ", f"@{database} LOG:  execute ")

    def start(self) -> None:
        probe("postgres", f'ALTER DATABASE "{self.database}" SET log_statement = \'all\'')

    def offset(self) -> int | None:
        return self.path.stat().st_size if self.path else None

    def since(self, offset: int | None) -> int | None:
        if offset is None:
            return None
        with self.path.open("rb") as log:
            log.seek(offset)
            return sum(1 for line in log if any(mark.encode() in line for mark in self.marks))


def server_log(chosen: str | None) -> Path | None:
    """The server's log file: `chosen`, else the newest of Debian's /var/log/postgresql; None if
    it cannot be read by this user (the statement figures are then left out)."""
    import os

    candidates = [Path(chosen)] if chosen else sorted(Path("/var/log/postgresql").glob("postgresql-*.log"),
                                                      key=lambda p: p.stat().st_mtime)
    path = candidates[-1] if candidates else None
    return path if path is not None and os.access(path, os.R_OK) else None


def check_round(trial: ClusterTrial, sources: int, statements: StatementLog) -> tuple[float, int, int | None]:
    start = probe(trial.database, "SELECT now()")[0][0]
    before, offset = xacts(trial.database), statements.offset()
    probe(trial.database, "UPDATE sources SET next_check_at = NULL")
    began = time.monotonic()
    wait_for(lambda: probe(trial.database, "SELECT count(*) FROM sources WHERE last_check_at >= %s", start)[0][0] == sources,
             timeout=600, every=0.05, what="every source checked")
    return time.monotonic() - began, xacts(trial.database) - before, statements.since(offset)


def digest_round(trial: ClusterTrial, smtp: MailCatcherProcess, subscribers: int,
                 statements: StatementLog) -> tuple[float, int, int | None]:
    from state.cluster import COMPOSE_TASK

    site = trial.sites[0]
    site.replica.add_post(f"Bench post {time.time()}")
    start = probe(trial.database, "SELECT now()")[0][0]
    probe(trial.database, "UPDATE sources SET next_check_at = NULL WHERE name = %s", site.name)
    wait_for(lambda: probe(trial.database, "SELECT count(*) FROM sources WHERE name = %s AND last_check_at >= %s",
                           site.name, start)[0][0] == 1, timeout=60, every=0.05, what="the new post's check")
    ids = [row[0] for row in probe(trial.database, "SELECT id FROM subscribers WHERE cadence = 'daily' ORDER BY id")]
    had = smtp.count()
    before, offset = xacts(trial.database), statements.offset()
    began = time.monotonic()
    for start_at in range(0, len(ids), 250):
        batch = ids[start_at:start_at + 250]
        probe(trial.database, "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('postwatch', %s, 5, NULL, NULL, %s::jsonb, NULL)"
                              "::procrastinate_job_to_defer_v1])", COMPOSE_TASK, '{"subscribers": %s}' % batch)
    wait_for(lambda: smtp.count() - had >= subscribers, timeout=600, every=0.05, what="every digest delivered")
    return time.monotonic() - began, xacts(trial.database) - before, statements.since(offset)


def run(workers: int, hosts: int, per_host: int, subscribers: int, rounds: int, log: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as folder, MailCatcherProcess(Path(folder) / "received.jsonl") as smtp:
        addresses = [f"127.0.0.{2 + n}" for n in range(hosts)]
        with ClusterTrial(Path(folder), addresses, per_host, smtp.port, interval="1h", jitter="0s", delay=0.0,
                          posts_per_blog=3, farm=True, worker_args=("--plan-every", "1", "--batch", "50")) as trial:
            people = Path(folder) / "people.csv"
            people.write_text("".join(f"reader{n}@example.org,daily,08:00,UTC\n" for n in range(subscribers)))
            trial.cli("subscribers", "import", str(people), check=True)
            statements = StatementLog(log, trial.database)
            if log is not None:
                statements.start()          # before the workers connect: their sessions log
            trial.start_workers(workers)
            sources = hosts * per_host
            wait_for(lambda: probe(trial.database, "SELECT count(*) FROM sources WHERE baseline_done")[0][0] == sources,
                     timeout=600, what="every baseline")
            checks = [check_round(trial, sources, statements) for _ in range(rounds)]
            digests = [digest_round(trial, smtp, subscribers, statements) for _ in range(max(1, rounds - 1))]
            codes = trial.stop_workers()
            delivered = smtp.message_ids()
            duplicates = len(delivered) - len(set(delivered))
            if any(codes):
                print(trial.worker_output()[-3000:])
    best_check = min(checks)
    best_digest = min(digests)

    def per(count: int | None, of: int) -> float | None:
        return None if count is None else count / of

    return {"workers": workers, "sources": sources, "checks_per_s": sources / best_check[0],
            "check_round_s": [round(c[0], 2) for c in checks], "xacts_per_check": best_check[1] / sources,
            "statements_per_check": per(best_check[2], sources),
            "digests_per_s": subscribers / best_digest[0], "digest_round_s": [round(d[0], 2) for d in digests],
            "xacts_per_digest": best_digest[1] / subscribers, "statements_per_digest": per(best_digest[2], subscribers),
            "duplicates": duplicates, "exit": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-log", help="PostgreSQL's log file (default: the newest in /var/log/postgresql)")
    parser.add_argument("--no-statements", action="store_true", help="leave statement logging off")
    args = parser.parse_args()
    log = None if args.no_statements else server_log(args.server_log)
    if log is None and not args.no_statements:
        print("statements: the server's log cannot be read here; only transactions are counted", file=sys.stderr)
    results = [run(n, args.hosts, args.per_host, args.subscribers, args.rounds, log) for n in args.workers]

    def figure(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    print(f"{'workers':>7} {'sources':>7} {'checked/s':>9} {'xact/check':>10} {'stmt/check':>10} {'digests/s':>9} "
          f"{'xact/digest':>11} {'stmt/digest':>11} {'dup':>3}  rounds (s)")
    for r in results:
        print(f"{r['workers']:>7} {r['sources']:>7} {r['checks_per_s']:>9.1f} {r['xacts_per_check']:>10.2f} "
              f"{figure(r['statements_per_check'], 2):>10} {r['digests_per_s']:>9.1f} {r['xacts_per_digest']:>11.3f} "
              f"{figure(r['statements_per_digest'], 3):>11} {r['duplicates']:>3}  "
              f"checks {r['check_round_s']} digests {r['digest_round_s']} exit {r['exit']}")


if __name__ == "__main__":
    main()
