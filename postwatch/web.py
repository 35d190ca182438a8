"""The daemon's HTTP endpoint: /healthz, /metrics (Prometheus), /unsubscribe and the Atom feeds
of changes (/feeds/<source>.atom, /feeds/all.atom).

Served by aiohttp on the daemon's own event loop (the one Scrapy's asyncio reactor and
APScheduler share), so it costs no thread per connection. It must never be able to stop the
checks or the mail, so it is fenced in:

- at most `[daemon] max_connections` connections at once; one more is answered 503 and closed
  at once, so the endpoint can never take the file descriptors the crawler, the database and
  SMTP need;
- a connection that is idle, or has not sent a complete request head, for `IDLE_TIMEOUT`
  seconds is dropped (slowloris, idle keep-alive);
- a request body is capped (`MAX_FORM_BYTES`) and must arrive within `BODY_TIMEOUT` seconds;
- a malformed request is answered 400 with one debug line, no traceback;
- database work runs in a small thread pool with a deadline, so a slow or absent database
  cannot block the event loop; a database that is away gives 503 and one log line naming it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import format_datetime
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, Callable

from aiohttp import web

from state import StorageError

log = logging.getLogger("postwatch.web")

MAX_CONNECTIONS = 256
# From connect, or from the previous response on a keep-alive connection, to a complete request
# head. Our clients (a health probe, Prometheus, a mail client's one-click POST, a browser) send
# their head in one packet.
IDLE_TIMEOUT = 5.0
BODY_TIMEOUT = 10.0
MAX_FORM_BYTES = 64 * 1024
DATABASE_TIMEOUT = 10.0
DATABASE_THREADS = 4
# One warning per minute at most for the same trouble; the rest go to debug.
WARN_EVERY = 60.0

HTML = "text/html; charset=utf-8"


class DatabaseUnavailable(Exception):
    """The database did not answer; the message is one line that names it."""


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit: the usual soft limit of 1,024 is shared by
    the crawler's sockets, the database, SMTP and the listen endpoint. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        log.debug("open-file limit %s (hard %s)", soft, hard)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("open-file limit stays %d (hard %d): %s", soft, hard, exc)
        return soft
    log.debug("open-file limit raised from %d to %d", soft, hard)
    return hard


@dataclass
class _Context:
    app: Any                                  # postwatch.app.App
    scheduler_running: Callable[[], bool]
    executor: ThreadPoolExecutor
    warned_at: dict[str, float]

    def warn_rarely(self, key: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.warned_at.get(key, -WARN_EVERY) >= WARN_EVERY:
            self.warned_at[key] = now
            log.warning(message, *args)
        else:
            log.debug(message, *args)

    async def database(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` (which uses the store) in the pool; SQLAlchemy errors and a missed deadline
        become DatabaseUnavailable with a one-line reason."""
        from sqlalchemy.exc import SQLAlchemyError

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.executor, fn), DATABASE_TIMEOUT)
        except StorageError as exc:      # the Store's own one line names the database already
            reason = str(exc)
        except SQLAlchemyError as exc:
            reason = str(StorageError(self.app.store.display_name, exc))
        except asyncio.TimeoutError:
            reason = str(StorageError(self.app.store.display_name, f"no answer within {DATABASE_TIMEOUT:.0f}s"))
        self.warn_rarely(f"database:{what}", "http %s: %s", what, reason)
        raise DatabaseUnavailable(reason)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


CONTEXT = web.AppKey("postwatch", _Context)


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]

    def probe():
        ctx.app.store.list_sources()        # the database answers, whatever the check age
        return ctx.app.healthy()

    try:
        ok, detail = await ctx.database("/healthz", probe)
    except DatabaseUnavailable as exc:
        return _unhealthy(str(exc))
    ok = ok and ctx.scheduler_running()
    return web.json_response({"status": "ok" if ok else "unhealthy", "detail": detail}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    ctx = request.app[CONTEXT]

    def collect() -> bytes:
        ctx.app.update_outbox_gauges()
        counts = ctx.app.store.subscriber_counts()
        for status in ("active", "unsubscribed", "suppressed", *counts):
            ctx.app.metrics.subscribers.labels(status=status).set(counts.get(status, 0))
        return generate_latest(ctx.app.metrics.registry)

    try:
        body = await ctx.database("/metrics", collect)
    except DatabaseUnavailable as exc:
        return _unhealthy(str(exc))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def unsubscribe(request: web.Request) -> web.Response:
    """GET shows a confirm page; POST (RFC 8058 one-click, or the page's button) unsubscribes."""
    from digest import unsubscribe as pages

    ctx = request.app[CONTEXT]
    token = request.query.get("token", "")
    if request.method == "POST":
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=request.content_length)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                form = await request.post()       # client_max_size caps a chunked body too
        except TimeoutError:
            log.debug("http: %s sent no complete body within %.0fs", request.remote, BODY_TIMEOUT)
            timed_out = web.HTTPRequestTimeout()
            timed_out.force_close()
            raise timed_out from None
        except ValueError as exc:                  # a malformed multipart body
            log.debug("http: bad form from %s: %s", request.remote, exc)
            raise web.HTTPBadRequest(text="bad form\n") from None
        token = str(form.get("token") or token)
    method = request.method
    try:
        status, content_type, body = await ctx.database(
            "/unsubscribe", lambda: pages.handle(method, token, ctx.app.store, ctx.app.digest_settings()))
    except DatabaseUnavailable:
        return web.Response(status=503, body=_try_later_page(ctx).encode(), headers={"Content-Type": HTML, "Retry-After": "300"})
    return web.Response(status=status, body=body if isinstance(body, bytes) else body.encode(),
                        headers={"Content-Type": content_type})


async def feed(request: web.Request) -> web.Response:
    """The Atom feed of a source's changes (/feeds/<source>.atom) or of all (/feeds/all.atom),
    answered 304 when the reader's copy is current (If-None-Match, else If-Modified-Since)."""
    from digest.feed import CONTENT_TYPE, UnknownFeed
    from digest.render import TemplateProblem

    ctx = request.app[CONTEXT]
    name = request.match_info["source"]
    try:
        atom = await ctx.database("/feeds", lambda: ctx.app.feed(name))
    except DatabaseUnavailable:
        return web.Response(status=503, text="The feed is not available just now; please try again in a few minutes.\n",
                            headers={"Retry-After": "300"})
    except UnknownFeed as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    except TemplateProblem as exc:       # the operator's own feed_entry.html.j2
        ctx.warn_rarely("feed-template", "http /feeds: %s", exc)
        raise web.HTTPInternalServerError(text="The feed cannot be rendered; the operator has been told.\n") from None
    validators = {"ETag": f'"{atom.etag}"'}
    if atom.last_modified is not None:
        validators["Last-Modified"] = format_datetime(atom.last_modified, usegmt=True)
    if _reader_is_current(request, atom):
        return web.Response(status=304, headers=validators)
    return web.Response(body=atom.body, headers={"Content-Type": CONTENT_TYPE, **validators})


def _reader_is_current(request: web.Request, atom) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) decides when present; If-Modified-Since
    only without it."""
    if request.if_none_match is not None:
        return any(tag.value in ("*", atom.etag) for tag in request.if_none_match)
    since = request.if_modified_since
    return since is not None and atom.last_modified is not None and atom.last_modified <= since


def _unhealthy(detail: str) -> web.Response:
    return web.json_response({"status": "unhealthy", "detail": detail}, status=503, headers={"Retry-After": "30"})


def _try_later_page(ctx: _Context) -> str:
    from digest.render import render_page

    config = ctx.app.config
    # render_page reads only the template folder; the full DigestSettings would need the database.
    templates = SimpleNamespace(templates_dir=config.digest.templates_dir and (config.base_dir / config.digest.templates_dir))
    return render_page("Please try again later", "This page is not available just now. Please try the link again "
                       "in a few minutes.", None, templates)


@web.middleware
async def _request_head_arrived(request: web.Request, handler):
    """The idle timer stops while a request is handled and starts again after it."""
    protocol = request.protocol
    guarded = isinstance(protocol, _GuardedRequestHandler)
    if guarded:
        protocol.request_started()
    try:
        return await handler(request)
    finally:
        if guarded:
            protocol.request_finished()


def make_app(app, scheduler_running: Callable[[], bool] = lambda: True, *,
             executor: ThreadPoolExecutor | None = None) -> web.Application:
    """The aiohttp application for `app` (a postwatch.app.App). Later pages add their routes here."""
    web_app = web.Application(client_max_size=MAX_FORM_BYTES, middlewares=[_request_head_arrived])
    web_app[CONTEXT] = _Context(app=app, scheduler_running=scheduler_running,
                                executor=executor or ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="postwatch-web"),
                                warned_at={})
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
    web_app.router.add_route("*", "/unsubscribe", unsubscribe)
    web_app.router.add_route("*", "/unsubscribe/", unsubscribe)
    web_app.router.add_get(r"/feeds/{source:[^/]+}.atom", feed)
    return web_app


# --------------------------------------------------------------------------------------------
# The connection guard
# --------------------------------------------------------------------------------------------
class _GuardedRequestHandler(web.RequestHandler):
    """aiohttp's protocol with an idle timer and quiet 4xx answers.

    Why a timer of our own: aiohttp (checked in aiohttp/web_protocol.py, 3.9 to 3.14) has no
    timeout for reading a request head. Its keep-alive timer only closes a connection that is
    idle *after* a response; only recent releases also start it at connect, and then with the
    keep-alive figure (3630 s by default in 3.14), never restarted by slow progress. A client
    that connects and sends nothing, or one header byte a second, would otherwise hold its
    connection (and a file descriptor) indefinitely.
    """

    def __init__(self, manager: web.Server, *, guard: "_ConnectionGuard", **kwargs):
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.idle_timer: asyncio.TimerHandle | None = None
        self.guard_transport: asyncio.Transport | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard_transport = transport        # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self.guard.live.discard(self)
        self.guard_transport = None
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._disarm()

    def request_finished(self) -> None:
        if self.guard_transport is not None:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self.idle_timer = asyncio.get_running_loop().call_later(self.guard.idle_timeout, self._idle_expired)

    def _disarm(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_expired(self) -> None:
        self.idle_timer = None
        transport = self.guard_transport
        if transport is not None:
            log.debug("http: closed the connection from %s: no complete request within %.0fs", self.peer,
                      self.guard.idle_timeout)
            transport.abort()               # not close(): it would wait for a client that does not read

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A malformed request (bad Content-Length, request line, headers) is the client's
        problem: answer 400 with one debug line. aiohttp itself logs a traceback at ERROR."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.debug("http: bad request from %s: %s", self.peer, _one_line(exc) if exc else message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        response = web.Response(status=status, text=f"{status} {reason}\n", content_type="text/plain")
        response.force_close()
        return response


class _Refused(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed without reading anything."""

    ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
              b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections\n")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.ANSWER)        # type: ignore[attr-defined]
        transport.close()


class _ConnectionGuard:
    """The protocol factory: aiohttp's request handler while fewer than `limit` connections are
    open, else `_Refused`."""

    def __init__(self, server: web.Server, limit: int, idle_timeout: float):
        self.server, self.limit, self.idle_timeout = server, limit, idle_timeout
        # Weak, so a handler whose connection never got made (a failed accept) cannot leak a slot.
        self.live: weakref.WeakSet[_GuardedRequestHandler] = weakref.WeakSet()
        self.refused = 0
        self.warned_at = -WARN_EVERY

    def __call__(self) -> asyncio.Protocol:
        if len(self.live) >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now - self.warned_at >= WARN_EVERY:
                self.warned_at = now
                log.warning("http: %d connections open ([daemon] max_connections); turning new ones away", self.limit)
            return _Refused()
        handler = _GuardedRequestHandler(
            self.server, guard=self, loop=asyncio.get_running_loop(),
            keepalive_timeout=self.idle_timeout, lingering_time=1.0, access_log=None,
        )
        self.live.add(handler)
        return handler


class _GuardedSite(web.BaseSite):
    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: _ConnectionGuard):
        super().__init__(runner, backlog=128)
        self.host, self.port, self.guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(self.guard, self.host, self.port,
                                                                      backlog=self._backlog)


class WebEndpoint:
    """Serves `make_app(app)` on host:port on the running loop; `start` raises OSError when the
    address cannot be used."""

    def __init__(self, app, host: str, port: int, *, scheduler_running: Callable[[], bool] = lambda: True,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT):
        self.host, self.port = host, port
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        self.executor = ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="postwatch-web")
        self.web_app = make_app(app, scheduler_running, executor=self.executor)
        self.runner: web.AppRunner | None = None
        self.site: _GuardedSite | None = None
        self.guard: _ConnectionGuard | None = None

    @property
    def address(self) -> str:
        server = self.site and self.site._server
        if server and server.sockets:
            host, port = server.sockets[0].getsockname()[:2]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self.guard.live) if self.guard else 0

    async def start(self) -> None:
        self.runner = web.AppRunner(self.web_app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        self.guard = _ConnectionGuard(self.runner.server, self.max_connections, self.idle_timeout)
        self.site = _GuardedSite(self.runner, self.host, self.port, self.guard)
        try:
            await self.site.start()
        except OSError as exc:
            await self.stop()
            if exc.errno:       # asyncio's strerror repeats the address: keep the system's words
                raise OSError(exc.errno, os.strerror(exc.errno)) from None
            raise

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.executor.shutdown(wait=False, cancel_futures=True)
