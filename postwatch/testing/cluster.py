"""A cluster on this machine, for the cluster tests and bench/bench_cluster.py: replica blogs bound
to several loopback addresses (each address is one host to the crawl's politeness gate), a
PostgreSQL database of its own, a config watching every replica, and `postwatch worker`
processes. What the replicas logged tells whether the per-host delay held across workers."""
from __future__ import annotations

import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from postwatch.testing.harness import PG_SERVER, Cli, free_port
from postwatch.testing.replica import BlogReplica, LoggedRequest, generate_posts


@dataclass
class ClusterSite:
    name: str
    host: str
    replica: BlogReplica

    @property
    def listing_path(self) -> str:
        return "/blog"


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
    """`with ClusterTrial(folder, hosts, per_host, ...) as trial:` — replicas started, config written,
    database created (and dropped on the way out); trial.start_workers(n) starts workers."""
    folder: Path
    hosts: list[str]
    per_host: int
    smtp_port: int | None
    interval: str = "12s"
    jitter: str = "2s"
    delay: float = 0.2
    posts_per_blog: int = 3
    # Short periods, but a stall well above what a loaded 2-core machine holds a loop for.
    worker_args: tuple[str, ...] = ("--plan-every", "2", "--heartbeat", "1", "--stalled-after", "10")
    database: str = ""
    sites: list[ClusterSite] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def __enter__(self) -> "ClusterTrial":
        self.database = create_database()
        try:
            for host in self.hosts:
                for i in range(self.per_host):
                    replica = BlogReplica(generate_posts(self.posts_per_blog), host=host).start()
                    self.sites.append(ClusterSite(f"blog-{host.rsplit('.', 1)[-1]}-{i}", host, replica))
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
        smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {self.smtp_port}\nsecurity = "none"\n' if self.smtp_port else ""
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

{smtp}
[daemon]
listen = "127.0.0.1:{free_port()}"
shutdown_grace = "3s"
''', encoding="utf-8")
        return path

    def start_workers(self, count: int, *extra: str) -> None:
        for _ in range(count):
            self.start_worker(*extra)

    def start_worker(self, *extra: str) -> subprocess.Popen:
        log = self.folder / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log)
        handle = log.open("w")
        process = subprocess.Popen(self.cli._command(("worker", *self.worker_args, *extra)), stdout=handle,
                                   stderr=subprocess.STDOUT, text=True, cwd=self.folder,
                                   env={**__import__("os").environ, "POSTWATCH_SECRET": "test-secret"})
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

    def worker_output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs if log.exists())

    def requests_by_host(self) -> dict[str, list[LoggedRequest]]:
        by_host: dict[str, list[LoggedRequest]] = {}
        for site in self.sites:
            by_host.setdefault(site.host, []).extend(site.replica.requests)
        return {host: sorted(requests, key=lambda r: r.time) for host, requests in by_host.items()}

    def check_times(self, site: ClusterSite) -> list[float]:
        """When each check of `site` began: its listing's requests (the first URL of every check)."""
        return sorted(r.time for r in site.replica.requests if r.path == site.listing_path and not r.query)

    def __exit__(self, *exc) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait()
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
