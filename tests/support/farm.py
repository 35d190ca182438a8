"""Many replica blogs in a process of their own, for the cluster trials and bench/bench_cluster.py.

In the process under test, a thousand replicas would compete with the workers for the cores and
their GIL would distort the request logs the trials judge politeness by. Here each blog is its
own BlogReplica (its own port on its host, its own listing, its own request log), all served
from one selector loop: a thread per idle server, each waking twice a second to poll, would cost
more than serving the requests.

    python tests/support/farm.py --hosts 127.0.0.2,127.0.0.3 --per-host 50 [--posts 3]

prints one JSON line, {"blogs": [{"name", "host", "blog_url"}, ...]}, then reads one JSON
command a line on stdin and answers each with one JSON line on stdout:

    {"cmd": "add_post", "blog": NAME, "title": TITLE}   -> {"url": POST_URL}
    {"cmd": "requests"}     -> {"requests": {NAME: [[method, path, query, status, time, finished], ...]}}
    {"cmd": "check_times"}  -> {"check_times": {NAME: [time, ...]}}  (its listing's requests)
    {"cmd": "quit"}         -> {"ok": true}, and the farm stops (as it does when stdin closes)

An error is answered {"error": "..."}. Times are LoggedRequest's: time.time(), one clock for
every process on the machine. `Farm` is the client: a context manager around the process.
"""
from __future__ import annotations

import argparse
import json
import selectors
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from postwatch.testing.replica import BlogReplica, LoggedRequest, generate_posts

LISTING_PATH = "/blog"


def blog_name(host: str, index: int) -> str:
    """The source name of a host's index-th blog: blog-<last octet>-<index>."""
    return f"blog-{host.rsplit('.', 1)[-1]}-{index}"


# ---------------------------------------------------------------------------------------------
# The farm process
# ---------------------------------------------------------------------------------------------
class _Serving(threading.Thread):
    """One selector over every blog's listening socket; a readable one accepts its connection,
    which its server hands to a thread of its own (ThreadingHTTPServer), as serve_forever would."""

    def __init__(self, replicas: list[BlogReplica]):
        super().__init__(name="farm-selector", daemon=True)
        self.selector = selectors.DefaultSelector()
        for replica in replicas:
            server = replica.bind()
            server.timeout = 0      # handle_request() on a socket that turned out not ready returns
            self.selector.register(server, selectors.EVENT_READ, server)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.5):
                key.data.handle_request()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.selector.close()


def _request_row(r: LoggedRequest) -> list:
    return [r.method, r.path, r.query, r.status, r.time, r.finished]


def _answer(blogs: dict[str, BlogReplica], command: dict) -> dict:
    what = command.get("cmd")
    if what == "add_post":
        replica = blogs[command["blog"]]
        return {"url": replica.post_url(replica.add_post(command["title"]))}
    if what == "requests":
        return {"requests": {name: [_request_row(r) for r in _logged(replica)] for name, replica in blogs.items()}}
    if what == "check_times":
        return {"check_times": {name: [r.time for r in _logged(replica) if r.path == LISTING_PATH and not r.query]
                                for name, replica in blogs.items()}}
    raise ValueError(f"unknown command {what!r}")


def _logged(replica: BlogReplica) -> list[LoggedRequest]:
    with replica._lock:
        return list(replica.requests)


def serve(hosts: list[str], per_host: int, posts: int, out=sys.stdout, commands=sys.stdin) -> None:
    blogs = {blog_name(host, i): BlogReplica(generate_posts(posts), host=host) for host in hosts for i in range(per_host)}
    serving = _Serving(list(blogs.values()))
    serving.start()
    try:
        out.write(json.dumps({"blogs": [{"name": name, "host": r.host, "blog_url": r.blog_url}
                                        for name, r in blogs.items()]}) + "\n")
        out.flush()
        for line in commands:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                if command.get("cmd") == "quit":
                    out.write('{"ok": true}\n')
                    out.flush()
                    break
                answer = _answer(blogs, command)
            except Exception as exc:  # noqa: BLE001 - the client sees every failure as an answer
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        serving.stop()
        for replica in blogs.values():
            replica.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve many replica blogs on loopback hosts; JSON commands on stdin.")
    parser.add_argument("--hosts", required=True, help="comma-separated loopback addresses, e.g. 127.0.0.2,127.0.0.3")
    parser.add_argument("--per-host", type=int, required=True, help="blogs on each host, each on its own port")
    parser.add_argument("--posts", type=int, default=3, help="generated posts each blog starts with")
    args = parser.parse_args(argv)
    serve(args.hosts.split(","), args.per_host, args.posts)


# ---------------------------------------------------------------------------------------------
# The client, in the test or bench process
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FarmPost:
    url: str


class FarmBlog:
    """One blog of the farm, with the part of BlogReplica's interface the cluster trials use:
    blog_url, add_post(title), post_url(post), requests."""

    def __init__(self, farm: "Farm", name: str, host: str, blog_url: str):
        self.farm, self.name, self.host, self.blog_url = farm, name, host, blog_url

    def add_post(self, title: str) -> FarmPost:
        return FarmPost(self.farm.add_post(self.name, title))

    @staticmethod
    def post_url(post: FarmPost) -> str:
        return post.url

    @property
    def requests(self) -> list[LoggedRequest]:
        return self.farm.requests()[self.name]


class Farm:
    """`with Farm(hosts, per_host) as farm:` — farm.blogs (FarmBlog), farm.add_post(name, title),
    farm.requests(), farm.check_times(). Its stderr goes to `log` (or is dropped)."""

    def __init__(self, hosts: list[str], per_host: int, posts_per_blog: int = 3, log: Path | None = None,
                 startup_timeout: float = 120):
        self.hosts, self.per_host, self.posts_per_blog = list(hosts), per_host, posts_per_blog
        self.log, self.startup_timeout = log, startup_timeout
        self.process: subprocess.Popen | None = None
        self.blogs: list[FarmBlog] = []
        self._lock = threading.Lock()

    def start(self) -> "Farm":
        stderr = open(self.log, "w") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--hosts", ",".join(self.hosts),
                 "--per-host", str(self.per_host), "--posts", str(self.posts_per_blog)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
        finally:
            if self.log:
                stderr.close()
        first = self._read_line(self.startup_timeout)
        self.blogs = [FarmBlog(self, b["name"], b["host"], b["blog_url"]) for b in first["blogs"]]
        return self

    def _read_line(self, timeout: float) -> dict:
        # A reader thread, so that a farm that hangs or dies fails the caller instead of blocking it.
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            detail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
            raise RuntimeError(f"the replica farm did not answer within {timeout:.0f}s "
                               f"(exit status {self.process.poll()}){': ' + detail if detail else ''}")
        return json.loads(box[0])

    def ask(self, cmd: str, timeout: float = 60, **args) -> dict:
        with self._lock:
            self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.process.stdin.flush()
            answer = self._read_line(timeout)
        if "error" in answer:
            raise RuntimeError(f"replica farm, {cmd}: {answer['error']}")
        return answer

    def add_post(self, blog: str, title: str) -> str:
        """The new post's URL."""
        return self.ask("add_post", blog=blog, title=title)["url"]

    def requests(self) -> dict[str, list[LoggedRequest]]:
        """Every blog's request log, by blog name."""
        logs = self.ask("requests")["requests"]
        return {name: [LoggedRequest(method, path, query, {}, status, 0, at, finished)
                       for method, path, query, status, at, finished in rows] for name, rows in logs.items()}

    def check_times(self) -> dict[str, list[float]]:
        """When each check of each blog began (its listing's requests), by blog name."""
        return {name: sorted(times) for name, times in self.ask("check_times")["check_times"].items()}

    def close(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.ask("quit", timeout=30)
            self.process.wait(timeout=30)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "Farm":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    main()
