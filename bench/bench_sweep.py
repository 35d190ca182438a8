"""Sweep figures (issue #15): unchanged sources checked warm inside one process (as the daemon
does), the raw-client floor beside them, and one-shot `postwatch check` runs.

The blogs are served by a separate process (aiohttp, one listening socket per blog) on distinct
loopback addresses 127.0.0.2, 127.0.0.3, ..., so the figures measure postwatch, not the replica,
and every source has a host of its own (the per-host delay never applies). Each blog answers its
listing with an ETag and 304 to a matching If-None-Match, as the LiNK replica does.

Goals: 100 unchanged sources warm <= 0.12 s, 100 requests, 0 body bytes; 1,000 warm <= 1.2 s and
linear; one-shot check of 100 sources <= 0.5 s.

    .venv/bin/python bench/bench_sweep.py [--sources 100 1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))     # support: the test helpers kept out of the wheel

PORT = 8781
FIRST_HOST = ipaddress.ip_address("127.0.0.2")


def hosts(count: int) -> list[str]:
    return [str(FIRST_HOST + n) for n in range(count)]


def serve(count: int) -> None:
    """The replica process: `count` blogs, one per loopback address, until stdin closes."""
    from aiohttp import web

    from postwatch.testing.replica import BlogReplica, generate_posts

    replica = BlogReplica(generate_posts(4), url_variants=False)
    _, content_type, body, _ = replica.render("/blog", {})
    etag = '"bench-listing-1"'

    async def listing(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag, "Content-Type": content_type})

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def main() -> None:
        app = web.Application()
        app.add_routes([web.get("/blog", listing), web.get("/robots.txt", robots)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in hosts(count):
            await web.TCPSite(runner, host, PORT, backlog=512).start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


def config_text(urls: list[str]) -> str:
    sources = "".join(f'\n[[sources]]\nname = "blog{n}"\nurl = "{url}"\nkind = "webflow"\n' for n, url in enumerate(urls))
    return f'database = "state.db"\n\n[crawl]\ntimeout = 10\n{sources}\n[digest]\nfrom = "postwatch <d@postwatch.test>"\n'


def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one fresh-interpreter run, the child's own rusage."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{text}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def raw_floor(urls: list[str], etag: str, workers: int) -> float:
    """Conditional GETs of every URL with http.client, no database, no postwatch: the floor."""
    def one(url: str) -> int:
        host = url.split("/")[2].split(":")[0]
        connection = http.client.HTTPConnection(host, PORT, timeout=10)
        connection.request("GET", "/blog", headers={"If-None-Match": etag})
        status = connection.getresponse().status
        connection.close()
        return status

    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(one, urls))
        seconds = time.perf_counter() - started
    assert set(statuses) == {304}, set(statuses)
    return seconds


def bench(count: int, rounds: int) -> dict:
    from crawler.runtime import run
    from postwatch.app import App
    from postwatch.config import load_config
    from support.harness import ENVIRONMENT

    replica = subprocess.Popen([sys.executable, __file__, "--serve", str(count)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert replica.stdout.readline().strip() == "ready"
        urls = [f"http://{host}:{PORT}/blog" for host in hosts(count)]
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            config_path = folder / "postwatch.toml"
            config_path.write_text(config_text(urls), encoding="utf-8")
            env = {**os.environ, **ENVIRONMENT, "HOME": str(folder),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            command = [sys.executable, "-m", "postwatch", "--config", str(config_path), "check"]
            first_wall, _, _, _ = measured(command, folder, env)          # baseline: database, robots.txt, validators
            oneshot = [measured(command, folder, env) for _ in range(3)]
            assert oneshot[-1][3].count("no changes (1 requests, 0 bytes)") == count, oneshot[-1][3][:500]

            app = App.open(load_config(config_path))
            names = [s.name for s in app.store.list_sources()]

            async def sweep():
                started = time.perf_counter()
                summaries = await app.checker.check_many(names)
                return time.perf_counter() - started, summaries

            # Sweeps are spaced as a daemon's are, beyond each host's delay: back to back, the
            # per-host gate would (rightly) make every request wait for its host's last one.
            spacing = app.config.crawl.download_delay * 1.5 + 0.1
            run(sweep)       # warm: threads, connections, the reactor
            walls, requests, body_bytes = [], set(), set()
            for _ in range(rounds):
                time.sleep(spacing)
                seconds, summaries = run(sweep)
                assert all(s.ok and s.not_modified for s in summaries), [s.error for s in summaries if not s.ok][:3]
                walls.append(seconds)
                requests.add(sum(s.requests for s in summaries))
                body_bytes.add(sum(s.response_bytes for s in summaries))
            app.close()
            floor = min(raw_floor(urls, '"bench-listing-1"', app.config.crawl.parallel_sources) for _ in range(rounds))
    finally:
        replica.stdin.close()
        replica.wait(timeout=30)
    return {"count": count, "first": first_wall, "walls": walls, "requests": requests, "bytes": body_bytes,
            "floor": floor, "oneshot": oneshot}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; blogs on 127.0.0.2.. in their own process")
    results = [bench(count, args.rounds) for count in args.sources]
    for r in results:
        walls = r["walls"]
        walls_1shot = [o[0] for o in r["oneshot"]]
        print(f"{r['count']:>5} unchanged sources warm in one process: median {statistics.median(walls):.3f} s "
              f"(min {min(walls):.3f}, max {max(walls):.3f}) over {len(walls)} sweeps, "
              f"{'/'.join(map(str, sorted(r['requests'])))} requests, {'/'.join(map(str, sorted(r['bytes'])))} body bytes; "
              f"raw-client floor {r['floor']:.3f} s")
        print(f"{'':>5} one-shot `postwatch check` of all: median {statistics.median(walls_1shot):.3f} s wall, "
              f"{statistics.median(o[1] for o in r['oneshot']):.3f} s CPU, {max(o[2] for o in r['oneshot']):.1f} MB peak RSS; "
              f"first pass (baseline, robots.txt) {r['first']:.2f} s")
    print(f"peak RSS of this process (replicas excluded): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    if len(results) > 1:
        a, b = results[0], results[-1]
        ratio = statistics.median(b["walls"]) / statistics.median(a["walls"])
        print(f"growth: {b['count'] / a['count']:.0f}x the sources took {ratio:.1f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
