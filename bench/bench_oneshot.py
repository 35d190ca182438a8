"""One-shot figures (issue 32): `postwatch check --digest` as cron runs it, beside rss2email on the
same feeds, each command a fresh process, median of 3 runs, same machine, same run.

- S1   first check of one `auto` source (a listing that advertises its feed): postwatch records
       its baseline; rss2email `run --no-send` (it records the entries as seen, mails nothing).
- S2   the same source, nothing changed (rss2email is given the feed URL itself).
- S10  100 sources of kind `feed`, nothing changed.
- S10b the 100, 5 of which gained a post since: all 5 mailed to a local SMTP catcher (postwatch:
       one digest to an `immediate` subscriber telling the 5; rss2email: 5 messages).

The blogs are served by a separate process (aiohttp), one loopback address each: 127.0.0.2,
127.0.0.3, ... (the per-host delay never applies); each answers its listing and feed with an
ETag and Last-Modified and 304 to a matching conditional GET, and counts what it served.
Figures: wall time (median of 3), requests and body bytes the blogs served, peak RSS of the
command's process (os.wait4's rusage). rss2email runs when it is installed in a venv of its own
(--r2e PATH, default /tmp/r2e-venv/bin/r2e: `python3 -m venv /tmp/r2e-venv && /tmp/r2e-venv/bin/pip
install rss2email`); without it the postwatch columns are printed alone.

    .venv/bin/python bench/bench_oneshot.py [--runs 3] [--sources 100] [--r2e /tmp/r2e-venv/bin/r2e]
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = 8791
FIRST_HOST = ipaddress.ip_address("127.0.0.2")
POSTS = 10


def hosts(count: int) -> list[str]:
    return [str(FIRST_HOST + n) for n in range(count)]


# --------------------------------------------------------------------------------------------
# The blogs (a process of their own): commands on stdin, one answer line on stdout each
# --------------------------------------------------------------------------------------------
class Blog:
    def __init__(self, host: str):
        self.host = host
        self.base = f"http://{host}:{PORT}"
        self.added: list[tuple[str, str, datetime]] = []
        start = datetime(2020, 1, 1, 9, tzinfo=timezone.utc)
        self.posts = [(f"post-{n}", f"Post number {n} of {host}", start + timedelta(days=n)) for n in range(POSTS)]

    def all_posts(self):
        return sorted([*self.posts, *self.added], key=lambda p: p[2], reverse=True)

    def modified(self) -> datetime:
        return self.all_posts()[0][2]

    def listing(self) -> bytes:
        items = "".join(f'<article class="post"><h2 class="entry-title"><a href="{self.base}/{slug}/">{title}</a></h2>'
                        f'<time class="entry-date" datetime="{when.isoformat()}">{when:%B %d, %Y}</time>'
                        f'<div class="entry-summary"><p>The summary of {title}.</p></div></article>'
                        for slug, title, when in self.all_posts())
        return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Blog {self.host}</title>'
                f'<link rel="alternate" type="application/rss+xml" href="{self.base}/feed/"></head>'
                f'<body><main>{items}</main></body></html>').encode()

    def feed(self) -> bytes:
        items = "".join(f"<item><title>{title}</title><link>{self.base}/{slug}/</link><guid>{self.base}/{slug}/</guid>"
                        f"<pubDate>{format_datetime(when)}</pubDate><description>The summary of {title}.</description>"
                        f"<content:encoded><![CDATA[<p>{title}: the whole post, long enough to be a body. "
                        f"{'Words of the post. ' * 30}</p>]]></content:encoded></item>"
                        for slug, title, when in self.all_posts())
        return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
                'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
                f"<title>Blog {self.host}</title><link>{self.base}/</link><description>bench</description>"
                f"{items}</channel></rss>").encode()

    def page(self, slug: str) -> bytes | None:
        for s, title, when in self.all_posts():
            if s == slug:
                return (f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
                        f"<time datetime='{when.isoformat()}'>{when:%B %d, %Y}</time>"
                        f"<p>{'Words of the post. ' * 30}</p></article></body></html>").encode()
        return None


def serve(count: int) -> None:
    import asyncio

    from aiohttp import web

    blogs = {host: Blog(host) for host in hosts(count)}
    stats = {"requests": 0, "bytes": 0}

    def answer(request: web.Request, body: bytes, content_type: str, modified: datetime) -> web.Response:
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
        stats["requests"] += 1
        match = request.headers.get("If-None-Match")
        since = request.headers.get("If-Modified-Since")
        fresh = match == etag if match else False
        if not match and since:
            try:
                fresh = parsedate_to_datetime(since) >= modified.replace(microsecond=0)
            except (TypeError, ValueError):
                fresh = False
        if fresh:
            return web.Response(status=304, headers=headers)
        stats["bytes"] += len(body)
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    async def handle(request: web.Request) -> web.Response:
        blog = blogs[request.host.split(":")[0]]
        path = request.path
        if path == "/robots.txt":
            stats["requests"] += 1
            body = b"User-agent: *\nAllow: /\n"
            stats["bytes"] += len(body)
            return web.Response(body=body, content_type="text/plain")
        if path == "/":
            return answer(request, blog.listing(), "text/html; charset=utf-8", blog.modified())
        if path == "/feed/":
            return answer(request, blog.feed(), "application/rss+xml; charset=utf-8", blog.modified())
        page = blog.page(path.strip("/"))
        if page is None:
            stats["requests"] += 1
            return web.Response(status=404)
        return answer(request, page, "text/html; charset=utf-8", blog.modified())

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            word, *args = line.split()
            if word == "stats":
                print(json.dumps(stats), flush=True)
                stats.update(requests=0, bytes=0)
                continue
            if word == "add":           # add N: a new post on each of the first N blogs
                now = datetime.now(timezone.utc).replace(microsecond=0)
                for blog in list(blogs.values())[:int(args[0])]:
                    n = len(blog.added)
                    blog.added.append((f"new-{n}", f"A new post {n} of {blog.host}", now))
            elif word == "reset":
                for blog in blogs.values():
                    blog.added.clear()
            print("ok", flush=True)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in hosts(count):
            await web.TCPSite(runner, host, PORT, backlog=512).start()
        print("ready", flush=True)
        await commands()
        await runner.cleanup()

    asyncio.run(main())


class Blogs:
    def __init__(self, count: int):
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(count)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout.readline().strip() == "ready"

    def ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stats(self) -> dict:
        return json.loads(self.ask("stats"))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------
def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, output) of one run, the child's own rusage."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{text}")
    return seconds, usage.ru_maxrss / 1024, text


class Postwatch:
    name = "postwatch"

    def __init__(self, folder: Path, urls: list[str], kind: str, smtp_port: int):
        self.folder = folder
        folder.mkdir(parents=True)
        sources = "".join(
            f'\n[[sources]]\nname = "blog{n}"\nurl = "{url}"\nkind = "{kind}"\n'
            + (f'feed_url = "{url}feed/"\n' if kind == "feed" else "") for n, url in enumerate(urls))
        (folder / "postwatch.toml").write_text(
            f'database = "state.db"\n\n[crawl]\ndownload_delay = 0\nautothrottle = false\ntimeout = 10\n{sources}\n'
            f'[digest]\nfrom = "postwatch <digest@postwatch.test>"\n\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n', encoding="utf-8")
        self.env = {**os.environ, "POSTWATCH_SECRET": "bench-secret", "HOME": str(folder),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.base = [sys.executable, "-m", "postwatch", "--config", str(folder / "postwatch.toml")]

    def setup(self) -> None:
        measured([*self.base, "subscribers", "add", "reader@example.org", "--cadence", "immediate"], self.folder, self.env)

    def first(self) -> list[str]:
        return [*self.base, "check", "--digest"]

    def check(self) -> list[str]:
        return [*self.base, "check", "--digest"]

    def state_files(self) -> list[Path]:
        return [self.folder / "state.db"]


class Rss2email:
    name = "rss2email"

    def __init__(self, folder: Path, urls: list[str], r2e: str, smtp_port: int):
        self.folder, self.r2e = folder, r2e
        folder.mkdir(parents=True)
        self.env = {**os.environ, "HOME": str(folder), "XDG_CONFIG_HOME": str(folder), "XDG_DATA_HOME": str(folder)}
        self.base = [r2e, "-c", str(folder / "r2e.cfg"), "-d", str(folder / "r2e.json")]
        self.urls = urls
        self.smtp_port = smtp_port

    def setup(self) -> None:
        measured([*self.base, "new", "reader@example.org"], self.folder, self.env)
        config = (self.folder / "r2e.cfg").read_text()
        config = config.replace("email-protocol = sendmail", "email-protocol = smtp")
        config = config.replace("smtp-server = smtp.example.net", f"smtp-server = 127.0.0.1:{self.smtp_port}")
        (self.folder / "r2e.cfg").write_text(config)
        for n, url in enumerate(self.urls):
            measured([*self.base, "add", f"blog{n}", f"{url}feed/"], self.folder, self.env)

    def first(self) -> list[str]:
        return [*self.base, "run", "--no-send"]

    def check(self) -> list[str]:
        return [*self.base, "run"]

    def state_files(self) -> list[Path]:
        return [self.folder / "r2e.json", self.folder / "r2e.cfg"]


def snapshot(tool) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in tool.state_files()}


def restore(tool, saved: dict[Path, bytes]) -> None:
    for path in tool.state_files():
        path.unlink(missing_ok=True)
        for extra in path.parent.glob(path.name + "-*"):       # SQLite's -wal and -shm
            extra.unlink()
    for path, data in saved.items():
        path.write_bytes(data)


def scenario(tool, blogs: Blogs, smtp, runs: int, before, command) -> dict:
    """Median figures of `runs` runs, each from the same saved state (`before()` prepares it)."""
    walls, rss, requests, body = [], [], [], []
    mails = []
    for _ in range(runs):
        before()
        blogs.stats()
        sent_before = smtp.count()
        seconds, peak, output = measured(command(), tool.folder, tool.env)
        served = blogs.stats()
        walls.append(seconds)
        rss.append(peak)
        requests.append(served["requests"])
        body.append(served["bytes"])
        time.sleep(0.2)
        mails.append(smtp.count() - sent_before)
    return {"wall": statistics.median(walls), "rss": max(rss), "requests": statistics.median(requests),
            "bytes": statistics.median(body), "mails": statistics.median(mails), "walls": walls}


def bench_tool(make, blogs: Blogs, count: int, smtp, runs: int, folder: Path) -> dict:
    results = {}
    urls = [f"http://{host}:{PORT}/" for host in hosts(count)]
    # S1 and S2: one auto source (postwatch discovers the feed; rss2email is given it).
    one = make(folder / "one", urls[:1], "auto")
    one.setup()
    fresh = snapshot(one)
    results["S1"] = scenario(one, blogs, smtp, runs, lambda: restore(one, fresh), one.first)
    restore(one, fresh)
    measured(one.first(), one.folder, one.env)
    measured(one.check(), one.folder, one.env)          # settles (postwatch: the listing read once more)
    results["S2"] = scenario(one, blogs, smtp, runs, lambda: None, one.check)
    # S10 and S10b: `count` feed sources.
    many = make(folder / "many", urls, "feed")
    many.setup()
    measured(many.first(), many.folder, many.env)
    measured(many.check(), many.folder, many.env)
    results["S10"] = scenario(many, blogs, smtp, runs, lambda: None, many.check)
    settled = snapshot(many)

    def five_new() -> None:
        restore(many, settled)
        blogs.ask("reset")
        blogs.ask("add 5")

    results["S10b"] = scenario(many, blogs, smtp, runs, five_new, many.check)
    blogs.ask("reset")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--r2e", default="/tmp/r2e-venv/bin/r2e", help="the rss2email command (skipped when missing)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    from postwatch.testing.mailcatcher import MailCatcherProcess

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.sources} blogs on 127.0.0.2.. in their own process; median of {args.runs}")
    blogs = Blogs(args.sources)
    figures: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as folder, MailCatcherProcess(Path(folder) / "mail.jsonl") as smtp:
            folder = Path(folder)
            figures["postwatch"] = bench_tool(lambda f, urls, kind: Postwatch(f, urls, kind, smtp.port), blogs,
                                              args.sources, smtp, args.runs, folder / "postwatch")
            if shutil.which(args.r2e) or Path(args.r2e).exists():
                figures["rss2email"] = bench_tool(lambda f, urls, kind: Rss2email(f, urls, args.r2e, smtp.port), blogs,
                                                  args.sources, smtp, args.runs, folder / "rss2email")
            else:
                print(f"rss2email not found at {args.r2e}: its columns are left out")
    finally:
        blogs.close()
    print(f"{'scenario':<6} {'tool':<10} {'wall s':>7} {'requests':>8} {'body B':>9} {'RSS MiB':>8} {'mails':>5}  ratio")
    for name in ("S1", "S2", "S10", "S10b"):
        for tool, results in figures.items():
            r = results[name]
            ratio = ""
            if tool == "postwatch" and "rss2email" in figures:
                ratio = f"{r['wall'] / figures['rss2email'][name]['wall']:.2f}x"
            print(f"{name:<6} {tool:<10} {r['wall']:>7.3f} {r['requests']:>8.0f} {r['bytes']:>9.0f} {r['rss']:>8.1f} "
                  f"{r['mails']:>5.0f}  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
