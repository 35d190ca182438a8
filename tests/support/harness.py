"""Driving the real `postwatch` command, as the tests and the benchmarks do: a config file that
watches a replica, a free loopback port, the command and its daemon as subprocesses, waiting for
a condition, and a PostgreSQL server to give each test a database of its own."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# Unsubscribe links need a key; a fixed one keeps the harness from creating a secret file.
ENVIRONMENT = {"POSTWATCH_SECRET": "test-secret"}
PG_SERVER = os.environ.get("POSTWATCH_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, blog_url: str, smtp_port: int | None, *, listen_port: int | None = None,
                 database: str = "state.db", interval: str | None = None, extra: str = "") -> Path:
    """folder/postwatch.toml: one source `link` at `blog_url`, no politeness delays, state in
    `database` (beside the file), mail to 127.0.0.1:`smtp_port` (or .eml files in folder/outbox
    without one). `interval`: the daemon checks the source that often, without jitter."""
    smtp_block = f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n' if smtp_port else ""
    schedule = f'interval = "{interval}"\n' if interval else ""
    jitter = 'jitter = "0s"\n' if interval else ""
    text = f'''database = "{database}"

[crawl]
{jitter}download_delay = 0
autothrottle = false
timeout = 5
retries = 1
removal_confirm_after = "0s"

[[sources]]
name = "link"
url = "{blog_url}"
kind = "link"
title = "Liberty in North Korea"
{schedule}
[digest]
from = "postwatch <digest@postwatch.test>"

{smtp_block}
[daemon]
listen = "127.0.0.1:{listen_port or free_port()}"
{extra}
'''
    path = folder / "postwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Cli:
    """`postwatch --config CONFIG ...` as a subprocess in the config's folder."""

    def __init__(self, config: Path):
        self.config = config

    def _command(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "postwatch", "--config", str(self.config), *args]

    def __call__(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(self._command(args), capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **ENVIRONMENT}, cwd=self.config.parent)
        if check and result.returncode != 0:
            raise AssertionError(f"postwatch {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self._command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **ENVIRONMENT}, cwd=self.config.parent)


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, every: float = 0.2, what: str = "condition") -> T:
    """The first truthy value of `predicate()`; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Daemon:
    """`with Daemon(cli, port) as daemon:` — `postwatch run` until it answers /healthz on `port`;
    killed on the way out if still running."""

    def __init__(self, cli: Cli, port: int):
        self.cli, self.port = cli, port
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Daemon":
        self.process = self.cli.popen("run")
        wait_for(lambda: self._health() is not None or self.process.poll() is not None, what="the daemon's /healthz")
        assert self.process.poll() is None, self.process.communicate()[1]
        return self

    def _health(self) -> tuple[int, str] | None:
        try:
            return get(f"http://127.0.0.1:{self.port}/healthz")
        except OSError:
            return None

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def checks_done(port: int, source: str = "link") -> float:
    """How many checks of `source` the daemon serving /metrics on `port` has finished well."""
    status, metrics = get(f"http://127.0.0.1:{port}/metrics")
    match = re.search(rf'postwatch_checks_total\{{result="ok",source="{re.escape(source)}"\}} (\S+)', metrics)
    return float(match.group(1)) if match else 0.0


def sql(database: str, query: str, *params):
    """Run `query` on `database` of PG_SERVER; its rows, or None for a statement without any."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/{database}", autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def kill_backends(database: str) -> int:
    """pg_terminate_backend on every connection to `database` but this one."""
    rows = sql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid()", database)
    return len(rows)
