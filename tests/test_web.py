"""The daemon's HTTP endpoint (postwatch/web.py) under hostile clients, and while the database is
away: `postwatch run` as a subprocess, the replica, a real SMTP server, raw sockets on loopback."""
from __future__ import annotations

import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.harness import PG_SERVER, Cli, Daemon, free_port, get, kill_backends, sql, wait_for, write_config

IDLE_CONNECTIONS = 2000
DAEMON_FILE_LIMIT = 1024        # the usual soft limit, and here the hard one too: the daemon cannot raise it


class LoggingCli(Cli):
    """`postwatch` whose daemon logs to a file (readable while it runs, never a full pipe) and may
    run under a file-descriptor limit."""

    def __init__(self, config: Path, *, file_limit: int | None = None, verbose: bool = False):
        super().__init__(config)
        self.file_limit, self.verbose = file_limit, verbose
        self.log_path = config.parent / "daemon.log"

    def popen(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "POSTWATCH_SECRET": "test-secret"}
        limit = self.file_limit

        def limit_files():
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        verbosity = ["-vv"] if self.verbose else []
        with open(self.log_path, "ab") as log_file:
            return subprocess.Popen([sys.executable, "-m", "postwatch", "--config", str(self.config), *verbosity, *args],
                                    stdout=subprocess.DEVNULL, stderr=log_file, env=env, cwd=self.config.parent,
                                    preexec_fn=limit_files)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def daemon_config(tmp_path, site, smtp) -> tuple[Path, int]:
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port)
    text = config.read_text().replace('title = "Liberty in North Korea"', 'title = "Liberty in North Korea"\ninterval = "2s"')
    config.write_text(text.replace("[crawl]\n", '[crawl]\njitter = "0s"\n'))
    return config, port


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read the answer until the server closes; AssertionError if it does not
    close within `timeout` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except socket.timeout:
            raise AssertionError(f"no complete answer within {timeout}s to {data[:60]!r}; got {answer[:200]!r}") from None
        except ConnectionResetError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def health_status(port: int) -> int:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0]
    except OSError:
        return 0


def raise_own_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"this test needs {needed} file descriptors; the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_idle_connections(port: int, count: int, timeout: float = 10.0) -> list[socket.socket]:
    """`count` TCP connections to loopback:port that never send a byte, made one after another.
    One at a time, not a burst: a burst overflows the listen queue, and the kernel then completes
    handshakes (SYN cookies) for connections the server never sees."""
    sockets: list[socket.socket] = []
    try:
        for n in range(count):
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            except OSError as exc:
                raise AssertionError(f"connection {n + 1} of {count} failed: {exc}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@pytest.mark.timeout(600)   # before the fix, connecting alone took minutes
def test_two_thousand_idle_connections_change_nothing_for_checks_and_mail(tmp_path, site, smtp):
    raise_own_file_limit(IDLE_CONNECTIONS + 200)
    config, port = daemon_config(tmp_path, site, smtp)
    cli = LoggingCli(config, file_limit=DAEMON_FILE_LIMIT)
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    with Daemon(cli, port) as daemon:
        sockets = open_idle_connections(port, IDLE_CONNECTIONS)
        try:
            time.sleep(1)                    # let the daemon take in the last ones
            daemon_files = len(os.listdir(f"/proc/{daemon.process.pid}/fd"))
            post = site.add_post("Posted while 2,000 connections sit idle", body_paragraphs=["Still delivered."])
            wait_for(lambda: smtp.messages, timeout=60, what="the digest email")
            assert post.title in smtp.messages[0].get_body(preferencelist=("plain",)).get_content()
            wait_for(lambda: health_status(port) == 200, timeout=30, what="/healthz answering 200")
            # Far below the 1,024 limit: the cap (256 by default) holds however many clients come.
            assert daemon_files < 600, f"the daemon had {daemon_files} files open"
        finally:
            for sock in sockets:
                sock.close()
        assert daemon.stop() == 0
    log = cli.log()
    assert "Too many open files" not in log
    assert "max_connections" in log          # the operator is told the cap was reached (once a minute)


def test_a_slowloris_client_and_an_idle_keep_alive_connection_are_dropped_within_the_timeout(tmp_path, site, smtp):
    config, port = daemon_config(tmp_path, site, smtp)
    cli = LoggingCli(config)
    with Daemon(cli, port) as daemon:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            dropped_after = None
            for _ in range(40):              # one header byte a second, never the blank line
                try:
                    sock.sendall(b"X")
                    if sock.recv(1024) == b"":
                        dropped_after = time.monotonic() - started
                        break
                except socket.timeout:
                    continue
                except OSError:
                    dropped_after = time.monotonic() - started
                    break
        assert dropped_after is not None, "the slow client was still connected after 40 s"
        assert dropped_after < 15, f"dropped only after {dropped_after:.1f}s"
        # An idle keep-alive connection goes the same way once its answer is sent.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = sock.recv(65536)
            assert status_of(answer) == 200 and b"Connection: close" not in answer
            started = time.monotonic()
            assert sock.recv(65536) == b""
            assert time.monotonic() - started < 15
        assert health_status(port) == 200
        assert daemon.stop() == 0


def test_malformed_requests_get_400_with_no_traceback_and_the_daemon_stays_healthy(tmp_path, site, smtp):
    config, port = daemon_config(tmp_path, site, smtp)
    cli = LoggingCli(config, verbose=True)
    with Daemon(cli, port) as daemon:
        for length in (b"abc", b"-1"):
            answer = exchange(port, b"POST /unsubscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length +
                              b"\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\ntoken=x")
            assert status_of(answer) == 400, answer[:200]
        assert status_of(exchange(port, b"GARBAGE / HTTP/1.1 extra\r\n\r\n")) == 400
        assert status_of(exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")) == 400
        # A body larger than any form, announced but never sent: refused at once, not awaited.
        answer = exchange(port, b"POST /unsubscribe?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
        assert status_of(answer) == 413
        # A body announced and never sent, within the cap: the request times out, nothing hangs.
        answer = exchange(port, b"POST /unsubscribe?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
                                b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=", timeout=30)
        assert status_of(answer) == 408
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert daemon.stop() == 0
    log = cli.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert log.count("http: bad request from") == 4, log[-3000:]


def test_a_taken_listen_address_is_one_clear_line(tmp_path, site, smtp):
    config, port = daemon_config(tmp_path, site, smtp)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = Cli(config)("run", timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"postwatch: cannot listen on 127.0.0.1:{port} ([daemon] listen): Address already in use", lines
    assert "Traceback" not in result.stderr


def test_max_connections_is_validated():
    from postwatch.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config({"daemon": {"max_connections": 0}})
    assert "[daemon] max_connections must be between 1 and 10000, not 0" in str(refused.value)
    assert parse_config({"daemon": {"max_connections": 64}}).daemon.max_connections == 64


# --------------------------------------------------------------------------------------------
# PostgreSQL away: the endpoint in-process on the reactor's loop, against a database of its own
# that then refuses connections.
# --------------------------------------------------------------------------------------------
def refuse_connections(database: str, refused: bool) -> None:
    sql("postgres", f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"false" if refused else "true"}')
    if refused:
        kill_backends(database)


def test_health_metrics_and_unsubscribe_answer_503_naming_the_database_while_it_is_away(tmp_path, pg_database, caplog,
                                                                                        monkeypatch):
    from crawler.runtime import run
    from postwatch.config import Config
    from postwatch.web import WebEndpoint
    from postwatch.app import App

    monkeypatch.setenv("POSTWATCH_SECRET", "test-secret")
    url = f"{PG_SERVER}/{pg_database}"
    app = App.open(Config(path=tmp_path / "postwatch.toml", database=url))
    endpoint = WebEndpoint(app, "127.0.0.1", 0)
    run(endpoint.start)
    base = f"http://{endpoint.address}"
    try:
        assert get(f"{base}/healthz")[0] == 200
        refuse_connections(pg_database, True)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            status, body = get(f"{base}/healthz")
            assert status == 503, body
            answer = json.loads(body)
            assert answer["status"] == "unhealthy"
            assert answer["detail"].startswith(f"database {PG_SERVER}/{pg_database}: ")
            assert "not currently accepting connections" in answer["detail"] and "\n" not in answer["detail"]

            status, body = get(f"{base}/metrics")
            assert status == 503 and json.loads(body)["detail"].startswith("database ")

            status, page = get(f"{base}/unsubscribe?token=1.abc")
            assert status == 503 and "try the link again" in page

            status, text = get(f"{base}/feeds/all.atom")
            assert status == 503 and "try again in a few minutes" in text
        records = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert [r.getMessage().split(":")[0] for r in records] == ["http /healthz", "http /metrics", "http /unsubscribe",
                                                                   "http /feeds"]
        assert all(r.exc_info is None and "\n" not in r.getMessage() and pg_database in r.getMessage() for r in records)

        refuse_connections(pg_database, False)
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, timeout=20, what="/healthz after the database is back")
    finally:
        run(endpoint.stop)
        app.close()
