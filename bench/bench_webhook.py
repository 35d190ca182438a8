"""Webhook figures: N webhook subscribers, composed and delivered end to end (signed JSON over one
keep-alive connection per receiver, each delivery marked in the outbox) to a signature-checking
receiver in a process of its own on 127.0.0.2 (tests/support/webhook_receiver.py).

    .venv/bin/python bench/bench_webhook.py [--subscribers 2000] [--receivers 1] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.2"
MASTER = "bench-webhook-master-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def run_once(subscribers: int, receivers: int) -> dict:
    from crawler.items import PostItem
    from digest.delivery import make_channel
    from digest.sender import compose_and_queue, flush_outbox
    from digest.settings import DigestSettings
    from state import CheckInput, SourceRecord, Store

    now = datetime.now(timezone.utc)
    servers, bases = [], []
    for _ in range(receivers):
        port = _free_port()
        server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "webhook_receiver.py"), "--host", HOST,
                                   "--port", str(port), "--master-secret-env", "BENCH_MASTER"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "BENCH_MASTER": MASTER})
        bases.append(server.stdout.readline().strip())          # its URL, once it listens
        servers.append(server)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(str(Path(folder) / "bench.db"))
        store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog")])
        base = [PostItem(url=f"https://libertyinnorthkorea.org/blog/p{n}", title=f"Post {n}", published=now,
                         body_html=f"<p>Body {n}.</p>", summary=None, origin="page") for n in range(20)]
        store.apply_check("link", CheckInput(posts=base, baseline=True), now)
        for n in range(subscribers):
            store.add_subscriber(f"{bases[n % receivers]}/hook/{n}", cadence="immediate", now=now)
        fresh = [PostItem(url=f"https://libertyinnorthkorea.org/blog/new{n}", title=f"Twelve refugees reach freedom, part {n}",
                          published=now, body_html="<p>" + "A paragraph about the journey. " * 20 + "</p>",
                          summary="A summary of the journey.", origin="page") for n in range(5)]
        store.apply_check("link", CheckInput(posts=base + fresh), now)
        settings = DigestSettings(secret=b"bench", source_titles={"link": "Liberty in North Korea"})
        started = time.perf_counter()
        queued = compose_and_queue(store, settings, now)
        composed = time.perf_counter() - started
        sending, cpu_before = time.perf_counter(), _cpu_seconds(None)
        with make_channel("webhook", secret=MASTER.encode()) as channel:
            stats = flush_outbox(store, channel, now)
        sent_in, cpu_used = time.perf_counter() - sending, _cpu_seconds(None) - cpu_before
        store.close()
    accepted = 0
    server_cpu = 0.0
    for server in servers:
        server_cpu += _cpu_seconds(server.pid)
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=10)
        accepted += int(err.strip().rsplit(" ", 1)[1])
    return {"queued": len(queued), "composed": composed, "sent": stats.sent, "accepted": accepted,
            "seconds": sent_in, "rate": stats.sent / sent_in, "cpu_ms": cpu_used / stats.sent * 1000,
            "server_cpu_ms": server_cpu / stats.sent * 1000}


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--receivers", type=int, default=1, help="receiver processes (hosts) the subscribers spread over")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best = None
    for _ in range(args.rounds):
        result = run_once(args.subscribers, args.receivers)
        assert result["accepted"] == result["sent"] == args.subscribers, result
        print(f"{args.subscribers} webhook subscribers on {args.receivers} receiver(s) at {HOST}: composed "
              f"{result['queued']} in {result['composed']:.2f} s; delivered {result['sent']} (all {result['accepted']} "
              f"signatures verified by the receiver) in {result['seconds']:.2f} s = {result['rate']:.0f} deliveries/s; "
              f"CPU per delivery: postwatch {result['cpu_ms']:.2f} ms, receiver {result['server_cpu_ms']:.2f} ms",
              flush=True)
        if best is None or result["rate"] > best["rate"]:
            best = result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"best of {args.rounds}: {best['rate']:.0f} webhook deliveries/s (SQLite outbox, one sender thread); "
          f"peak RSS {peak:.0f} MB on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
