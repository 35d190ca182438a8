"""Downloader middlewares: robots.txt for every request, retries that back off and honour
Retry-After, conditional requests, and counting what a check cost the site.

They know nothing of the spider: what a request needs comes in its `meta` (`source`, the name
of the source it belongs to; `conditional` and `validators` for a conditional GET), counts go
to `crawler.stats` and what the report needs goes out as signals (crawler.signals)."""
from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone

from protego import Protego
from scrapy import signals as scrapy_signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Headers, Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.signalmanager import SignalManager
from scrapy.responsetypes import responsetypes
from scrapy.statscollectors import StatsCollector
from scrapy.utils.httpobj import urlparse_cached

from crawler import signals
from crawler.gate import GATE, gate_settings, host_hold, retry_after_seconds
from crawler.signals import source_stat
from crawler.plan import CachedRobotsTxt, Prefetched
from state.records import Exchange

log = logging.getLogger(__name__)


class ForbiddenByRobots(IgnoreRequest):
    """The site's robots.txt disallows this URL for our User-Agent."""


class RobotsUnavailable(IgnoreRequest):
    """robots.txt answered 5xx or could not be fetched: RFC 9309 says assume complete disallow."""


class RobotsTxtGateMiddleware:
    """Every request waits for its host's robots.txt, then is checked against it.

    Scrapy's RobotsTxtMiddleware (2.14-2.19) lets requests that were scheduled before robots.txt
    arrived through (the shared Deferred's result is consumed by the first waiter). Here each
    waiter awaits its own `asyncio.Event.wait()`. robots.txt is cached in the state database and
    handed in as the `POSTWATCH_ROBOTS_CACHE` setting, so a check within ROBOTS_TTL costs no
    robots.txt request at all; what is fetched goes out as `signals.robots_txt_fetched`.
    """

    def __init__(self, crawler: Crawler):
        if not crawler.settings.getbool("POSTWATCH_OBEY_ROBOTS", True):
            raise NotConfigured
        self.crawler = crawler
        self.cache: dict[str, CachedRobotsTxt] = crawler.settings.get("POSTWATCH_ROBOTS_CACHE") or {}
        self.ttl = crawler.settings.getfloat("ROBOTS_TTL", 86400)
        self.user_agent = crawler.settings.get("USER_AGENT", "postwatch")
        self._parsers: dict[str, Protego | Exception | None] = {}
        self._ready: dict[str, asyncio.Event] = {}

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def process_request(self, request: Request):
        if request.meta.get("dont_obey_robotstxt") or not request.url.startswith("http"):
            return None
        parsed = urlparse_cached(request)
        origin = f"{parsed.scheme}://{parsed.netloc}"
        rules = await self._rules_for(origin, request)
        if isinstance(rules, Exception):
            self.crawler.stats.inc_value("robotstxt/unavailable")
            raise RobotsUnavailable(f"{origin} {rules}" if str(rules).startswith("could not") else
                                    f"robots.txt of {origin} answered {rules}, so nothing may be fetched (RFC 9309)")
        if rules is not None and not rules.can_fetch(request.url, self._agent_token()):
            self.crawler.stats.inc_value("robotstxt/forbidden")
            raise ForbiddenByRobots(f"{request.url} is disallowed by robots.txt")
        return None

    def _agent_token(self) -> str:
        return self.user_agent.split("/")[0].split()[0] or "postwatch"

    async def _rules_for(self, origin: str, request: Request):
        if origin in self._parsers:
            return self._parsers[origin]
        event = self._ready.get(origin)
        if event is not None:
            await event.wait()
            return self._parsers[origin]
        event = self._ready[origin] = asyncio.Event()
        try:
            self._parsers[origin] = await self._load(origin, request)
        except Exception as exc:  # never leave waiters hanging
            self._parsers[origin] = exc
        finally:
            event.set()
        return self._parsers[origin]

    async def _load(self, origin: str, first: Request):
        """The rules of `origin`, fetched for `first` (the request that met the origin first,
        whose source the robots.txt request belongs to)."""
        cached = self.cache.get(origin)
        now = datetime.now(timezone.utc)
        if cached and (now - cached.fetched_at).total_seconds() < self.ttl:
            return _parse_robots(cached.body)
        source = first.meta.get("source")
        request = Request(f"{origin}/robots.txt", callback=NO_CALLBACK, priority=1000, dont_filter=True,
                          meta={"dont_obey_robotstxt": True, "handle_httpstatus_all": True, "dont_redirect": False,
                                "max_retry_times": 1, "conditional": bool(cached),
                                "validators": cached.validators if cached else None,
                                "source": source, "source_url": first.meta.get("source_url")})
        self.crawler.stats.inc_value("robotstxt/request_count")
        try:
            response = await self.crawler.engine.download_async(request)
        except IgnoreRequest as exc:   # e.g. a redirect to an address postwatch does not fetch
            return RuntimeError(f"could not be reached: {exc}")
        except Exception as exc:
            return RuntimeError(f"could not be reached: {short_reason(exc)}")
        if response.status == 304 and cached:
            body = cached.body
        elif 200 <= response.status < 300:
            body = response.body
        elif 400 <= response.status < 500:
            body = b""      # no robots.txt: everything allowed
        else:
            return RuntimeError(f"HTTP {response.status}")
        self.crawler.signals.send_catch_log(signals.robots_txt_fetched, source=source, origin=origin, body=body,
                                            fetched_at=now)
        return _parse_robots(body)


def short_reason(exc: BaseException) -> str:
    """A network failure in a few words."""
    name = type(exc).__name__.lower()
    text = str(exc).lower()
    if "refused" in name or "refused" in text:
        return "connection refused"
    if "dns" in name or "dns" in text:
        return "DNS lookup failed"
    if "timeout" in name or "timed out" in text or "took longer" in text:
        return "timed out"
    if "reset" in text or "connectionlost" in name or "connection was closed" in text:
        return "connection reset"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:160]}".rstrip(": ")


def _parse_robots(body: bytes):
    if not body:
        return None
    return Protego.parse(body.decode("utf-8", "replace"))


class PoliteRetryMiddleware(RetryMiddleware):
    """Scrapy's retry, but it waits first: exponential backoff with jitter on 5xx and timeouts,
    and the server's Retry-After on 429/503 (Scrapy itself retries those after ~50 ms). A
    Retry-After beyond RETRY_AFTER_MAX means "not this check": the request gives up at once."""

    def __init__(self, settings):
        super().__init__(settings)
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX", 30.0)
        self.retry_after_max = settings.getfloat("RETRY_AFTER_MAX", 300.0)

    async def process_response(self, request: Request, response: Response):
        if request.meta.get("dont_retry") or response.status not in self.retry_http_codes:
            return response
        wait = None
        if response.status in (429, 503):
            wait = retry_after_seconds(response.headers.get(b"Retry-After"))
            if wait is not None and wait > self.retry_after_max:
                self.crawler.stats.inc_value("retry/retry_after_too_long")
                request.meta["retry_after_refused"] = wait
                return response
        retry = self._retry(request, f"HTTP {response.status}")
        if retry is None:
            return response
        await self._sleep(wait if wait is not None else self._backoff(request))
        return retry

    async def process_exception(self, request: Request, exception: Exception):
        retry = super().process_exception(request, exception)
        if isinstance(retry, Request):
            await self._sleep(self._backoff(request))
        return retry

    def _backoff(self, request: Request) -> float:
        attempt = request.meta.get("retry_times", 0)
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return delay * random.uniform(0.8, 1.2)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.crawler.stats.inc_value("retry/waited_seconds", int(seconds))
            await asyncio.sleep(seconds)


class ConditionalRequestMiddleware:
    """If-None-Match / If-Modified-Since from the validators the request carries (`meta
    ["validators"]`, kept in the state database), and the new validators of every 200 answer
    sent out as `signals.validators_received`, keyed by the post's canonical URL (`meta
    ["validator_key"]`) or the URL first asked for, so a redirected or variant URL is
    revalidated next time. Only requests with `meta["conditional"]` take part."""

    def __init__(self, signal_manager: SignalManager):
        self.signals = signal_manager

    @classmethod
    def from_crawler(cls, crawler: Crawler):
        return cls(crawler.signals)

    def process_request(self, request: Request):
        if not request.meta.get("conditional"):
            return None
        etag, last_modified = request.meta.get("validators") or (None, None)
        if etag and b"If-None-Match" not in request.headers:
            request.headers[b"If-None-Match"] = etag
        if last_modified and b"If-Modified-Since" not in request.headers:
            request.headers[b"If-Modified-Since"] = last_modified
        return None

    def process_response(self, request: Request, response: Response):
        if request.meta.get("conditional") and response.status == 200:
            etag = response.headers.get(b"ETag")
            last_modified = response.headers.get(b"Last-Modified")
            if etag or last_modified:
                key = request.meta.get("validator_key") or (request.meta.get("redirect_urls") or [request.url])[0]
                validators = (etag.decode("latin-1") if etag else None,
                              last_modified.decode("latin-1") if last_modified else None)
                self.signals.send_catch_log(signals.validators_received, source=request.meta.get("source"),
                                            url=key, validators=validators)
        return response


class ExchangeCounterMiddleware:
    """What the watched site served each source: requests, body bytes on the wire and 304s, as
    `source/<name>/request_count`, `.../response_bytes` and `.../status_count/304` in
    crawler.stats (Scrapy's DownloaderStats counts the same for the whole crawl); and each
    exchange (URL, status, bytes; or the error of a request without an answer) as the signal
    exchange_done, for the console's view of the last check."""

    def __init__(self, stats: StatsCollector, signal_manager: SignalManager):
        self.stats, self.signals = stats, signal_manager

    @classmethod
    def from_crawler(cls, crawler: Crawler):
        return cls(crawler.stats, crawler.signals)

    def process_request(self, request: Request):
        source = request.meta.get("source")
        if source is not None:
            self.stats.inc_value(source_stat(source, "request_count"))
        return None

    def process_response(self, request: Request, response: Response):
        source = request.meta.get("source")
        if source is not None:
            self.stats.inc_value(source_stat(source, "response_bytes"), len(response.body))
            if response.status == 304:
                self.stats.inc_value(source_stat(source, "status_count/304"))
            self.signals.send_catch_log(signals.exchange_done, source=source,
                                        exchange=Exchange(response.url, response.status, len(response.body)))
        return response

    def process_exception(self, request: Request, exception: Exception):
        source = request.meta.get("source")
        if source is not None:
            error = " ".join(f"{type(exception).__name__}: {exception}".split())[:200]
            self.signals.send_catch_log(signals.exchange_done, source=source, exchange=Exchange(request.url, None, 0, error))
        return None


class HostGateMiddleware:
    """Every download waits at the process's one gate for its host (crawler.gate): per-host
    delay, concurrency and Retry-After hold across every crawl and the lean revalidation client
    of the process, not only inside this crawler's slots. Placed last before the download, so
    that its wait is the one right before the request leaves (a retry's new request passes the
    gate again). The place is given back when the request leaves the downloader, which Scrapy
    signals for every request, answered, failed or cancelled: a place never given back would
    stop every later request to that host."""

    def __init__(self, crawler: Crawler):
        self.retry_after_max = crawler.settings.getfloat("RETRY_AFTER_MAX", 300.0)
        GATE.configure(gate_settings(crawler.settings))
        crawler.signals.connect(self.request_left_downloader, signal=scrapy_signals.request_left_downloader)

    @classmethod
    def from_crawler(cls, crawler: Crawler):
        return cls(crawler)

    async def process_request(self, request: Request):
        host = urlparse_cached(request).hostname
        if host:
            await GATE.acquire(host)
            request.meta["gate_host"] = host
        return None

    def request_left_downloader(self, request: Request) -> None:
        self._give_back(request)

    def process_response(self, request: Request, response: Response):
        self._give_back(request)
        host = urlparse_cached(request).hostname
        hold = host_hold(response.status, response.headers.get(b"Retry-After"), self.retry_after_max)
        if host and hold:
            GATE.hold(host, hold)
        return response

    def process_exception(self, request: Request, exception: Exception):
        self._give_back(request)
        return None

    @staticmethod
    def _give_back(request: Request) -> None:
        host = request.meta.pop("gate_host", None)     # once per acquire, whichever comes first
        if host:
            GATE.release(host)


class PrefetchedResponseMiddleware:
    """A request whose answer the lean revalidation client already holds (`meta["prefetched"]`,
    a crawler.plan.Prefetched) is answered with it: the site is asked once per URL and check.
    The answer then passes every middleware's process_response as a downloaded one would:
    decompression, redirects, retries (a prefetched 503 is retried by a real download)."""

    def process_request(self, request: Request):
        prefetched: Prefetched | None = request.meta.pop("prefetched", None)
        if prefetched is None or prefetched.url != request.url:
            return None
        headers = Headers(list(prefetched.headers))
        cls = responsetypes.from_args(headers=headers, url=prefetched.url, body=prefetched.body)
        return cls(url=prefetched.url, status=prefetched.status, headers=headers, body=prefetched.body,
                   request=request)
