"""The console's aiohttp application: served on `[console] listen` by the daemon, on its loop.

Every page but /login needs an operator: a live session (the cookie), or the trusted proxy's
header. A visitor without one is sent to /login (a GET) or refused 403 (a POST). Every POST is
refused 403, before anything is read or changed, for a viewer, and for a form without the
session's CSRF token. Each action is one audit line in the log and one row in the audit table.

The database work runs in the daemon's web thread pool (postwatch/web.py `_Context.database`),
through the Store's own queries: no SQL here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web

from postwatch.console.auth import (LOGIN_NONCE_COOKIE, SESSION_COOKIE, TrustedProxies, burn_time,
                                    hash_password, new_csrf_token, new_session_id, same, session_hash, verify_password)
from postwatch.web import (CONTEXT, DATABASE_THREADS, HTML, MAX_FORM_BYTES, DatabaseUnavailable, _Context, _read_form,
                           _request_head_arrived, _security_headers)
from postwatch.webforms import CsrfGuard

log = logging.getLogger("postwatch.console")

TEMPLATES = Path(__file__).parent / "templates"
PUBLIC_PATHS = {"/login"}
DONE = {
    "check": "A check was asked for: the next sweep (in cluster mode, the next planning) takes this source within seconds.",
    "pause": "Paused: this source is not checked until it is resumed.",
    "resume": "Resumed: this source is checked on its interval again.",
    "settings": "Saved: the new interval counts from the last check; the filters apply to the next digests.",
    "added": "Added. Its first check records a baseline; nothing is mailed for the posts already there.",
    "suppress": "Suppressed: nothing more is sent to this address, and what was queued for it is cancelled.",
    "resubscribe": "Subscribed again, with the consent note recorded: they get changes from now on, not the ones they missed.",
    "forget": "Erased: only the hash of the address is kept, so it is not subscribed again without their consent.",
}


@dataclass
class Visitor:
    name: str
    role: str
    csrf: str
    session_hash: str | None = None      # None: signed in by the trusted proxy's header

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass
class ConsoleState:
    settings: Any                          # postwatch.config.ConsoleConfig
    proxies: TrustedProxies
    login_csrf: CsrfGuard
    proxy_secret: bytes
    check_requested: Callable[[], None]
    env: Any

    @property
    def idle(self) -> timedelta:
        return self.settings.idle_timeout

    @property
    def window(self) -> timedelta:
        """Failed sign-ins within this window count towards [console] max_failures (stored:
        a restart forgives none)."""
        return self.settings.throttle_window

    @property
    def absolute(self) -> timedelta:
        return self.settings.session_lifetime

    @property
    def secure(self) -> bool:
        return (self.settings.public_url or "").startswith("https:")


CONSOLE = web.AppKey("console", ConsoleState)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or utcnow()) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        amount = f"{int(seconds)} s"
    return f"in {amount}" if future else f"{amount} ago"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def make_environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["shown"] = _shown
    env.filters["size"] = _size
    return env


def _size(count: int) -> str:
    """Bytes as people read them: 950 B, 12.3 kB, 4.1 MB."""
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _shown(address: str) -> str:
    from digest.delivery import shown_address

    return shown_address(address)


def render(request: web.Request, template: str, http_status: int = 200, **context) -> web.Response:
    state = request.app[CONSOLE]
    visitor: Visitor | None = request.get("visitor")
    html = state.env.get_template(template).render(visitor=visitor, path=request.path, site_name=_site_name(request),
                                                now=utcnow(), **context)
    return web.Response(status=http_status, body=html.encode(), headers={"Content-Type": HTML})


def _site_name(request: web.Request) -> str:
    return request.app[CONTEXT].app.config.digest.site_name or "postwatch"


def message(request: web.Request, status: int, title: str, text: str, link: str = "/", link_text: str = "Back") -> web.Response:
    return render(request, "message.html.j2", status, title=title, text=text, link=link, link_text=link_text)


def see_other(location: str) -> web.Response:
    raise web.HTTPSeeOther(location)


def db(request: web.Request, what: str, fn: Callable[[], Any]):
    return request.app[CONTEXT].database(f"console {what}", fn)


def audit(request: web.Request, action: str, target: str | None = None, detail: str | None = None,
          operator: str | None = None):
    """One log line and one audit row (in the pool)."""
    visitor: Visitor | None = request.get("visitor")
    who = operator or (visitor.name if visitor else None)
    client = request.remote
    log.info("console: %s %s%s%s (from %s)", who or "-", action, f" {target}" if target else "",
             f": {detail}" if detail else "", client)
    store = request.app[CONTEXT].app.store
    return db(request, "audit", lambda: store.audit(who, action, target, detail, client))


# --------------------------------------------------------------------------------------------
# Who is asking: the guard every request passes
# --------------------------------------------------------------------------------------------
async def identify(request: web.Request) -> Visitor | None:
    state, ctx = request.app[CONSOLE], request.app[CONTEXT]
    store = ctx.app.store
    header = state.settings.trusted_user_header
    if header and request.remote in state.proxies:
        name = request.headers.get(header, "").strip()
        if name:
            operator = await db(request, "sign-in", lambda: store.get_operator(name))
            if operator is None:
                raise web.HTTPForbidden(text=f"{header} names no operator of this console\n")
            csrf = hmac.new(state.proxy_secret, f"console-proxy:{operator.name}".encode(), hashlib.sha256).hexdigest()
            return Visitor(operator.name, operator.role, csrf)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie or len(cookie) > 128:
        return None
    hashed = session_hash(cookie)
    session = await db(request, "session", lambda: store.operator_session(hashed, utcnow(), state.idle, state.absolute))
    if session is None:
        return None
    return Visitor(session.operator.name, session.operator.role, session.csrf, hashed)


@web.middleware
async def guard(request: web.Request, handler):
    try:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        visitor = await identify(request)
        if visitor is None:
            if request.method in ("GET", "HEAD"):
                target = request.path_qs if request.path != "/" else ""
                raise web.HTTPSeeOther("/login" + (f"?next={quote(target)}" if target else ""))
            raise web.HTTPForbidden(text="Sign in first.\n")
        request["visitor"] = visitor
        if request.method == "POST":
            if not visitor.admin and request.path != "/logout":     # signing out changes nothing of the service
                await audit(request, "refused", request.path, "viewer")
                return message(request, 403, "Not allowed", "Your account may look but not change anything "
                               "(role viewer). Nothing was changed.")
            form = await _read_form(request)
            if not same(str(form.get("csrf") or ""), visitor.csrf):
                await audit(request, "refused", request.path, "no valid CSRF token")
                return message(request, 403, "This form has expired", "Nothing was changed. Open the page again "
                               "and resend the form.", request.path if request.path.count("/") < 3 else "/")
            request["form"] = form
        elif request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        return await handler(request)
    except DatabaseUnavailable:
        return web.Response(status=503, text="The database is not answering just now; try again in a minute.\n",
                            headers={"Retry-After": "60"})


# --------------------------------------------------------------------------------------------
# Signing in and out
# --------------------------------------------------------------------------------------------
def _next_path(value: str) -> str:
    """Only a path of this console (no //host, no scheme) is followed after signing in."""
    parts = urlsplit(value or "/")
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page(request: web.Request, status: int = 200, error: str = "", name: str = "") -> web.Response:
    state = request.app[CONSOLE]
    nonce = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    fresh = not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", nonce)
    if fresh:
        nonce = CsrfGuard.new_nonce()
    response = render(request, "login.html.j2", status, title="Sign in", error=error, name=name, csrf=state.login_csrf.token(nonce),
                      next=_next_path(request.query.get("next", "/")))
    if fresh:
        response.set_cookie(LOGIN_NONCE_COOKIE, nonce, httponly=True, samesite="Strict", secure=state.secure, path="/login",
                            max_age=int(state.login_csrf.max_age))
    return response


async def login(request: web.Request) -> web.Response:
    state, ctx = request.app[CONSOLE], request.app[CONTEXT]
    store = ctx.app.store
    if request.method == "GET":
        if await identify(request) is not None:
            raise web.HTTPSeeOther("/")
        return _login_page(request)
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    form = await _read_form(request)
    if not state.login_csrf.valid(request.cookies.get(LOGIN_NONCE_COOKIE), str(form.get("csrf") or "")):
        return _login_page(request, 403, "The sign-in form had expired. Please sign in again.")
    name = str(form.get("name") or "").strip()[:100]
    password = str(form.get("password") or "")[:4096]
    client = request.remote or "?"
    keys = [f"account:{name.lower()}", f"client:{client}"]
    wait = await db(request, "sign-in", lambda: store.sign_in_wait(keys, utcnow(), state.settings.max_failures, state.window))
    if wait:
        await audit(request, "sign-in throttled", name, f"{int(wait)} s to wait", operator=name or None)
        response = _login_page(request, 429, f"Too many failed sign-ins. Please wait {int(wait // 60) + 1} minutes "
                                             "and try again.", name)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response

    def check():
        operator = store.get_operator(name) if name else None
        if operator is None:
            burn_time(password)
            return None
        ok, rehash = verify_password(operator.password_hash, password)
        if ok and rehash:
            store.rehash_operator_password(operator.id, hash_password(password))
        return operator if ok else None

    operator = await db(request, "sign-in", check)
    if operator is None:
        await db(request, "sign-in", lambda: store.record_sign_in_failure(keys, utcnow(), state.window))
        await audit(request, "sign-in failed", name, operator=name or None)
        return _login_page(request, 401, "Wrong name or password.", name)
    await db(request, "sign-in", lambda: store.clear_sign_in_failures(keys[0]))
    # A new session id at every sign-in: an id planted before (fixation) is never signed in.
    old = request.cookies.get(SESSION_COOKIE, "")
    session_id, csrf = new_session_id(), new_csrf_token()

    def start():
        if old:
            store.end_session(session_hash(old))
        store.prune_sessions(utcnow(), state.idle, state.absolute)
        store.start_session(operator.id, session_hash(session_id), csrf, client)

    await db(request, "sign-in", start)
    await audit(request, "signed in", None, f"role {operator.role}", operator=operator.name)
    response = web.HTTPSeeOther(_next_path(str(form.get("next") or "/")))
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict", secure=state.secure, path="/")
    response.del_cookie(LOGIN_NONCE_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.Response:
    visitor: Visitor = request["visitor"]
    store = request.app[CONTEXT].app.store
    if visitor.session_hash:
        await db(request, "sign-out", lambda: store.end_session(visitor.session_hash))
    await audit(request, "signed out")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# --------------------------------------------------------------------------------------------
# Dashboard
# --------------------------------------------------------------------------------------------
def _source_rows(app, statuses, checks: dict | None = None, traffic: dict | None = None) -> list[dict]:
    """Each source's state for the tables: `checks` (state.traffic.LastCheck by source) says
    since when a failing source fails, `traffic` (DayTraffic by source) what it cost today."""
    from state.traffic import DayTraffic

    checks, traffic = checks or {}, traffic or {}
    now = utcnow()
    rows = []
    for s in statuses:
        interval = app.sources.interval(s.name)
        next_check = s.last_check_at + interval if s.last_check_at else None
        if s.paused_at:
            state, next_check = "paused", None
        elif s.held_events or s.degraded:
            state = "held" if s.held_events else "degraded"
        else:
            state = "failing" if s.consecutive_failures else "ok"
        if s.check_requested_at or (s.last_check_at is None and not s.paused_at) or (next_check and next_check <= now):
            next_check = "now"          # asked for, never checked, or overdue: the next sweep takes it
        failing_since = None
        if s.consecutive_failures:
            recorded = checks.get(s.name)
            # The first failed check of this run when it was recorded; else after the last success.
            failing_since = recorded.failing_since if recorded and recorded.failing_since else s.last_success_at
        rows.append({"s": s, "state": state, "next": next_check, "failing_since": failing_since,
                     "failing": bool(s.consecutive_failures), "today": traffic.get(s.name, DayTraffic())})
    return rows


# A worker without a heartbeat for this long is shown as silent (`postwatch worker --stalled-after`'s default).
STALLED_AFTER = 30.0


def _metric_rows(app) -> list[tuple[str, str, str]]:
    """The figures /metrics serves, read from the same registry after the same refresh."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    app.mailer.update_outbox_gauges()
    counts = app.store.subscriber_counts()
    for status in ("active", "pending", "unsubscribed", "suppressed", *counts):
        app.metrics.subscribers.labels(status=status).set(counts.get(status, 0))
    rows = []
    for family in text_string_to_metric_families(generate_latest(app.metrics.registry).decode()):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            value = f"{sample.value:g}" if abs(sample.value) < 1e15 else f"{sample.value:.0f}"
            rows.append((sample.name, labels, value))
    return rows


def _start_of_day(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


async def dashboard(request: web.Request) -> web.Response:
    from state.traffic import utc_day

    app = request.app[CONTEXT].app
    now = utcnow()

    def read():
        store = app.store
        changes, changed = store.changes_since(_start_of_day(now), limit=50)
        return {"sources": _source_rows(app, store.source_status(), store.recorded_checks(), store.traffic_on(utc_day(now))),
                "outbox": store.outbox_summary(), "subscribers": store.subscriber_counts(), "metrics": _metric_rows(app),
                "changes": changes, "changed": changed, "workers": store.cluster_workers(),
                "daemon": store.daemon_holder()}

    data = await db(request, "/", read)
    return render(request, "dashboard.html.j2", title="Dashboard", stalled_after=STALLED_AFTER, **data)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
async def source_page(request: web.Request, status: int = 200, error: str = "", edit: dict | None = None) -> web.Response:
    app = request.app[CONTEXT].app
    name = request.match_info["name"]

    def read():
        status = next((s for s in app.store.source_status() if s.name == name), None)
        if status is None:
            return None
        checks = app.store.recorded_checks(name)
        return {"row": _source_rows(app, [status], checks)[0], "record": app.store.get_source(name),
                "held": app.store.source_events(name, "held", limit=200),
                "recent": [e for e in app.store.source_events(name, limit=40) if e.status != "held"],
                "volatile": app.store.volatile_posts(name), "last": checks.get(name),
                "histories": app.store.post_histories(name)}

    data = await db(request, request.path, read)
    if data is None:
        raise web.HTTPNotFound(text=f"no source {name}\n")
    done = DONE.get(request.query.get("done", ""), "")
    released = request.query.get("released")
    if released is not None and released.isdigit():
        done = f"Released {released} held change{'s' * (released != '1')}: they go out with the next digests."
    from postwatch.config import format_duration

    record = data["record"]
    configured = next((s for s in app.config.sources if s.name == name), None)
    include = tuple(configured.include) if configured else record.include
    exclude = tuple(configured.exclude) if configured else record.exclude
    if edit is None:
        edit = {"interval": format_duration(record.interval) if record.interval else "",
                "include": "\n".join(record.include), "exclude": "\n".join(record.exclude)}
    return render(request, "source.html.j2", status, title=name, name=name, done=done, error=error, edit=edit,
                  editable=record.origin != "config", include=include, exclude=exclude,
                  default_interval=format_duration(app.config.crawl.interval),
                  interval=format_duration(app.sources.interval(name)), **data)


def _terms(text: str) -> list[str]:
    """One term a line (blank lines dropped), as `--include` given once per term."""
    return [line.strip() for line in text.replace("\r", "").split("\n") if line.strip()]


async def source_settings(request: web.Request) -> web.Response:
    """The interval and keyword filters of a source added with the CLI or the console, checked
    as `config check` checks a configured source's (postwatch.config, digest.filters)."""
    from digest.filters import filter_problems
    from postwatch.config import format_duration, parse_duration, source_interval_problem

    app = request.app[CONTEXT].app
    name = request.match_info["name"]
    record = await db(request, "source", lambda: app.store.get_source(name))
    if record is None:
        raise web.HTTPNotFound(text=f"no source {name}\n")
    if record.origin == "config":
        return message(request, 409, "Set in the config file", f"The source {name!r} is configured in the config file: "
                       "change its interval and filters there. Nothing was changed.", f"/sources/{quote(name)}")
    form = request["form"]
    edit = {key: str(form.get(key) or "").strip()[:5000] for key in ("interval", "include", "exclude")}
    include, exclude = _terms(edit["include"]), _terms(edit["exclude"])
    interval, problem = None, None
    if edit["interval"]:
        try:
            interval = parse_duration(edit["interval"])
        except ValueError as exc:
            problem = f"interval: {exc}"
        else:
            problem = source_interval_problem(interval, record.url)
    problem = problem or next(iter(filter_problems(include, exclude)), None)
    if problem:
        return await source_page(request, 400, problem, edit)
    await db(request, "source settings", lambda: app.store.edit_source_settings(name, interval, include, exclude))
    app.sources.forget()
    detail = (f"interval {format_duration(interval) if interval else 'default'}; include {include or 'none'}; "
              f"exclude {exclude or 'none'}")
    await audit(request, "edited source", name, detail)
    raise web.HTTPSeeOther(f"/sources/{quote(name)}?done=settings")


async def source_action(request: web.Request) -> web.Response:
    ctx, state = request.app[CONTEXT], request.app[CONSOLE]
    store = ctx.app.store
    name, action = request.match_info["name"], request.match_info["action"]
    if await db(request, "source", lambda: store.get_source(name)) is None:
        raise web.HTTPNotFound(text=f"no source {name}\n")
    if action == "check":
        await db(request, "check now", lambda: store.request_check(name))
        await audit(request, "check now", name)
        state.check_requested()
        raise web.HTTPSeeOther(f"/sources/{quote(name)}?done=check")
    if action == "release":
        count = await db(request, "release", lambda: store.release_source(name))
        await audit(request, "released held changes", name, f"{count} events")
        ctx.outbox_queued()             # immediate subscribers get them now
        raise web.HTTPSeeOther(f"/sources/{quote(name)}?released={count}")
    if action in ("pause", "resume"):
        await db(request, action, lambda: store.pause_source(name, action == "pause"))
        await audit(request, "paused" if action == "pause" else "resumed", name)
        raise web.HTTPSeeOther(f"/sources/{quote(name)}?done={action}")
    raise web.HTTPNotFound()


SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")


async def add_source(request: web.Request) -> web.Response:
    """GET: the form. POST action=preview: what `sources test` finds, nothing stored. POST
    action=save: read again and stored as `sources add` stores it (origin "console")."""
    from crawler.urls import is_http_url
    from postwatch.config import ALL_SOURCES
    from state import SourceRecord

    app = request.app[CONTEXT].app
    if request.method == "GET":
        return render(request, "source_add.html.j2", title="Add a source", form={}, report=None, error="")
    form = request["form"]
    fields = {key: str(form.get(key) or "").strip() for key in ("url", "name", "title")}
    url = fields["url"]
    error = ""
    if not is_http_url(url):
        error = "The address must be an http(s) URL."
    else:
        fields["name"] = fields["name"] or (urlsplit(url).hostname or "").removeprefix("www.").split(".")[0].lower()
        if not SOURCE_NAME.fullmatch(fields["name"]) or fields["name"] == ALL_SOURCES:
            error = "The name must be lower-case letters, digits, '-' or '_' (and not 'all')."
        elif await db(request, "source", lambda: app.store.get_source(fields["name"])) is not None:
            error = f"A source named {fields['name']!r} exists already: choose another name."
    if error:
        return render(request, "source_add.html.j2", 400, title="Add a source", form=fields, report=None, error=error)
    from crawler.run import test_source

    report = await test_source(url, app.crawl_settings)        # on the daemon's loop, like its checks
    if form.get("action") != "save" or not report.ok:
        posts = sorted(report.posts, key=lambda p: p.published.timestamp() if p.published else 0, reverse=True)
        return render(request, "source_add.html.j2", 200 if report.ok else 422, title="Add a source", form=fields,
                      report=report, posts=posts[:10], error="" if report.ok else "Nothing was found there; not added.")
    record = SourceRecord(name=fields["name"], url=url, kind=report.spec.kind, feed_url=report.spec.feed_url,
                          sitemap_url=report.spec.sitemap_url, selectors=dict(report.spec.selectors or {}),
                          title=fields["title"] or None, origin="console")
    await db(request, "add source", lambda: app.store.add_source(record))
    await audit(request, "added source", record.name, url)
    request.app[CONSOLE].check_requested()
    raise web.HTTPSeeOther(f"/sources/{quote(record.name)}?done=added")


# --------------------------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------------------------
STATUSES = ("active", "pending", "unsubscribed", "suppressed")


async def subscribers_page(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].app.store
    q = request.query.get("q", "").strip()[:200]
    status = request.query.get("status", "")
    status = status if status in STATUSES else ""
    rows = await db(request, "/subscribers", lambda: store.search_subscribers(q, status or None))
    counts = await db(request, "/subscribers", store.subscriber_counts)
    done = DONE.get(request.query.get("done", ""), "")
    return render(request, "subscribers.html.j2", title="Subscribers", rows=rows, q=q, status=status, statuses=STATUSES,
                  counts=counts, done=done)


async def _subscriber(request: web.Request):
    store = request.app[CONTEXT].app.store
    try:
        key = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    subscriber = await db(request, "subscriber", lambda: store.get_subscriber(key))
    if subscriber is None:
        raise web.HTTPNotFound(text="no such subscriber\n")
    return subscriber


def _next_digest(subscriber, now: datetime) -> str:
    from postwatch.planner import cadence_key_of, trigger_for_cadence

    if subscriber.status != "active":
        return f"none: {subscriber.status}"
    key = cadence_key_of(subscriber)
    if key is None:
        return "after the next check that finds changes (immediate)"
    fire = trigger_for_cadence(key).get_next_fire_time(None, now)
    return f"{_when(fire.astimezone(timezone.utc))} ({_ago(fire, now)})" if fire else "never"


def _diagnosis(app, subscriber, now: datetime) -> dict:
    """Why a reader got nothing: where they stand against the newest event, their last messages,
    the sources they follow that are not ok, and the answer in a sentence."""
    from digest.sender import keyword_selection

    store = app.store
    newest = store.newest_event_seq()
    pending = store.pending_events(subscriber) if subscriber.status == "active" else []
    chosen = keyword_selection(app.sources.filters())(subscriber, pending) if pending else []
    followed = [row for row in _source_rows(app, store.source_status(), store.recorded_checks())
                if not subscriber.sources or row["s"].name in subscriber.sources]
    why = {"newest": newest, "behind": max(newest - subscriber.cursor, 0), "pending": len(pending),
           "chosen": len(chosen), "next_digest": _next_digest(subscriber, now),
           "last": store.outbox_rows(limit=5, subscriber_id=subscriber.id),
           "troubled": [row for row in followed if row["state"] != "ok"]}
    why["answer"] = _answer(subscriber, why)
    return why


def _answer(subscriber, why: dict) -> str:
    """The first reason that explains an empty inbox, in the order an operator would check."""
    if subscriber.status == "suppressed":
        return f"Suppressed ({subscriber.suppressed_reason or 'no reason kept'}): nothing is sent to this address."
    if subscriber.status == "unsubscribed":
        return "Unsubscribed: nothing is sent to this address until they subscribe again."
    if subscriber.status == "pending":
        return "They have not confirmed their subscription: nothing is sent until they follow the link."
    last = why["last"][0] if why["last"] else None
    if last and last["status"] in ("failed", "retrying"):
        return (f"Their last message {'failed' if last['status'] == 'failed' else 'is being retried'}: "
                f"{last['last_error'] or 'no error kept'} (Deliveries: retry it).")
    if why["chosen"]:
        count = why["chosen"]
        return f"{count} change{'s wait' if count != 1 else ' waits'} for their next digest: {why['next_digest']}."
    if why["pending"]:
        return (f"{why['pending']} change{'s' * (why['pending'] != 1)} since their last digest, but none passes "
                "their filters or their sources' filters.")
    stuck = ", ".join(f"{row['s'].name} ({row['state']})" for row in why["troubled"])
    return "Nothing has changed for them since their last digest" + (
        f"; of the sources they follow, these are not ok: {stuck}." if stuck else ".")


async def subscriber_page(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    from postwatch.subscribers import consent_lines, describe_cadence, describe_filters

    app = request.app[CONTEXT].app
    subscriber = await _subscriber(request)

    def read():
        return app.store.outbox_rows(limit=30, subscriber_id=subscriber.id), _diagnosis(app, subscriber, utcnow())

    messages, why = await db(request, "subscriber", read)
    return render(request, "subscriber.html.j2", status, title=_shown(subscriber.email), s=subscriber,
                  lines=consent_lines(subscriber), filters=describe_filters(subscriber) or "none",
                  cadence=describe_cadence(subscriber), why=why, error=error,
                  messages=messages, done=DONE.get(request.query.get("done", ""), ""))


# The preview is the digest's own HTML, served as a sandboxed document: no script runs, it is its
# own origin (no cookie of the console), its forms cannot be sent, and it loads no style or
# font from elsewhere. Its unsubscribe and preferences links carry no token (the signing secret
# is left out): any operator, a viewer too, may look, and nothing in it can act for the reader.
PREVIEW_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:"


async def subscriber_preview(request: web.Request) -> web.Response:
    from digest.sender import preview_html

    app = request.app[CONTEXT].app
    subscriber = await _subscriber(request)
    html = await db(request, "preview", lambda: preview_html(
        app.store, dataclasses.replace(app.mailer.digest_settings(), secret=b""), subscriber, utcnow(), app.sources.filters(),
        pending_only=True))
    if not html:
        return message(request, 200, "Nothing to send", f"{_shown(subscriber.email)} has no change waiting that "
                       "passes their filters: no digest would go out now.", f"/subscribers/{subscriber.id}")
    return web.Response(body=html.encode(), headers={"Content-Type": HTML, "Content-Security-Policy": PREVIEW_POLICY})


async def subscriber_action(request: web.Request) -> web.Response:
    app = request.app[CONTEXT].app
    store = app.store
    subscriber = await _subscriber(request)
    action = request.match_info["action"]
    form = request["form"]
    if action == "resubscribe":
        note = " ".join(str(form.get("note") or "").split())[:300]
        if subscriber.status not in ("unsubscribed", "suppressed"):
            return await subscriber_page(request, 409, f"Only an unsubscribed or suppressed subscriber is subscribed "
                                                       f"again; this one is {subscriber.status}. Nothing was changed.")
        if subscriber.origin == "config":
            return await subscriber_page(request, 409, "This is a route of the config file ([[routes]]): change it "
                                                       "there. Nothing was changed.")
        if len(note) < 5:
            return await subscriber_page(request, 400, "Say how they consented again (a consent note of at least "
                                                       "5 characters: when, and how they asked). Nothing was changed.")
        visitor: Visitor = request["visitor"]
        options = dict(cadence=subscriber.cadence, send_time=subscriber.send_time, timezone=subscriber.timezone,
                       weekday=subscriber.weekday, sources=subscriber.sources, include=subscriber.include,
                       exclude=subscriber.exclude, lang=subscriber.lang)
        await db(request, "resubscribe", lambda: store.add_subscriber(
            subscriber.email, resubscribe=True, consent_how=f"the operator {visitor.name} in the console: {note}", **options))
        await audit(request, "resubscribed", _shown(subscriber.email), note)
        raise web.HTTPSeeOther(f"/subscribers/{subscriber.id}?done=resubscribe")
    if action == "suppress":
        reason = str(form.get("reason") or "").strip()[:150] or "suppressed by the operator"
        await db(request, "suppress", lambda: store.suppress_subscriber(subscriber.id, f"console: {reason}"))
        await audit(request, "suppressed", _shown(subscriber.email), reason)
        raise web.HTTPSeeOther(f"/subscribers/{subscriber.id}?done=suppress")
    if action == "forget":
        if form.get("confirm") != "yes":
            raise web.HTTPSeeOther(f"/subscribers/{subscriber.id}/forget")
        await db(request, "forget", lambda: store.forget_subscriber(subscriber.email))
        await audit(request, "forgot subscriber", f"#{subscriber.id}")     # the address is not kept, not even here
        raise web.HTTPSeeOther("/subscribers?done=forget")
    raise web.HTTPNotFound()


async def forget_confirm(request: web.Request) -> web.Response:
    subscriber = await _subscriber(request)
    return render(request, "forget.html.j2", title="Forget this subscriber?", s=subscriber)


async def suppressions_page(request: web.Request) -> web.Response:
    """Bounces and suppressions: who is suppressed, why and since when; who bounces; and how many
    erased addresses are kept (as hashes) so they are not subscribed again without consent."""
    from state.suppression import DEFAULT_BOUNCE_LIMIT

    store = request.app[CONTEXT].app.store
    data = await db(request, "/suppressions", store.suppressions)
    return render(request, "suppressions.html.j2", title="Bounces and suppressions", limit=DEFAULT_BOUNCE_LIMIT, **data)


# --------------------------------------------------------------------------------------------
# Deliveries
# --------------------------------------------------------------------------------------------
OUTBOX_STATUSES = ("pending", "retrying", "failed", "sent", "cancelled")


async def deliveries(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].app.store
    channel = request.query.get("channel", "")[:20]
    status = request.query.get("status", "")
    status = status if status in OUTBOX_STATUSES else ""

    def read():
        return store.outbox_summary(), store.outbox_rows(channel or None, status or None, limit=200)

    summary, rows = await db(request, "/deliveries", read)
    retried = request.query.get("retried")
    return render(request, "deliveries.html.j2", title="Deliveries", summary=summary, rows=rows, channel=channel,
                  status=status, statuses=OUTBOX_STATUSES,
                  done=f"{retried} message{'s' * (retried != '1')} will be tried again now." if retried and retried.isdigit() else "")


async def retry(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    raw = str(request["form"].get("id") or "")
    ids = [int(raw)] if raw.isdigit() else None
    count = await db(request, "retry", lambda: ctx.app.store.retry_outbox(utcnow(), ids))
    await audit(request, "retry now", f"message {raw}" if ids else "every failed or retrying message", f"{count} messages")
    ctx.outbox_queued()
    raise web.HTTPSeeOther(f"/deliveries?retried={count}")


# --------------------------------------------------------------------------------------------
# Settings and the audit log
# --------------------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"password|secret|token|api_?key|auth", re.I)


def _masked(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _masked(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(key, v) for v in value]
    if isinstance(value, timedelta):
        from postwatch.config import format_duration

        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if value and SECRET_NAME.search(key) and not key.endswith("_env"):
        return "••••••"
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://••••••@{rest.split('@', 1)[1]}"         # credentials in a URL
    if isinstance(value, str) and re.match(r"[a-z]+://", value) and not value.startswith(("http://", "https://")):
        return _shown(value)                                          # an Apprise URL carries its token
    return value


def effective_settings(config) -> list[tuple[str, list[tuple[str, Any]]]]:
    from state import database_display_name

    sections = [("general", [("config file", str(config.path or "built-in defaults")),
                             ("database", database_display_name(config.database_url))])]
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            sections.append((spec.name, [(f.name, _masked(f.name, getattr(value, f.name))) for f in dataclasses.fields(value)]))
    sources = [(s.name, f"{s.url} ({s.kind}{', every ' + _masked('i', s.interval) if s.interval else ''})")
               for s in config.sources]
    sections.append(("sources (config file)", sources))
    sections.append(("routes", [(f"#{n + 1}", _shown(r.to)) for n, r in enumerate(config.routes)]))
    return sections


async def settings_page(request: web.Request) -> web.Response:
    from postwatch.findings import config_findings

    config = request.app[CONTEXT].app.config
    problems, dkim_line = await asyncio.get_running_loop().run_in_executor(None, config_findings, config)
    return render(request, "settings.html.j2", title="Settings", sections=effective_settings(config), problems=problems,
                  dkim_line=dkim_line, delivery=config.describe_delivery())


async def audit_page(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].app.store
    entries = await db(request, "/audit", lambda: store.audit_entries(200))
    return render(request, "audit.html.j2", title="Audit log", entries=entries)


# --------------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------------
def make_console_app(app, *, executor=None, check_requested: Callable[[], None] = lambda: None,
                     outbox_queued: Callable[[], None] = lambda: None, **_) -> web.Application:
    """The console for `app` (a postwatch.app.App). `check_requested` starts a sweep now (a
    source was asked to be checked); `outbox_queued` flushes the outbox now (released or
    retried messages)."""
    from concurrent.futures import ThreadPoolExecutor

    settings = app.config.console
    web_app = web.Application(client_max_size=MAX_FORM_BYTES, middlewares=[_security_headers, _request_head_arrived, guard])
    web_app[CONTEXT] = _Context(app=app, scheduler_running=lambda: True, warned_at={}, outbox_queued=outbox_queued,
                                executor=executor or ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="postwatch-console"))
    secret = app.config.unsubscribe_secret()
    web_app[CONSOLE] = ConsoleState(
        settings=settings, proxies=TrustedProxies(settings.trusted_proxies),
        login_csrf=CsrfGuard(hmac.new(secret, b"console-login", hashlib.sha256).digest()),
        proxy_secret=hmac.new(secret, b"console-proxy", hashlib.sha256).digest(),
        check_requested=check_requested, env=make_environment())
    router = web_app.router
    router.add_route("*", "/login", login)
    router.add_post("/logout", logout)
    router.add_get("/", dashboard)
    router.add_route("*", "/sources/new", add_source)
    router.add_get(r"/sources/{name:[^/]+}", source_page)
    router.add_post(r"/sources/{name:[^/]+}/{action:check|release|pause|resume}", source_action)
    router.add_post(r"/sources/{name:[^/]+}/settings", source_settings)
    router.add_get("/subscribers", subscribers_page)
    router.add_get(r"/subscribers/{id:\d+}", subscriber_page)
    router.add_get(r"/subscribers/{id:\d+}/forget", forget_confirm)
    router.add_get(r"/subscribers/{id:\d+}/preview", subscriber_preview)
    router.add_post(r"/subscribers/{id:\d+}/{action:suppress|forget|resubscribe}", subscriber_action)
    router.add_get("/suppressions", suppressions_page)
    router.add_get("/deliveries", deliveries)
    router.add_post("/deliveries/retry", retry)
    router.add_get("/settings", settings_page)
    router.add_get("/audit", audit_page)
    return web_app
