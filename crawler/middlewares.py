"""Downloader middlewares: robots.txt for every request, retries that back off and honour
Retry-After, conditional requests, and counting what a check cost the site."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from protego import Protego
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.httpobj import urlparse_cached

log = logging.getLogger(__name__)


class CrawlerBound:
    """A component that only needs the crawler (and through it the spider's plan and report)."""

    def __init__(self, crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)


class ForbiddenByRobots(IgnoreRequest):
    """The site's robots.txt disallows this URL for our User-Agent."""


class RobotsUnavailable(IgnoreRequest):
    """robots.txt answered 5xx or could not be fetched: RFC 9309 says assume complete disallow."""


class RobotsTxtGateMiddleware:
    """Every request waits for its host's robots.txt, then is checked against it.

    Scrapy's RobotsTxtMiddleware (2.14-2.19) lets requests that were scheduled before robots.txt
    arrived through (the shared Deferred's result is consumed by the first waiter). Here each
    waiter awaits its own `asyncio.Event.wait()`. robots.txt is cached in the state database via
    the crawl plan, so a check within ROBOTS_TTL costs no robots.txt request at all.
    """

    def __init__(self, crawler):
        if not crawler.settings.getbool("POSTWATCH_OBEY_ROBOTS", True):
            raise NotConfigured
        self.crawler = crawler
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
        rules = await self._rules_for(origin)
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

    async def _rules_for(self, origin: str):
        if origin in self._parsers:
            return self._parsers[origin]
        event = self._ready.get(origin)
        if event is not None:
            await event.wait()
            return self._parsers[origin]
        event = self._ready[origin] = asyncio.Event()
        try:
            self._parsers[origin] = await self._load(origin)
        except Exception as exc:  # never leave waiters hanging
            self._parsers[origin] = exc
        finally:
            event.set()
        return self._parsers[origin]

    async def _load(self, origin: str):
        spider = self.crawler.spider
        cached = spider.plan.robots.get(origin)
        now = datetime.now(timezone.utc)
        if cached and (now - cached[1]).total_seconds() < self.ttl:
            return _parse_robots(cached[0])
        request = Request(f"{origin}/robots.txt", callback=NO_CALLBACK, priority=1000, dont_filter=True,
                          meta={"dont_obey_robotstxt": True, "handle_httpstatus_all": True, "conditional": bool(cached),
                                "dont_redirect": False, "max_retry_times": 1})
        self.crawler.stats.inc_value("robotstxt/request_count")
        try:
            response = await self.crawler.engine.download_async(request)
        except IgnoreRequest as exc:   # e.g. a redirect to an address postwatch does not fetch
            return RuntimeError(f"could not be reached: {exc}")
        except Exception as exc:
            return RuntimeError(f"could not be reached: {short_reason(exc)}")
        if response.status == 304 and cached:
            spider.report.robots[origin] = (cached[0], now)
            return _parse_robots(cached[0])
        if 200 <= response.status < 300:
            spider.report.robots[origin] = (response.body, now)
            return _parse_robots(response.body)
        if 400 <= response.status < 500:
            spider.report.robots[origin] = (b"", now)   # no robots.txt: everything allowed
            return None
        return RuntimeError(f"HTTP {response.status}")


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


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


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


class ConditionalRequestMiddleware(CrawlerBound):
    """If-None-Match / If-Modified-Since from validators kept in the state database, and the
    new validators of every 200 answer back into the crawl report, keyed by the post's canonical
    URL (or the URL first asked for), so a redirected or variant URL is revalidated next time."""

    def process_request(self, request: Request):
        if not request.meta.get("conditional"):
            return None
        key = request.meta.get("validator_key", request.url)
        etag, last_modified = self.crawler.spider.plan.validators.get(key, (None, None))
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
                self.crawler.spider.report.validators[key] = (
                    etag.decode("latin-1") if etag else None,
                    last_modified.decode("latin-1") if last_modified else None,
                )
        return response


class ExchangeCounterMiddleware(CrawlerBound):
    """What the watched site served us: requests, body bytes on the wire, 304s."""

    def process_request(self, request: Request):
        self.crawler.spider.report.requests += 1
        request.meta.setdefault("started_at", time.monotonic())
        return None

    def process_response(self, request: Request, response: Response):
        report = self.crawler.spider.report
        report.response_bytes += len(response.body)
        if response.status == 304:
            report.not_modified_count += 1
        return response
