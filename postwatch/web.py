"""The daemon's HTTP endpoint: /healthz, /metrics (Prometheus), /unsubscribe, the Atom feeds of
changes (/feeds/<source>.atom, /feeds/all.atom), the reader's pages: /subscribe (double
opt-in), /confirm and /preferences (postwatch/signup.py does their work), and the public pages:
the front page / and the web archive (/archive/, /archive/<source>/, /archive/d/<digest id>,
the feed of editions /archive/editions.atom; digest/archive.py), which carry nothing of any reader and answer conditional GETs.

Why aiohttp: it runs on the daemon's own asyncio loop, the one Scrapy's reactor and APScheduler
already share (no second server thread or process to supervise); it is a mature asyncio server;
and Scrapy already pulls it in, so it adds no dependency.

Every response carries the security headers of postwatch/webforms.py (CSP with frame-ancestors
'none', no-referrer, nosniff); every form a signed double-submit CSRF token; the signup form a
honeypot field, rate limits per client network (/24, /64), per mailbox and per hour, and one
answer time for every address. /unsubscribe takes RFC 8058 one-click POSTs from mail clients,
which carry no page token: its signed link is its own proof.

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
import functools
import logging
import os
import resource
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, Callable

from aiohttp import web

from postwatch.webforms import CSRF_COOKIE, CSRF_FIELD, SECURITY_HEADERS, CsrfGuard, RateLimiter
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
    outbox_queued: Callable[[], None] = lambda: None     # a confirmation is waiting: send soon
    per_ip: RateLimiter | None = None
    per_address: RateLimiter | None = None
    per_hour: RateLimiter | None = None
    _csrf: CsrfGuard | None = None

    @property
    def csrf(self) -> CsrfGuard:
        if self._csrf is None:
            self._csrf = CsrfGuard(self.app.config.unsubscribe_secret())
        return self._csrf

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
        ctx.app.mailer.update_outbox_gauges()
        counts = ctx.app.store.subscriber_counts()
        for status in ("active", "pending", "unsubscribed", "suppressed", *counts):
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
    from digest.i18n import accepted_language

    ctx = request.app[CONTEXT]
    lang = accepted_language(request.headers.get("Accept-Language"))
    token = request.query.get("token", "")
    if request.method == "POST":
        form = await _read_form(request)
        token = str(form.get("token") or token)
    method = request.method
    try:
        status, content_type, body = await ctx.database(
            "/unsubscribe", lambda: pages.handle(method, token, ctx.app.store, ctx.app.mailer.digest_settings(), lang))
    except DatabaseUnavailable:
        return web.Response(status=503, body=_try_later_page(ctx).encode(), headers={"Content-Type": HTML, "Retry-After": "300"})
    return web.Response(status=status, body=body if isinstance(body, bytes) else body.encode(),
                        headers={"Content-Type": content_type})


async def _read_form(request: web.Request):
    """The POSTed form: size-capped, within BODY_TIMEOUT, a malformed one answered 400."""
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=request.content_length)
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.post()       # client_max_size caps a chunked body too
    except TimeoutError:
        log.debug("http: %s sent no complete body within %.0fs", request.remote, BODY_TIMEOUT)
        timed_out = web.HTTPRequestTimeout()
        timed_out.force_close()
        raise timed_out from None
    except ValueError as exc:                  # a malformed multipart body
        log.debug("http: bad form from %s: %s", request.remote, exc)
        raise web.HTTPBadRequest(text="bad form\n") from None


# --------------------------------------------------------------------------------------------
# The reader's pages: /subscribe, /confirm, /preferences
# --------------------------------------------------------------------------------------------
class _Page:
    """One page being answered: its CSRF nonce (the visitor's cookie, or a new one to set)."""

    def __init__(self, request: web.Request):
        self.request = request
        self.ctx: _Context = request.app[CONTEXT]
        cookie = request.cookies.get(CSRF_COOKIE, "")
        self.new_nonce = not (16 <= len(cookie) <= 64 and cookie.replace("-", "").replace("_", "").isalnum())
        self.nonce = CsrfGuard.new_nonce() if self.new_nonce else cookie
        from digest.i18n import accepted_language

        # The visitor's language until the page knows the subscriber's (or the form's choice).
        self.lang = accepted_language(request.headers.get("Accept-Language"))

    def t(self, message: str, **values) -> str:
        from digest.i18n import tr

        return tr(self.lang, message, **values)

    def csrf_token(self) -> str:
        return self.ctx.csrf.token(self.nonce)

    def csrf_ok(self, form) -> bool:
        return not self.new_nonce and self.ctx.csrf.valid(self.nonce, str(form.get(CSRF_FIELD) or ""))

    async def token_and_form(self):
        """(token, form) of a page reached by a signed link: the token from the query, or from the
        form posted with it, and that form (None for a GET). None when a POST's CSRF token is not
        valid: answer with `refused()`."""
        request = self.request
        if request.method == "GET":
            return request.query.get("token", ""), None
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        form = await _read_form(request)
        if not self.csrf_ok(form):
            return None
        return str(form.get("token") or request.query.get("token", "")), form

    def answer(self, status: int, html: str, headers: dict | None = None) -> web.Response:
        response = web.Response(status=status, body=html.encode(), headers={"Content-Type": HTML, **(headers or {})})
        if self.new_nonce:
            secure = self.ctx.app.config.page_url("/").startswith("https:")
            response.set_cookie(CSRF_COOKIE, self.nonce, httponly=True, samesite="Strict", path="/", secure=secure,
                                max_age=int(self.ctx.csrf.max_age))
        return response

    async def render(self, status: int, work: Callable[[], str], headers: dict | None = None) -> web.Response:
        """`work` (database reads, the template) in the pool; the try-later page when the database
        is away, a short 500 when the operator's template is broken."""
        from digest.errors import TemplateProblem

        try:
            html = await self.ctx.database(self.request.path, work)
        except DatabaseUnavailable:
            return web.Response(status=503, body=_try_later_page(self.ctx).encode(),
                                headers={"Content-Type": HTML, "Retry-After": "300"})
        except TemplateProblem as exc:
            self.ctx.warn_rarely(f"template:{self.request.path}", "http %s: %s", self.request.path, exc)
            raise web.HTTPInternalServerError(text="This page cannot be shown; the operator has been told.\n") from None
        return self.answer(status, html, headers)

    def message(self, status: int, title: str, text: str, link_url: str = "", link_text: str = "",
                headers: dict | None = None):
        from digest.render import render_site_page

        app = self.ctx.app
        return self.render(status, lambda: render_site_page("message.html.j2", app.mailer.digest_settings(), self.lang, title=title,
                                                            message=text, link_url=link_url, link_text=link_text), headers)

    def refused(self):
        """The answer to a form without a valid CSRF token (a coroutine): 403, nothing changed."""
        log.debug("http %s: a form without a valid CSRF token from %s", self.request.path, self.request.remote)
        return self.message(403, self.t("This form has expired"), self.t("Nothing was changed. Please open the page again "
                                                                         "and resend the form."),
                            self.request.path, self.t("Open the page again"))


def _try_later_when_database_is_away(handler):
    """A page whose database work found the database away is the try-later page (503), not a 500."""
    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except DatabaseUnavailable:
            return web.Response(status=503, body=_try_later_page(request.app[CONTEXT]).encode(),
                                headers={"Content-Type": HTML, "Retry-After": "300"})
    return answer


@_try_later_when_database_is_away
async def subscribe(request: web.Request) -> web.Response:
    from digest.render import render_site_page
    from postwatch import signup

    page = _Page(request)
    app = page.ctx.app
    def form_page(form) -> str:
        page.lang = form.lang
        return render_site_page("subscribe.html.j2", app.mailer.digest_settings(), page.lang, title=page.t("Subscribe"),
                                action="/subscribe", csrf=page.csrf_token(), **signup.page_context(app.store, form, page.lang))

    if request.method == "GET":
        return await page.render(200, lambda: form_page(signup.defaults(app.config, lang=page.lang)))
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    # Every answer to a signup leaves no sooner than [signup] answer_after after it arrived: a
    # known address (nothing to queue) or a limit reached would otherwise answer sooner.
    floor = time.monotonic() + app.config.signup.answer_after.total_seconds()
    try:
        return await _sign_up(request, page, form_page)
    finally:
        await asyncio.sleep(max(0.0, floor - time.monotonic()))


async def _sign_up(request: web.Request, page: _Page, form_page: Callable[[Any], str]) -> web.Response:
    from postwatch import signup

    ctx, app = page.ctx, page.ctx.app
    form = await _read_form(request)
    if not page.csrf_ok(form):
        return await page.refused()
    # Every limit is answered with the page of any other signup: a limit reached says nothing
    # about an address, and tells nobody which networks or spellings to use instead.
    if str(form.get("lang") or "") in ("en", "ko"):
        page.lang = str(form.get("lang"))
    title, text = signup.check_inbox(page.lang)
    if form.get("website"):               # the honeypot: a person never sees it, a bot fills it in
        log.debug("http /subscribe: the honeypot was filled in from %s; nothing stored", request.remote)
        return await page.message(200, title, text)
    network = signup.client_network(request.remote or "?")
    if not ctx.per_ip.allow(network):
        ctx.warn_rarely("signup-ip", "http /subscribe: %s reached [signup] per_ip; signups from it turned away", network)
        return await page.message(200, title, text)
    checked = await ctx.database("/subscribe", lambda: signup.read_form(app.config, form, signup.known_sources(app.store),
                                                                        with_email=True))
    if checked.errors:
        return await page.render(400, lambda: form_page(checked))
    if not ctx.per_address.allow(signup.mailbox_key(checked.email), variant=checked.email.lower()):
        # No address in the log: whether an address is being signed up is nobody's business.
        ctx.warn_rarely("signup-address", "http /subscribe: a mailbox reached [signup] per_address (or a second "
                        "spelling of it came); nothing stored")
        return await page.message(200, title, text)
    if not ctx.per_hour.allow("all"):
        ctx.warn_rarely("signup-hour", "http /subscribe: [signup] per_hour (%d confirmation mails an hour) reached; "
                        "signups turned away", app.config.signup.per_hour)
        return await page.message(200, title, text)
    now = datetime.now(timezone.utc)
    outcome = await ctx.database("/subscribe", lambda: signup.sign_up(app.config, app.store, app.mailer, checked, now))
    if outcome in ("new", "returning"):
        ctx.outbox_queued()
    return await page.message(200, title, text)


@_try_later_when_database_is_away
async def confirm(request: web.Request) -> web.Response:
    from digest.render import render_site_page
    from digest.tokens import CONFIRMED, EXPIRED, check_confirm_token
    from postwatch.subscribers import describe_cadence

    page = _Page(request)
    app = page.ctx.app
    linked = await page.token_and_form()
    if linked is None:
        return await page.refused()
    token, form = linked
    now = datetime.now(timezone.utc)
    secret = app.config.unsubscribe_secret()
    verdict, subscriber_id = await page.ctx.database(
        "/confirm", lambda: check_confirm_token(token, secret, app.store.get_subscriber, now))
    if verdict == EXPIRED:
        return await page.message(410, page.t("This link has expired"), page.t(
            "Confirmation links work for %(days)s days. Nothing was changed; sign up again to get a new one.",
            days=app.config.signup.confirm_within.days or 1), "/subscribe", page.t("Sign up again"))
    if verdict != CONFIRMED:
        return await page.message(403, page.t("Link not valid"), page.t("This confirmation link is not valid, or was used "
                                                                        "already. Nothing was changed."),
                                  "/subscribe", page.t("Sign up"))
    if request.method == "GET":
        # Mail scanners open links: only the button (a POST) confirms.
        def confirm_page() -> str:
            subscriber = app.store.get_subscriber(subscriber_id)
            page.lang = subscriber.lang
            return render_site_page("confirm.html.j2", app.mailer.digest_settings(), page.lang,
                                    title=page.t("Confirm your subscription"),
                                    action="/confirm", csrf=page.csrf_token(), token=token, email=subscriber.email,
                                    schedule=describe_cadence(subscriber, page.lang),
                                    confirm_days=app.config.signup.confirm_within.days or 1)
        return await page.render(200, confirm_page)
    ip, agent = request.remote, request.headers.get("User-Agent")
    subscriber = await page.ctx.database("/confirm", lambda: app.store.confirm_signup(subscriber_id, now, ip=ip,
                                                                                      user_agent=agent))
    if subscriber is None:
        return await page.message(403, page.t("Link not valid"), page.t("This confirmation link was used already. Nothing "
                                                                        "was changed."))
    from digest.compose import preferences_url

    log.info("signup confirmed: subscriber %d", subscriber.id)
    page.lang = subscriber.lang
    return await page.message(200, page.t("You are subscribed"), page.t(
        "%(email)s gets the %(site)s digest (%(schedule)s), from now on.", email=subscriber.email,
        site=app.config.digest.site_name, schedule=describe_cadence(subscriber, page.lang)),
        preferences_url(subscriber, app.mailer.digest_settings()), page.t("Change what you get"))


@_try_later_when_database_is_away
async def preferences(request: web.Request) -> web.Response:
    from digest.compose import preferences_url, unsubscribe_url
    from digest.render import render_site_page
    from digest.tokens import verify_token
    from postwatch import signup
    from postwatch.subscribers import describe_cadence

    page = _Page(request)
    app = page.ctx.app
    linked = await page.token_and_form()
    if linked is None:
        return await page.refused()
    token, form = linked
    secret = app.config.unsubscribe_secret()
    subscriber_id = await page.ctx.database(
        "/preferences", lambda: verify_token(token, secret, app.store.get_subscriber, purpose="preferences"))
    subscriber = subscriber_id and await page.ctx.database("/preferences", lambda: app.store.get_subscriber(subscriber_id))
    if not subscriber:
        return await page.message(403, page.t("Link not valid"), page.t("This preferences link is not valid. Use the link "
                                                                        "in your latest digest."))
    page.lang = subscriber.lang
    if subscriber.status != "active":
        return await page.message(200, page.t("Not subscribed"), page.t("%(email)s is not subscribed just now.",
                                                                        email=subscriber.email),
                                  "/subscribe", page.t("Subscribe"))

    def preferences_page(checked, saved: str = "") -> str:
        settings = app.mailer.digest_settings()
        return render_site_page("preferences.html.j2", settings, page.lang, title=page.t("Your preferences"),
                                action="/preferences", csrf=page.csrf_token(), token=token, email=subscriber.email,
                                saved=saved, unsubscribe_url=unsubscribe_url(subscriber, settings),
                                **signup.page_context(app.store, checked, page.lang))

    if form is None:
        return await page.render(200, lambda: preferences_page(signup.defaults(app.config, subscriber)))
    checked = await page.ctx.database("/preferences", lambda: signup.read_form(app.config, form, signup.known_sources(app.store),
                                                                               with_email=False))
    if checked.errors:
        return await page.render(400, lambda: preferences_page(checked))
    changed = await page.ctx.database("/preferences", lambda: app.store.change_settings(subscriber.id, **checked.options))
    if not changed:
        return await page.message(200, page.t("Not subscribed"), page.t("%(email)s is not subscribed just now.",
                                                                        email=subscriber.email))
    updated = await page.ctx.database("/preferences", lambda: app.store.get_subscriber(subscriber.id))
    page.lang = updated.lang
    return await page.message(200, page.t("Preferences saved"), page.t(
        "%(email)s now gets the digest %(schedule)s.", email=updated.email, schedule=describe_cadence(updated, page.lang)),
        preferences_url(updated, app.mailer.digest_settings()), page.t("Back to your preferences"))


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


# --------------------------------------------------------------------------------------------
# The front page and the web archive (digest/archive.py): public pages, nothing of any reader
# --------------------------------------------------------------------------------------------
def _page_language(request: web.Request) -> tuple[str, bool]:
    """(language, chosen by ?lang=): ?lang=ko or ?lang=en wins over Accept-Language."""
    from digest.i18n import LANGUAGES, accepted_language

    asked = request.query.get("lang", "")
    if asked in LANGUAGES:
        return asked, True
    return accepted_language(request.headers.get("Accept-Language")), False


async def _public_page(request: web.Request, what: str, build: Callable[[Any, str, bool], Any],
                       content_type: str = HTML) -> web.Response:
    """A page `build(app, lang, explicit)` makes in the pool (an archive.ArchivePage), answered
    304 when the reader's copy is current, with the Atom feeds' validators."""
    from digest.archive import NotInArchive
    from digest.errors import TemplateProblem

    ctx = request.app[CONTEXT]
    lang, explicit = _page_language(request)
    try:
        page = await ctx.database(what, lambda: build(ctx.app, lang, explicit))
    except DatabaseUnavailable:
        return web.Response(status=503, body=_try_later_page(ctx, lang).encode(),
                            headers={"Content-Type": HTML, "Retry-After": "300"})
    except NotInArchive:
        raise web.HTTPNotFound(text="No such page in the archive.\n") from None
    except TemplateProblem as exc:
        ctx.warn_rarely(f"template:{what}", "http %s: %s", what, exc)
        raise web.HTTPInternalServerError(text="This page cannot be shown; the operator has been told.\n") from None
    # The language can come from Accept-Language: caches keep one copy per language.
    validators = {"ETag": f'"{page.etag}"', "Vary": "Accept-Language", "Cache-Control": "public, max-age=60"}
    if page.last_modified is not None:
        validators["Last-Modified"] = format_datetime(page.last_modified, usegmt=True)
    if _reader_is_current(request, page):
        return web.Response(status=304, headers=validators)
    return web.Response(body=page.body, headers={"Content-Type": content_type, "Content-Language": lang, **validators})


async def home(request: web.Request) -> web.Response:
    from digest import archive

    signup = request.app[CONTEXT].app.config.signup.enabled
    return await _public_page(request, "/", lambda app, lang, _: archive.home_page(app.store, app.mailer.digest_settings(), lang,
                                                                                   signup))


async def archive_index(request: web.Request) -> web.Response:
    from digest import archive

    return await _public_page(request, "/archive/", lambda app, lang, explicit: archive.index_page(
        app.store, app.mailer.digest_settings(), lang, explicit))


async def archive_source(request: web.Request) -> web.Response:
    from digest import archive

    name = request.match_info["source"]
    before = request.query.get("before", "")
    if before and not (before.isascii() and before.isdigit() and len(before) <= 12):
        raise web.HTTPNotFound(text="No such page in the archive.\n")
    return await _public_page(request, "/archive/<source>/", lambda app, lang, explicit: archive.source_page(
        app.store, app.mailer.digest_settings(), name, lang, int(before) if before else None, explicit))


async def archive_editions(request: web.Request) -> web.Response:
    """/archive/editions.atom: the Atom feed of the digest's editions (digest/archive.py), with
    the archive pages' validators and cache headers, answered 304 when the reader's copy is current."""
    from digest import archive
    from digest.feed import CONTENT_TYPE

    return await _public_page(request, "/archive/editions.atom", lambda app, lang, explicit: archive.editions_feed(
        app.store, app.mailer.digest_settings(), lang, explicit), content_type=CONTENT_TYPE)


async def archive_digest(request: web.Request) -> web.Response:
    from digest import archive

    digest_id = request.match_info["id"]
    return await _public_page(request, "/archive/d/<id>", lambda app, lang, explicit: archive.digest_page(
        app.store, app.mailer.digest_settings(), digest_id, lang, explicit))


def _reader_is_current(request: web.Request, atom) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) decides when present; If-Modified-Since
    only without it."""
    if request.if_none_match is not None:
        return any(tag.value in ("*", atom.etag) for tag in request.if_none_match)
    since = request.if_modified_since
    return since is not None and atom.last_modified is not None and atom.last_modified <= since


async def _redirect_to_folder(request: web.Request) -> web.Response:
    """/archive → /archive/, /archive/link → /archive/link/ (relative, so it holds behind a
    proxy's path prefix)."""
    last = request.path.rstrip("/").rsplit("/", 1)[1]
    raise web.HTTPMovedPermanently(f"{last}/" + (f"?{request.query_string}" if request.query_string else ""))


def _unhealthy(detail: str) -> web.Response:
    return web.json_response({"status": "unhealthy", "detail": detail}, status=503, headers={"Retry-After": "30"})


def _try_later_page(ctx: _Context, lang: str = "en") -> str:
    from digest.i18n import tr
    from digest.render import render_page

    config = ctx.app.config
    # What render_page needs, from the config alone: the full DigestSettings would need the database.
    templates = SimpleNamespace(templates_dir=config.digest.templates_dir and (config.base_dir / config.digest.templates_dir),
                                site_name=config.digest.site_name, organization=config.digest.organization or "",
                                postal_address=config.digest.postal_address or "",
                                pages_root=config.page_url("") if config.unsubscribe.public_url else "")
    return render_page(tr(lang, "Please try again later"), tr(lang, "This page is not available just now. Please try the "
                                                                    "link again in a few minutes."), None, templates, lang)


@web.middleware
async def _security_headers(request: web.Request, handler):
    """Every answer, error pages included, carries the security headers."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in SECURITY_HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


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
             executor: ThreadPoolExecutor | None = None,
             outbox_queued: Callable[[], None] = lambda: None) -> web.Application:
    """The aiohttp application for `app` (a postwatch.app.App). `outbox_queued` is called when a
    page queued a message (a confirmation email), so that the daemon sends it without waiting
    for its next outbox period."""
    web_app = web.Application(client_max_size=MAX_FORM_BYTES, middlewares=[_security_headers, _request_head_arrived])
    signup = app.config.signup
    web_app[CONTEXT] = _Context(app=app, scheduler_running=scheduler_running,
                                executor=executor or ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="postwatch-web"),
                                warned_at={}, outbox_queued=outbox_queued,
                                per_ip=RateLimiter(signup.per_ip, signup.per_ip_window.total_seconds()),
                                per_address=RateLimiter(signup.per_address, signup.per_address_window.total_seconds()),
                                per_hour=RateLimiter(signup.per_hour, 3600.0))
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
    web_app.router.add_route("*", "/unsubscribe", unsubscribe)
    web_app.router.add_route("*", "/unsubscribe/", unsubscribe)
    web_app.router.add_get(r"/feeds/{source:[^/]+}.atom", feed)
    web_app.router.add_get("/", home)
    web_app.router.add_get("/archive/", archive_index)
    web_app.router.add_get("/archive", _redirect_to_folder)
    web_app.router.add_get(r"/archive/d/{id:[0-9_-]+}", archive_digest)
    web_app.router.add_get("/archive/editions.atom", archive_editions)
    web_app.router.add_get(r"/archive/{source:[^/]+}/", archive_source)
    web_app.router.add_get(r"/archive/{source:[^/]+}", _redirect_to_folder)
    if signup.enabled:
        for path, handler in (("/subscribe", subscribe), ("/confirm", confirm), ("/preferences", preferences)):
            web_app.router.add_route("*", path, handler)
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
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT,
                 outbox_queued: Callable[[], None] = lambda: None, factory: Callable[..., web.Application] | None = None,
                 **factory_options):
        """`factory`: the aiohttp application to serve (default `make_app`, the public pages; the
        console's is postwatch.console.pages.make_console_app), given `factory_options` too."""
        self.host, self.port = host, port
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        self.executor = ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="postwatch-web")
        if factory is None:
            self.web_app = make_app(app, scheduler_running, executor=self.executor, outbox_queued=outbox_queued)
        else:
            self.web_app = factory(app, executor=self.executor, outbox_queued=outbox_queued, **factory_options)
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
