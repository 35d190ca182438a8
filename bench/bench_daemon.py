"""Daemon figures: RSS after 200 in-process checks vs after 20, and idle CPU of `postwatch run`.

    .venv/bin/python bench/bench_daemon.py
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))     # support: the test helpers kept out of the wheel


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_rss(checks: int = 200) -> None:
    from support.harness import write_config
    from crawler.runtime import run
    from postwatch.config import load_config
    from postwatch.testing.replica import BlogReplica
    from postwatch.app import App

    with tempfile.TemporaryDirectory() as folder, BlogReplica() as site:
        app = App.open(load_config(write_config(Path(folder), site.blog_url, None)))

        async def loop():
            samples = {}
            for n in range(1, checks + 1):
                if n % 10 == 0:
                    site.add_post(f"Bench post {n}", body_paragraphs=[f"Body {n}."])
                await app.checker.check_source("link", full=(n % 50 == 0))
                if n in (20, checks):
                    samples[n] = rss_mb()
            return samples

        started = time.perf_counter()
        samples = run(loop)
        elapsed = time.perf_counter() - started
        app.close()
    growth = (samples[checks] - samples[20]) / samples[20] * 100
    print(f"rss after 20 checks: {samples[20]:.1f} MB; after {checks}: {samples[checks]:.1f} MB "
          f"({growth:+.1f} %, target within 10 %); {checks} checks in {elapsed:.1f} s")


def bench_idle_cpu(seconds: float = 30.0) -> None:
    from support.harness import free_port, write_config
    from postwatch.testing.replica import BlogReplica

    with tempfile.TemporaryDirectory() as folder, BlogReplica() as site:
        port = free_port()
        config = write_config(Path(folder), site.blog_url, None, listen_port=port)
        subprocess.run([sys.executable, "-m", "postwatch", "--config", str(config), "check"], check=True,
                       capture_output=True)
        process = subprocess.Popen([sys.executable, "-m", "postwatch", "--config", str(config), "run"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)  # imports and start-up
        before = cpu_seconds(process.pid)
        time.sleep(seconds)
        used = cpu_seconds(process.pid) - before
        rss = rss_mb(process.pid)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    print(f"idle daemon: {used:.2f} CPU s in {seconds:.0f} s ({used / seconds * 100:.2f} % of one core), "
          f"RSS {rss:.1f} MB, exit code on SIGTERM {code}")


if __name__ == "__main__":
    bench_rss()
    bench_idle_cpu()
