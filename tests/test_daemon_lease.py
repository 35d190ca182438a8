"""One daemon per PostgreSQL database, also when the lock's connections are killed or the network
drops: `postwatch run` subprocesses on a throwaway database of the real server."""
from __future__ import annotations

import re
import select
import signal
import socket
import threading
import time

from support.harness import (PG_SERVER, Cli, Daemon, checks_done, free_port, kill_backends, sql,
                                      wait_for, write_config)


def lease(database: str):
    rows = sql(database, "SELECT host, pid, expires_at > now() FROM daemon_lease")
    return rows[0] if rows else None


def daemon_config(folder, site, database_url: str, port: int) -> Cli:
    folder.mkdir(exist_ok=True)
    return Cli(write_config(folder, site.blog_url, None, listen_port=port, database=database_url, interval="2s"))


def stop(daemon: Daemon) -> int:
    """SIGTERM; the exit code (with what the daemon logged when it does not stop in time)."""
    daemon.process.send_signal(signal.SIGTERM)
    try:
        return daemon.process.wait(timeout=40)     # generous: two cores shared with other test runs
    except Exception:
        daemon.process.kill()
        raise AssertionError(f"the daemon did not stop on SIGTERM: {daemon.process.communicate()[1]}") from None


REFUSAL = re.compile(r"another postwatch daemon \(host \S+, pid (\d+)\) holds postgresql://\S+; its lease expires in \d+s")


def test_killed_connections_never_let_a_second_daemon_run_and_sigterm_still_exits_zero(tmp_path, site, pg_database):
    url = f"{PG_SERVER}/{pg_database}"
    port_a = free_port()
    cli_a = daemon_config(tmp_path / "a", site, url, port_a)
    cli_b = daemon_config(tmp_path / "b", site, url, free_port())     # own port: only the lease can stop it
    with Daemon(cli_a, port_a) as a:
        for _ in range(3):      # across several renewals of the lease
            assert kill_backends(pg_database) > 0
            b = cli_b("run", "--once", timeout=60)
            assert a.process.poll() is None, a.process.communicate()[1]
            assert b.returncode != 0
            assert int(REFUSAL.search(b.stderr).group(1)) == a.process.pid, b.stderr
            assert "Traceback" not in b.stderr
            time.sleep(6)
        # A reconnected: it still holds the lease and still runs its checks.
        host, pid, unexpired = lease(pg_database)
        assert (pid, unexpired) == (a.process.pid, True)
        before = checks_done(port_a)
        wait_for(lambda: checks_done(port_a) > before, timeout=30, what="a check after the killed connections")

        kill_backends(pg_database)
        assert stop(a) == 0
        stderr = a.process.communicate()[1]
    assert "Traceback" not in stderr, stderr
    assert lease(pg_database) is None       # a clean stop gives the lease back


def test_after_sigkill_a_daemon_on_the_same_host_starts_at_once(tmp_path, site, pg_database):
    url = f"{PG_SERVER}/{pg_database}"
    port_a, port_b = free_port(), free_port()
    with Daemon(daemon_config(tmp_path / "a", site, url, port_a), port_a) as a:
        a.process.kill()
        a.process.wait()
    host, pid, unexpired = lease(pg_database)
    assert pid == a.process.pid and unexpired       # the dead daemon's lease is still running
    started = time.monotonic()
    with Daemon(daemon_config(tmp_path / "b", site, url, port_b), port_b) as b:
        took = time.monotonic() - started
        assert lease(pg_database)[1] == b.process.pid
        assert stop(b) == 0
    assert took < 20, f"took {took:.1f}s: waited for the lease to expire (30s) instead of taking it over"


class FreezableProxy:
    """A TCP relay to PostgreSQL that can go silent like a dropped network: packets stop, no
    connection is closed or refused."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.frozen.is_set():
                continue        # accepted, never answered
            upstream = socket.create_connection(self.target)
            self.sockets.append(upstream)
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket):
        pair = {a: b, b: a}
        while not self.frozen.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.frozen.is_set():
                        return      # swallowed
                    pair[sock].sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_a_daemon_cut_off_from_the_database_stops_with_one_line_before_another_may_take_over(
        tmp_path, site, pg_database):
    proxy = FreezableProxy()
    try:
        host = PG_SERVER.rpartition("@")[0]
        via_proxy = f"{host}@127.0.0.1:{proxy.port}/{pg_database}"
        direct = f"{PG_SERVER}/{pg_database}"
        port_a = free_port()
        cli_b = daemon_config(tmp_path / "b", site, direct, free_port())
        with Daemon(daemon_config(tmp_path / "a", site, via_proxy, port_a), port_a) as a:
            attempts = []       # (B's result, whether A was still running when B finished)
            done = threading.Event()

            def start_b_again_and_again():
                while not done.is_set():
                    b = cli_b("run", "--once", timeout=60)
                    attempts.append((b, a.process.poll() is None))

            proxy.frozen.set()
            trying = threading.Thread(target=start_b_again_and_again)
            trying.start()
            try:
                assert a.process.wait(timeout=40) == 1
                # A ended while its lease still ran: no second daemon could have taken over before.
                assert lease(pg_database)[2] is True
            finally:
                done.set()
                trying.join()
            stderr = a.process.communicate()[1]
        assert attempts
        for b, a_was_running in attempts:
            if a_was_running:
                assert b.returncode != 0 and REFUSAL.search(b.stderr), b.stderr
        assert "Traceback" not in stderr, stderr
        lease_lines = [line for line in stderr.splitlines() if "lease" in line]
        assert len(lease_lines) == 1 and "stopping this daemon" in lease_lines[0], stderr
        # The far side of the cut gives up too (the server's keepalives would, in a minute or so):
        # A's orphaned sessions end and their locks go.
        proxy.close()
        port_b = free_port()
        started = time.monotonic()
        with Daemon(daemon_config(tmp_path / "c", site, direct, port_b), port_b) as c:
            assert lease(pg_database)[1] == c.process.pid
            assert stop(c) == 0
        assert time.monotonic() - started < 20
    finally:
        proxy.close()


def test_a_daemon_whose_lease_was_taken_stops_at_once_with_one_line(tmp_path, site, pg_database):
    url = f"{PG_SERVER}/{pg_database}"
    port = free_port()
    with Daemon(daemon_config(tmp_path / "a", site, url, port), port) as a:
        sql(pg_database, "UPDATE daemon_lease SET holder = 'someone-else', pid = 1")
        assert a.process.wait(timeout=30) == 1
        stderr = a.process.communicate()[1]
    assert "Traceback" not in stderr, stderr
    lease_lines = [line for line in stderr.splitlines() if "lease" in line]
    assert len(lease_lines) == 1 and "another process took" in lease_lines[0], stderr
    assert lease(pg_database)[1] == 1       # not deleted: it is not ours any more
