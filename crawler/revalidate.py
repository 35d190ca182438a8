"""Revalidation: the first conditional GETs of a check, asked without Scrapy.

Most checks of a watched blog end with its first answer: 304 Not Modified for the listing (or
the feed, and then the listing). Building a Scrapy crawler, its middlewares and its engine for
that one exchange costs far more than the exchange (issue #15: 17-23 ms of CPU per source, and
0.6 s of imports for a one-shot `check`). So a sweep first asks each source's first URLs here,
with the standard library's HTTP client in a small thread pool, under the same rules the crawl
follows:

- the process's per-host gate (crawler.gate): delay, concurrency, Retry-After;
- robots.txt: only with a stored copy younger than ROBOTS_TTL that allows the URL (otherwise
  the crawl fetches robots.txt, once per origin and sweep);
- public addresses only (crawler.address_policy), connecting to the very address approved;
- the crawl's User-Agent, Accept headers and validators; no proxy (a machine behind one leaves
  everything to Scrapy's HttpProxyMiddleware).

A source whose URLs all answer 304 is settled: its check is over, Scrapy is never loaded for
it. Every other answer (a 200, a redirect, a 5xx) is handed to the crawl as it came
(crawler.plan.Prefetched), so nothing is fetched twice: N new posts still cost 1 + N requests.
A source that cannot be asked here (first check, a sweep, an edit to confirm, no validators,
robots.txt to fetch, a network error) goes to the crawl, which asks itself.

Every exchange has a total deadline, DOWNLOAD_TIMEOUT ([crawl] timeout) from its first step:
connect, status line, headers and body together (a socket timeout alone bounds each read, and a
site that drips a byte a second never trips it). An exchange that runs out is cut (its socket shut
down) and its source's check fails (`Revalidation.timed_out`); the host's other sources of the
sweep are left to the crawl, whose DOWNLOAD_TIMEOUT is a total timeout too. So a slow host holds a
sweep one deadline at most. The worker threads are daemon threads: a stop never waits for them.
"""
from __future__ import annotations

import functools
import http.client
import socket
import ssl
import sys
import threading
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from crawler.address_policy import DEFAULT_PORTS, address_kind, is_ip_literal, origin, refusal
from crawler.gate import GATE, gate_settings, host_hold
from crawler.plan import CrawlPlan, CrawlReport, Prefetched, feed_resting, kind_traits, sitemap_of
from state.records import Exchange

ACCEPT_ENCODING = "gzip, deflate, br"     # what Scrapy's HttpCompressionMiddleware decodes here


class CannotRevalidate(Exception):
    """This URL is for the crawl to ask (a reason in a few words)."""


class DeadlineExceeded(CannotRevalidate):
    """No complete answer within the exchange's deadline: the site is too slow for this check."""


@dataclass
class Revalidation:
    """What the lean client learnt of one source."""
    source: str
    answers: dict[str, Prefetched] = field(default_factory=dict)
    settled: bool = False           # every first URL answered 304: the check is over
    attempts: int = 0               # requests sent, answered or not
    reason: str | None = None       # why the crawl must take over, when it must
    timed_out: bool = False         # an exchange ran out of its deadline: the check failed (`reason` says how)
    listing_url: str | None = None  # the source's listing: whether it was among the 304s
    urls: list[str] = field(default_factory=list)     # the first URLs it was to ask, in order
    timed_out_url: str | None = None    # the URL whose exchange ran out of its deadline

    @property
    def listing_read(self) -> bool:
        """The listing answered (a settled check's listing said it had not changed)."""
        return self.listing_url is not None and self.listing_url in self.answers

    def settled_report(self) -> CrawlReport:
        """The report of a check that ended with its 304s."""
        return CrawlReport(source_name=self.source, not_modified=True, requests=self.attempts,
                           response_bytes=sum(len(a.body) for a in self.answers.values()),
                           not_modified_count=len(self.answers), listing_read=self.listing_read,
                           exchanges=[Exchange(a.url, a.status, len(a.body)) for a in self.answers.values()])

    def timed_out_report(self) -> CrawlReport:
        """The report of a check that failed when an exchange ran out of its deadline: its 304s
        before that, and the request that got no answer."""
        exchanges = [Exchange(a.url, a.status, len(a.body)) for a in self.answers.values()]
        if self.timed_out_url:
            exchanges.append(Exchange(self.timed_out_url, None, 0, self.reason))
        return CrawlReport(source_name=self.source, ok=False, error=f"{self.source}: {self.reason}",
                           requests=self.attempts, response_bytes=sum(len(a.body) for a in self.answers.values()),
                           not_modified_count=len(self.answers), exchanges=exchanges)

    @property
    def unanswered(self) -> int:
        """Requests the site may have seen that gave the crawl no answer to reuse (timeouts)."""
        return self.attempts - len(self.answers)


def first_urls(plan: CrawlPlan) -> list[str]:
    """The URLs a normal check of `plan`'s source starts with, in order, each asked only when the
    one before it answered 304: the feed and then the listing, or the feed alone for a kind
    whose feed is the source (or an "auto" source between two reads of its listing,
    `plan.feed_alone`), or the listing; the listing alone while a failed feed of a kind that reads
    its listing too waits for its retry (crawler.plan.feed_resting); then the source's sitemap
    (crawler.plan.sitemap_of) when validators are kept for it. Empty when the check is not a
    normal one."""
    if plan.baseline or plan.sweep_urls or plan.recheck_urls or plan.recheck_feed:
        return []
    source = plan.source
    sitemap = sitemap_of(plan)
    # Last, the sitemap whose <lastmod>s are a change signal, when it can be asked conditionally:
    # a 304 leaves the check settled; without validators it is asked by the crawl when it runs.
    last = [sitemap] if sitemap and any(plan.validators.get(sitemap) or ()) else []
    if not source.feed_url:
        return [source.url] + last
    traits = kind_traits(source.kind)
    if traits is None:
        return []                    # the crawl reports it
    if not traits[1] and feed_resting(plan.validators, source.feed_url, datetime.now(timezone.utc)):
        return [source.url] + last
    return ([source.feed_url] if traits[1] or plan.feed_alone else [source.feed_url, source.url]) + last


class _Client:
    """Blocking HTTP/1.1 exchanges, one per call, on kept-alive connections."""

    def __init__(self, settings: Mapping):
        self.timeout = float(settings.get("DOWNLOAD_TIMEOUT", 30))
        self.maxsize = int(settings.get("DOWNLOAD_MAXSIZE", 5 * 1024 * 1024))
        self.public_only = bool(settings.get("POSTWATCH_PUBLIC_ONLY", True))
        self.headers = {"User-Agent": str(settings.get("USER_AGENT", "postwatch")),
                        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                        "Accept-Language": "en", "Accept-Encoding": ACCEPT_ENCODING}
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._active: dict[http.client.HTTPConnection, float] = {}     # connection in use -> its deadline
        self._lock = threading.Lock()

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """Made at the first https exchange: loading the CA certificates costs 25 ms."""
        return ssl.create_default_context()

    def addresses(self, url: str, source_url: str) -> list[str]:
        """The addresses `url` may be fetched on (the first is used), or CannotRevalidate."""
        scheme, host, port = origin(url)
        if scheme not in DEFAULT_PORTS or not host:
            raise CannotRevalidate("not an http(s) URL")
        found = _resolve(host, port)
        if self.public_only:
            _, source_host, source_port = origin(source_url)
            source_addresses = found if (source_host, source_port) == (host, port) else _resolve(source_host, source_port)
            private_origin = source_url if any(address_kind(a) for a in source_addresses) else None
            if refusal(url, found, private_origin):
                raise CannotRevalidate("address not allowed")
        if not found:
            raise CannotRevalidate("no address")
        return found

    def get(self, url: str, address: str, validators) -> Prefetched:
        """One exchange, all of it (connect, status, headers, body) within DOWNLOAD_TIMEOUT, or
        DeadlineExceeded."""
        deadline = time.monotonic() + self.timeout
        parts = urlsplit(url)
        scheme, host, port = origin(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = dict(self.headers)
        headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        etag, last_modified = validators or (None, None)
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        key = (scheme, host, port, address)
        for attempt in (0, 1):
            connection, reused = self._connection(key)
            with self._lock:
                self._active[connection] = deadline
            try:
                connection.timeout = self._remaining(deadline)      # connect
                if connection.sock is not None:
                    connection.sock.settimeout(connection.timeout)
                connection.request("GET", target, headers=headers)
                connection.sock.settimeout(self._remaining(deadline))
                response = connection.getresponse()
                body = self._read_body(connection, response, deadline)
            except DeadlineExceeded:
                connection.close()
                raise
            except TimeoutError:        # every socket wait is given only what is left of the deadline
                connection.close()
                raise DeadlineExceeded(f"no complete answer within {self.timeout:g}s") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                connection.close()
                self._remaining(deadline)       # cut at the deadline (abort_overdue): no second try
                if reused and attempt == 0:
                    continue            # a kept-alive connection the server had closed: once more, fresh
                raise CannotRevalidate(type(exc).__name__) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                self._remaining(deadline)
                raise CannotRevalidate(type(exc).__name__) from None
            finally:
                with self._lock:
                    self._active.pop(connection, None)
            if len(body) > self.maxsize:
                connection.close()
                raise CannotRevalidate("larger than DOWNLOAD_MAXSIZE")
            if response.will_close:
                connection.close()
            else:
                with self._lock:
                    self._idle.setdefault(key, []).append(connection)
            return Prefetched(url=url, status=response.status, headers=tuple(response.getheaders()), body=body)
        raise CannotRevalidate("connection closed")

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no complete answer within {self.timeout:g}s")
        return left

    def _read_body(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                   deadline: float) -> bytes:
        """The body, a chunk at a time, each read given only what is left of the deadline."""
        chunks, size = [], 0
        while size <= self.maxsize:
            connection.sock.settimeout(self._remaining(deadline))
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        self._remaining(deadline)       # a read that ended because abort_overdue cut the socket
        if response.length:             # the server closed before its Content-Length
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        response.close()                # read in full: the connection may carry the next request
        return b"".join(chunks)

    def abort_overdue(self) -> float | None:
        """Shut down the sockets of exchanges past their deadline (a blocked read then returns at
        once: a site dripping its headers is cut too); the next deadline to watch, if any."""
        now = time.monotonic()
        with self._lock:
            overdue = [c for c, deadline in self._active.items() if deadline <= now]
            upcoming = [deadline for deadline in self._active.values() if deadline > now]
        for connection in overdue:
            _shut(connection)
        return min(upcoming) if upcoming else None

    def abort_all(self) -> None:
        """A stop: every exchange under way is cut."""
        with self._lock:
            active = list(self._active)
        for connection in active:
            _shut(connection)

    def _connection(self, key: tuple) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, host, port, address = key
        if scheme == "https":
            return _PinnedHTTPSConnection(host, address, port, self.timeout, self._tls), False
        return http.client.HTTPConnection(address, port, timeout=self.timeout), False

    def close(self) -> None:
        with self._lock:
            for connections in self._idle.values():
                for connection in connections:
                    connection.close()
            self._idle.clear()


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the approved address, with the host's name for SNI and the certificate check."""

    def __init__(self, host: str, address: str, port: int, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _behind_proxy() -> bool:
    """Whether a proxy is configured (urllib's rule; its module, 10 ms of imports, is loaded only
    when the environment names a proxy at all or the platform keeps them elsewhere)."""
    if os.name == "posix" and sys.platform != "darwin" and not any(
            key.lower().endswith("_proxy") for key in os.environ):
        return False
    import urllib.request

    return bool(urllib.request.getproxies())


def _resolve(host: str, port: int | None) -> list[str]:
    if is_ip_literal(host):
        return [host.split("%", 1)[0]]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise CannotRevalidate("DNS lookup failed") from None
    found: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in found:
            found.append(sockaddr[0])
    return found


def _robots_allow(plan: CrawlPlan, url: str, settings: Mapping, now: datetime) -> bool:
    """Whether the stored robots.txt of `url`'s origin is fresh and lets us fetch it."""
    parts = urlsplit(url)
    stored = plan.robots.get(f"{parts.scheme}://{parts.netloc}")
    if stored is None:
        return False
    body, fetched_at = stored
    if (now - fetched_at).total_seconds() >= float(settings.get("ROBOTS_TTL", 86400)):
        return False
    if not body:
        return True
    agent = str(settings.get("USER_AGENT", "postwatch")).split("/")[0].split()[0] or "postwatch"
    return _robots_rules(body).can_fetch(url, agent)


@functools.lru_cache(maxsize=4096)
def _robots_rules(body: bytes):
    """A stored robots.txt parsed once per process, not at every sweep of every source on it."""
    from protego import Protego

    return Protego.parse(body.decode("utf-8", "replace"))


def _exchange(client: _Client, plan: CrawlPlan, urls: list[str], result: Revalidation, retry_after_max: float) -> None:
    """Ask `urls` in turn (in a worker thread), each only after a 304 for the one before."""
    for url in urls:
        try:
            addresses = client.addresses(url, plan.source.url)
        except CannotRevalidate as exc:
            result.reason = str(exc)
            return
        host = origin(url)[1]
        GATE.acquire_blocking(host)
        result.attempts += 1
        try:
            answer = client.get(url, addresses[0], plan.validators.get(url))
        except DeadlineExceeded as exc:
            result.reason, result.timed_out = f"{url}: {exc} ([crawl] timeout)", True
            result.timed_out_url = url
            return
        except CannotRevalidate as exc:
            result.reason = str(exc)
            return
        finally:                # whatever happened, the host's place is given back
            GATE.release(host)
        headers = {name.lower(): value for name, value in answer.headers}
        hold = host_hold(answer.status, headers.get("retry-after"), retry_after_max)
        if hold:
            GATE.hold(host, hold)
        result.answers[url] = answer
        if answer.status != 304:
            result.reason = f"HTTP {answer.status}"
            return
    result.settled = True


class Revalidator:
    """The lean client of a process: its connections outlive one sweep (the daemon's next sweep
    reuses them)."""

    def __init__(self, workers: int = 8):
        self.workers = max(1, workers)
        self._client: _Client | None = None
        self._settings_key: tuple | None = None
        self._adopted: dict[str, Revalidation] = {}

    def adopt(self, results: Mapping[str, Revalidation]) -> None:
        """What a caller of this process already asked of these sources (the one-shot check's
        quick pass, postwatch.oneshot): the next `revalidate` hands each back, once, for a plan
        with the same first URLs, instead of asking the site again."""
        self._adopted.update({name: result for name, result in results.items() if result.attempts})

    async def revalidate(self, plans: list[CrawlPlan], settings: Mapping) -> dict[str, Revalidation]:
        """Ask the first URLs of every plan that a lean request can settle; one Revalidation per
        plan's source (with `reason` set for those left to the crawl).

        The exchanges run in worker threads, one host's sources after another in one thread
        (a host with twenty sources then holds one thread, not all of them, while it waits out its
        delay), and the loop is woken when all are done, or when an exchange's deadline passes
        (to cut it): handing each exchange back and forth through the loop cost more than the
        exchanges themselves."""
        results, hosts, retry_after_max = self._prepare(plans, settings)
        if hosts:
            await self._run(self._client, hosts, results, retry_after_max)
        return results

    def revalidate_blocking(self, plans: list[CrawlPlan], settings: Mapping) -> dict[str, Revalidation]:
        """`revalidate` for a caller without an event loop (the one-shot check, which then needs
        no asyncio): the same exchanges in the same worker threads, waited for in this one."""
        results, hosts, retry_after_max = self._prepare(plans, settings)
        if not hosts:
            return results
        client = self._client
        done = threading.Event()
        state = self._start(client, hosts, results, retry_after_max, done.set)
        try:
            while not done.is_set():
                watch = client.abort_overdue()
                timeout = None if watch is None else max(0.05, watch - time.monotonic() + 0.05)
                done.wait(min(timeout or 1.0, 1.0))
        except BaseException:       # Ctrl-C: every exchange under way is cut
            state["stop"] = True
            client.abort_all()
            raise
        return results

    def _prepare(self, plans: list[CrawlPlan], settings: Mapping):
        """(a Revalidation per plan's source, the exchanges to make grouped by host, Retry-After
        limit): the client for `settings`, and the plans the lean client may start."""
        key = tuple(sorted((k, str(v)) for k, v in settings.items()))
        if self._client is None or key != self._settings_key:
            if self._client is not None:
                self._client.close()
            self._client, self._settings_key = _Client(settings), key
        GATE.configure(gate_settings(settings))
        now = datetime.now(timezone.utc)
        behind_proxy = _behind_proxy()
        results: dict[str, Revalidation] = {}
        by_host: dict[str, list[tuple[CrawlPlan, list[str]]]] = {}
        for plan in plans:
            urls = first_urls(plan)
            adopted = self._adopted.pop(plan.source.name, None)
            if adopted is not None and urls and adopted.urls == urls:
                results[plan.source.name] = adopted
                continue
            result = results[plan.source.name] = Revalidation(source=plan.source.name, listing_url=plan.source.url,
                                                              urls=urls)
            result.reason = self._left_to_the_crawl(plan, urls, settings, now, behind_proxy)
            if result.reason is None:
                by_host.setdefault(origin(urls[0])[1], []).append((plan, urls))
        return results, list(by_host.values()), float(settings.get("RETRY_AFTER_MAX", 300))

    async def _run(self, client: _Client, hosts: list[list[tuple[CrawlPlan, list[str]]]],
                   results: dict[str, Revalidation], retry_after_max: float) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        state = self._start(client, hosts, results, retry_after_max, lambda: loop.call_soon_threadsafe(finished))
        try:
            while not done.done():
                watch = client.abort_overdue()
                timeout = None if watch is None else max(0.05, watch - time.monotonic() + 0.05)
                await asyncio.wait([done], timeout=min(timeout or 1.0, 1.0))
        except asyncio.CancelledError:
            state["stop"] = True
            client.abort_all()
            raise

    def _start(self, client: _Client, hosts: list[list[tuple[CrawlPlan, list[str]]]],
               results: dict[str, Revalidation], retry_after_max: float, all_done) -> dict:
        """The worker threads, started; `all_done()` is called (from one of them) when the last
        host's exchanges are over. The returned state's "stop" tells them to start no more."""
        lock = threading.Lock()
        state = {"next": 0, "left": len(hosts), "stop": False}

        def worker() -> None:
            while True:
                with lock:
                    if state["stop"] or state["next"] >= len(hosts):
                        return
                    work = hosts[state["next"]]
                    state["next"] += 1
                try:
                    for plan, urls in work:
                        result = results[plan.source.name]
                        if state["stop"]:
                            result.reason = "stopping"
                        elif any(r.timed_out for r in (results[p.source.name] for p, _ in work)):
                            result.reason = "its host ran out of time for another source"
                        else:
                            _exchange(client, plan, urls, result, retry_after_max)
                finally:
                    with lock:
                        state["left"] -= 1
                        last = state["left"] == 0
                    if last:
                        all_done()

        # Daemon threads: a process told to stop exits without joining them (an exchange cut by
        # abort_all returns at once anyway).
        for n in range(min(self.workers, len(hosts))):
            threading.Thread(target=worker, name=f"revalidate-{n}", daemon=True).start()
        return state

    @staticmethod
    def _left_to_the_crawl(plan: CrawlPlan, urls: list[str], settings: Mapping, now: datetime,
                           behind_proxy: bool) -> str | None:
        """Why the crawl must check this source itself (None: the lean client may start it)."""
        if not urls:
            return "not a normal check"
        if behind_proxy:
            return "a proxy is configured"
        if not all(any(plan.validators.get(url) or ()) for url in urls):
            return "no validators"
        if not all(_robots_allow(plan, url, settings, now) for url in urls):
            return "robots.txt to fetch or obey"
        return None


_revalidator: Revalidator | None = None
_revalidator_lock = threading.Lock()


def revalidator(workers: int = 8) -> Revalidator:
    """The process's lean client (created on first use, with `workers` threads)."""
    global _revalidator
    with _revalidator_lock:
        if _revalidator is None:
            _revalidator = Revalidator(workers)
        return _revalidator

