"""The long-running commands: `postwatch run` (the daemon) and `postwatch worker` (one process of
a cluster sharing the work through PostgreSQL). Both log in [daemon] log_format unless
--log-format says otherwise.

Not imported here: scheduler (APScheduler) and postwatch.cluster (procrastinate), which only
these commands need, when they run."""
from __future__ import annotations

import argparse
import functools

from postwatch.cli.common import Commands, bounded_int, command, fail
from postwatch.config import Config


def add_parser(commands: Commands) -> None:
    _run_parser(commands)
    _worker_parser(commands)


def _run_parser(commands: Commands) -> None:
    run = command(commands, "run", run_daemon, "run the daemon (checks, digests, health and metrics)", """\
Run checks on each source's interval and digests on each subscriber's schedule. Serves /healthz,
/metrics, /unsubscribe, the readers' /subscribe, /confirm and /preferences pages and the Atom
feeds on [daemon] listen, and reads bounces and mailed unsubscribes on [inbound] listen when it
is set. Stops cleanly on SIGTERM or Ctrl-C. One daemon per database.""", """\
  postwatch run                   until SIGTERM
  postwatch run --once            one check of every source and one digest run, then exit
""")
    run.add_argument("--once", action="store_true", help="one check of every source and one digest run, then exit")
    run.set_defaults(daemon_logging=True)


def run_daemon(args: argparse.Namespace, config: Config) -> int:
    import scheduler

    return scheduler.run_daemon(config, once=args.once)


WORKER_HELP = """\
Run one worker of a cluster: any number of `postwatch worker` processes, on one machine or many,
with the same config and one PostgreSQL database, share the checks and the mail through a
procrastinate job queue kept in that database (installed by the first worker). Every few seconds
one of them plans: the due sources, in batches of one host each, and no two workers ever crawl
one host at once, so [crawl] download_delay holds across the cluster. Digests are planned on each
subscriber's schedule; the outbox makes sure no message is sent twice. A worker crawls a host in
its turn, a PostgreSQL lock that lives as long as its process: a worker that is killed is noticed
by the others after --stalled-after seconds without its heartbeat, its check is marked failed
(the sources it had not recorded are checked at the next planning) and its mail jobs run again; one that is only
silent (paused) keeps its host until it resumes, and no one crawls beside it. Needs
postwatch[cluster] and a PostgreSQL `database`. SIGTERM or Ctrl-C stops it cleanly: no new jobs,
running ones finish within [daemon] shutdown_grace (a check cut off then leaves the sources it had
not recorded due at once); a second one ends it at once.
`postwatch status` shows the queue: jobs waiting, running and failed, workers alive.

Workers serve no pages (no /subscribe, feeds or inbound mail; --metrics serves Prometheus
metrics), and `postwatch run` must not run beside them on the same database: it would check the
sources too.

exit status: 0 stopped; 1 a `postwatch run` daemon holds the database; 2 the database is not
PostgreSQL, or procrastinate is not installed."""


def _worker_parser(commands: Commands) -> None:
    worker = command(commands, "worker", run_worker, "run a cluster worker: one of several processes sharing the work "
                     "through PostgreSQL", WORKER_HELP, """\
  postwatch worker                        one worker; start as many as there are machines or cores
  postwatch worker --concurrency 8        more hosts crawled at once by this worker
  systemctl start postwatch-worker@{1..3} three workers (deploy/postwatch-worker@.service)
""")
    worker.set_defaults(daemon_logging=True)
    worker.add_argument("--concurrency", type=functools.partial(bounded_int, low=1, high=64), default=4,
                        help="jobs this worker runs at once: checks of different hosts, mail (default 4); all "
                             "workers' together should cover the hosts with a source due in one --plan-every, "
                             "plus one each for mail, or batches wait for a slot and checks run late")
    worker.add_argument("--plan-every", type=functools.partial(bounded_int, low=1, high=60), default=5, metavar="SECONDS",
                        help="how often the cluster plans due sources; divides 60 (default 5; same on every worker)")
    worker.add_argument("--batch", type=functools.partial(bounded_int, low=1, high=500), default=50, metavar="N",
                        help="sources per check job, all of one host (default 50)")
    worker.add_argument("--heartbeat", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between this worker's heartbeats (default 10)")
    worker.add_argument("--stalled-after", type=float, default=30.0, metavar="SECONDS",
                        help="a worker silent this long is taken for dead and its jobs are recovered (default 30)")
    worker.add_argument("--name", help="this worker's name in the logs (default host:pid)")
    worker.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus /metrics here: this worker's checks and deliveries, and the cluster's "
                             "queue (jobs by task and state, workers alive)")


def run_worker(args: argparse.Namespace, config: Config) -> int:
    from postwatch.cluster import WorkerSettings, require_postgresql, run_worker as run
    from state.cluster import NotPostgreSQL

    try:
        require_postgresql(config)
    except NotPostgreSQL as exc:
        return fail(str(exc))
    try:
        import procrastinate  # noqa: F401 - the optional extra: said in one line when it is missing
    except ImportError as exc:
        return fail(f"postwatch worker needs procrastinate: pip install 'postwatch[cluster]' ({exc.name} is missing)")
    if 60 % args.plan_every:
        return fail(f"--plan-every must divide 60 seconds, not {args.plan_every}")
    from state import AlreadyRunning

    try:
        return run(config, WorkerSettings(plan_every=args.plan_every, batch_size=args.batch, concurrency=args.concurrency,
                                          heartbeat_every=args.heartbeat, stalled_after=args.stalled_after, name=args.name,
                                          metrics=args.metrics))
    except AlreadyRunning as exc:
        return fail(str(exc), 1)
