"""Signing up with double opt-in, the preferences page and the consent record: the daemon's
real HTTP server (in-process on the reactor's loop, and `postwatch run` as a subprocess), the
real aiosmtpd mail catcher, and the store on SQLite and PostgreSQL."""
from __future__ import annotations

import http.cookiejar
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from html import unescape
from pathlib import Path

import pytest

from support.harness import Cli, Daemon, free_port, wait_for, write_config

AGENT = "postwatch-test-browser/1.0"
CHECK_INBOX = "If that address can receive our email, a message with a link to confirm"


class Browser:
    """A visitor with a cookie jar: (status, headers, body) of each request, error statuses included."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path: str, form: list[tuple[str, str]] | dict | None = None, *, headers: dict | None = None):
        url = path if path.startswith("http") else self.base + path
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers={"User-Agent": AGENT, **(headers or {})})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode()


def hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name} in the page"
    return unescape(match.group(1))


def message_text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html.split("<main>", 1)[1].split("</main>", 1)[0])).split())


def signup_form(csrf: str, email: str, *, cadence: str = "daily", at: str = "08:00", tz: str = "Europe/London",
                day: str = "mon", sources=("link",), website: str = "") -> list[tuple[str, str]]:
    return [("csrf", csrf), ("email", email), ("cadence", cadence), ("at", at), ("tz", tz), ("day", day),
            *(("source", s) for s in sources), ("website", website)]


def sign_up(browser: Browser, email: str, **options):
    status, _, page = browser.open("/subscribe")
    assert status == 200
    return browser.open("/subscribe", signup_form(hidden(page, "csrf"), email, **options))


# --------------------------------------------------------------------------------------------
# The whole journey against `postwatch run`
# --------------------------------------------------------------------------------------------
def link_in(message, label: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(rf"{label}\s*(https?://\S+)", text)
    assert match, f"no {label} link in:\n{text}"
    return match.group(1)


def test_signup_confirm_digest_preferences_unsubscribe_and_no_silent_readd(tmp_path, site, smtp):
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s")
    cli = Cli(config)
    cli("check", check=True)
    with Daemon(cli, port) as daemon:
        browser = Browser(f"http://127.0.0.1:{port}")
        status, headers, page = browser.open("/subscribe")
        assert status == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        status, _, page = browser.open("/subscribe", signup_form(hidden(page, "csrf"), "Ada@Example.org",
                                                                  cadence="immediate"))
        assert status == 200 and CHECK_INBOX in message_text(page)
        shown = cli("subscribers", "show", "ada@example.org", check=True).stdout
        assert "status:               pending" in shown and "joined via:           the /subscribe page" in shown

        confirmation = wait_for(lambda: [m for m in smtp.messages if "Confirm" in str(m["Subject"])], timeout=30,
                                what="the confirmation email")[0]
        assert confirmation["To"] == "Ada@example.org" and len(smtp.messages) == 1
        link = link_in(confirmation, "press the button:")
        assert link.startswith(f"http://127.0.0.1:{port}/confirm?token=")
        status, _, page = browser.open(link)             # a scanner opening the link confirms nothing
        assert status == 200 and "Confirm my subscription" in page
        assert "status:               pending" in cli("subscribers", "show", "ada@example.org", check=True).stdout
        status, _, page = browser.open("/confirm", {"csrf": hidden(page, "csrf"), "token": hidden(page, "token")})
        assert status == 200 and "You are subscribed" in page, page
        shown = cli("subscribers", "show", "ada@example.org", check=True).stdout
        assert "status:               active" in shown
        assert "confirmed from IP:    127.0.0.1" in shown and f"confirmed by agent:   {AGENT}" in shown

        post = site.add_post("Posted after Ada confirmed", body_paragraphs=["She gets this one."])
        digest = wait_for(lambda: [m for m in smtp.messages if post.title in m.get_body(("plain",)).get_content()],
                          timeout=60, what="the digest")[0]
        preferences = link_in(digest, "Change what you get:")
        assert 'change what you get</a>' in digest.get_body(("html",)).get_content()
        status, _, page = browser.open(preferences)
        assert status == 200 and "Your preferences" in page and 'value="immediate" checked' in page
        status, _, page = browser.open("/preferences", signup_form(hidden(page, "csrf"), "", cadence="weekly",
                                                                   day="fri", at="09:30", tz="Asia/Seoul")
                                       + [("token", hidden(page, "token"))])
        assert status == 200 and "Preferences saved" in page and "Back to your preferences" in page
        assert "weekly, fri 09:30 Asia/Seoul" in cli("subscribers", "show", "ada@example.org", check=True).stdout
        back = unescape(re.search(r'<a href="([^"]+)">Back to your preferences', page).group(1))
        assert "Your preferences" in browser.open(back)[2]

        one_click = re.search(r"<(https?://[^>]+)>", str(digest["List-Unsubscribe"])).group(1)
        status, _, _ = Browser("").open(one_click, {"List-Unsubscribe": "One-Click"})
        assert status == 200
        assert daemon.stop() == 0
    assert "status:               unsubscribed" in cli("subscribers", "show", "ada@example.org", check=True).stdout
    refused = cli("subscribers", "add", "ada@example.org")
    assert refused.returncode == 1 and "unsubscribed; not re-subscribed without their consent" in refused.stderr
    # Nothing but the confirmation and the digest ever went to her.
    assert [str(m["To"]) for m in smtp.messages] == ["Ada@example.org", "Ada@example.org"]


def test_a_korean_reader_signs_up_confirms_changes_preferences_and_unsubscribes_in_korean(tmp_path, site, smtp):
    """Accept-Language: ko picks Korean on the signup page; the form's language is stored; the
    confirmation mail, the confirm, preferences and unsubscribe pages follow the subscriber's."""
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s")
    cli = Cli(config)
    cli("check", check=True)
    korean = {"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"}
    with Daemon(cli, port) as daemon:
        browser = Browser(f"http://127.0.0.1:{port}")
        status, _, page = browser.open("/subscribe", headers=korean)
        assert status == 200 and '<html lang="ko">' in page and "이메일 주소" in page and "구독하기" in page
        assert '<option value="ko" lang="ko" selected>한국어</option>' in page
        assert '<html lang="en">' in browser.open("/subscribe", headers={"Accept-Language": "en-GB,fr;q=0.8"})[2]
        status, _, page = browser.open("/subscribe", signup_form(hidden(page, "csrf"), "kim@example.org") + [("lang", "ko")],
                                       headers=korean)
        assert status == 200 and "받은편지함을 확인해 주세요" in page
        confirmation = wait_for(lambda: list(smtp.messages), timeout=30, what="the confirmation email")[0]
        assert str(confirmation["Subject"]) == "postwatch 구독을 확인해 주세요"
        text = confirmation.get_body(("plain",)).get_content()
        assert "매일 08:00 (Europe/London)" in " ".join(text.split()) and "버튼을 눌러 주세요" in text and re.search(r"\d{4}년 \d+월 \d+일", text)
        link = re.search(r"(http://\S+/confirm\?token=\S+)", text).group(1)
        status, _, page = browser.open(link)                        # no Accept-Language: the subscriber's language
        assert status == 200 and '<html lang="ko">' in page and "구독 확인</button>" in page
        status, _, page = browser.open("/confirm", {"csrf": hidden(page, "csrf"), "token": hidden(page, "token")})
        assert status == 200 and "구독이 완료되었습니다" in page
        preferences = unescape(re.search(r'<a href="([^"]+)">구독 설정', page.replace("받는 내용 바꾸기", "구독 설정")).group(1))
        status, _, page = browser.open(preferences)
        assert status == 200 and "구독 설정" in page and "받는 주기" in page and '<html lang="ko">' in page
        status, _, page = browser.open("/preferences", signup_form(hidden(page, "csrf"), "", cadence="weekly", day="fri")
                                       + [("token", hidden(page, "token")), ("lang", "ko")])
        assert status == 200 and "설정을 저장했습니다" in page and "매주 금요일 08:00 (Europe/London)" in page
        assert daemon.stop() == 0
    from state import Store

    store = Store(str(tmp_path / "state.db"))
    try:
        kim = store.get_subscriber("kim@example.org")
        assert (kim.lang, kim.cadence) == ("ko", "weekly")
        from digest import unsubscribe as pages
        from digest.compose import unsubscribe_url
        from digest.settings import DigestSettings
        from support.harness import ENVIRONMENT

        settings = DigestSettings(secret=ENVIRONMENT["POSTWATCH_SECRET"].encode())
        token = unsubscribe_url(kim, settings).split("token=", 1)[1]
        status, _, body = pages.handle("GET", urllib.parse.unquote(token), store, settings)
        assert status == 200 and '<html lang="ko">' in body.decode() and "수신을 거부하시겠습니까?" in body.decode()
        status, _, body = pages.handle("GET", "1.forged", store, settings, "ko")
        assert status == 403 and "유효하지 않은 링크" in body.decode()
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# The pages in-process: the endpoint on the reactor's loop, the store beside it
# --------------------------------------------------------------------------------------------
def serve(tmp_path, **config_options):
    """The endpoint in-process on the reactor's loop: (app, base URL, stop)."""
    from crawler.runtime import run
    from postwatch.app import App
    from postwatch.config import Config, SourceConfig
    from postwatch.web import WebEndpoint

    config = Config(path=tmp_path / "postwatch.toml", database="state.db",
                    sources=[SourceConfig(name="link", url="https://libertyinnorthkorea.org/blog", title="Liberty in North Korea"),
                             SourceConfig(name="dailynk", url="https://www.dailynk.com/english/", title="Daily NK")])
    for section, values in config_options.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    app = App.open(config)
    endpoint = WebEndpoint(app, "127.0.0.1", 0)
    run(endpoint.start)

    def stop():
        run(endpoint.stop)
        app.close()

    return app, f"http://{endpoint.address}", stop


@pytest.fixture
def web(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTWATCH_SECRET", "test-secret-for-signing-links")
    # Every answer waits [signup] answer_after (250 ms) so that none tells a known address from a
    # new one (tests/test_signup_limits.py measures that); here a 10 ms floor keeps 50 signups short.
    app, base, stop = serve(tmp_path, signup={"answer_after": timedelta(milliseconds=10)})
    try:
        yield app, base
    finally:
        stop()


def test_an_operators_template_replaces_the_page_and_stays_in_the_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTWATCH_SECRET", "test-secret-for-signing-links")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "subscribe.html.j2").write_text('{% extends "page.html.j2" %}{% block content %}<p>Join the LiNK '
                                                 'newsletter</p>{% include "_settings_fields.html.j2" %}{% endblock %}')
    (templates / "message.html.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    app, base, stop = serve(tmp_path, digest={"templates_dir": templates})
    try:
        status, _, page = Browser(base).open("/subscribe")
        assert status == 200 and "Join the LiNK newsletter" in page and 'name="cadence"' in page
        status, _, page = Browser(base).open("/confirm?token=x")     # answered with the operator's message.html.j2
        assert status == 500 and "the operator has been told" in page and "subclasses" not in page
    finally:
        stop()


def confirmation_link(app, email: str) -> str:
    from postwatch.signup import confirm_link

    return confirm_link(app.config, app.store.get_subscriber(email))[0].replace(app.config.page_url(""), "")


def test_a_form_without_a_valid_csrf_token_is_refused_and_stores_nothing(web):
    app, base = web
    browser = Browser(base)
    status, _, page = browser.open("/subscribe")
    good = hidden(page, "csrf")
    for form in (signup_form("", "a@example.org"), signup_form(good[:-2] + "xx", "b@example.org"),
                 [pair for pair in signup_form(good, "c@example.org") if pair[0] != "csrf"]):
        status, headers, page = browser.open("/subscribe", form)
        assert status == 403 and "This form has expired" in page and headers["Referrer-Policy"] == "no-referrer"
    # The right token without its cookie (another site's form posting here) is refused too.
    status, _, _ = Browser(base).open("/subscribe", signup_form(good, "d@example.org"))
    assert status == 403
    assert app.store.list_subscribers() == [] and app.store.outbox_stats()["pending"] == 0
    assert sign_up(browser, "e@example.org")[0] == 200 and len(app.store.list_subscribers()) == 1


def test_fifty_signups_from_one_ip_in_a_minute_are_rate_limited(web):
    app, base = web
    browser = Browser(base)
    started = time.monotonic()
    statuses = [sign_up(browser, f"reader{n}@example.org")[0] for n in range(50)]
    assert time.monotonic() - started < 60
    limit = app.config.signup.per_ip
    # Past the limit the answer is that of any signup (issue 29): it tells nobody what to change.
    assert set(statuses) == {200}
    assert len(app.store.list_subscribers(status="pending")) == limit
    assert app.store.outbox_stats()["pending"] == limit


def test_the_honeypot_stores_nothing_and_answers_like_any_signup(web):
    app, base = web
    status, _, bot = sign_up(Browser(base), "bot@example.org", website="http://spam.example")
    status2, _, person = sign_up(Browser(base), "person@example.org")
    assert status == status2 == 200 and message_text(bot) == message_text(person)
    assert [s.email for s in app.store.list_subscribers()] == ["person@example.org"]


def test_the_answer_is_the_same_for_a_new_a_pending_and_an_active_address(web):
    app, base = web
    app.store.add_subscriber("active@example.org")
    answers = [sign_up(Browser(base), email) for email in ("new@example.org", "new@example.org", "active@example.org")]
    assert {a[0] for a in answers} == {200}
    assert answers[0][2] == answers[1][2] == answers[2][2]          # byte for byte
    # One confirmation, to the new address; none to the pending one again, none to the active one.
    assert app.store.outbox_stats()["pending"] == 1
    assert app.store.get_subscriber("active@example.org").cadence == "daily"


def test_an_expired_or_tampered_confirmation_link_changes_nothing(web):
    app, base = web
    long_ago = datetime.now(timezone.utc) - timedelta(days=8)
    from postwatch.signup import read_form

    for email, when in (("late@example.org", long_ago), ("tampered@example.org", datetime.now(timezone.utc))):
        form = read_form(app.config, {"email": email, "cadence": "daily", "at": "08:00", "tz": "UTC", "source": ["link"]},
                         ["link", "dailynk"], with_email=True)
        app.store.request_signup(form.email, now=when, **form.options)
    browser = Browser(base)
    status, _, page = browser.open(confirmation_link(app, "late@example.org"))
    assert status == 410 and "This link has expired" in page and "Sign up again" in page
    link = confirmation_link(app, "tampered@example.org")
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    status, _, page = browser.open(forged)
    assert status == 403 and "Link not valid" in page
    other = link.replace("token=", "token=999")
    assert browser.open(other)[0] == 403
    assert {s.email: s.status for s in app.store.list_subscribers()} == {"late@example.org": "pending",
                                                                        "tampered@example.org": "pending"}
    status, _, page = browser.open(link)
    assert status == 200 and "Confirm my subscription" in page


def test_pages_carry_the_security_headers(web):
    app, base = web
    browser = Browser(base)
    for path in ("/subscribe", "/confirm?token=1.2.x", "/preferences?token=1.x", "/healthz", "/no-such-page"):
        _, headers, _ = browser.open(path)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer" and headers["X-Content-Type-Options"] == "nosniff", path


def test_an_unsubscribed_address_signing_up_again_is_re_consent_only_when_it_confirms(web):
    app, base = web
    subscriber = app.store.add_subscriber("back@example.org")
    app.store.unsubscribe(subscriber.id)
    browser = Browser(base)
    assert sign_up(browser, "back@example.org", cadence="weekly", day="sat")[0] == 200
    waiting = app.store.get_subscriber("back@example.org")
    assert waiting.status == "unsubscribed" and waiting.signup_at is not None and waiting.consent_note is None
    assert app.store.outbox_stats()["pending"] == 1          # the confirmation, and nothing else
    link = confirmation_link(app, "back@example.org")
    status, _, page = browser.open(link)
    form = {"csrf": hidden(page, "csrf"), "token": hidden(page, "token")}
    status, _, page = browser.open("/confirm", form)
    assert status == 200 and "You are subscribed" in page
    back = app.store.get_subscriber("back@example.org")
    assert back.status == "active" and back.cadence == "weekly" and back.confirm_ip == "127.0.0.1"
    assert back.consent_note == "re-consent by confirmation link after the address was unsubscribed"
    # The link is spent: opened or posted again, it confirms nothing and changes nothing.
    assert browser.open(link)[0] == 403
    status, _, page = browser.open("/confirm", form)
    assert status == 403 and "Link not valid" in page
    assert app.store.get_subscriber("back@example.org").confirmed_at == back.confirmed_at


def test_a_forgotten_address_comes_back_only_through_its_confirmation_link(web):
    app, base = web
    app.store.add_subscriber("gone@example.org")
    assert app.store.forget_subscriber("gone@example.org")
    from state import NeedsConsent

    with pytest.raises(NeedsConsent):
        app.store.add_subscriber("gone@example.org")
    browser = Browser(base)
    assert sign_up(browser, "gone@example.org")[0] == 200
    assert app.store.get_subscriber("gone@example.org").status == "pending" and app.store.is_forgotten("gone@example.org")
    status, _, page = browser.open(confirmation_link(app, "gone@example.org"))
    browser.open("/confirm", {"csrf": hidden(page, "csrf"), "token": hidden(page, "token")})
    back = app.store.get_subscriber("gone@example.org")
    assert back.status == "active" and "erased on request" in back.consent_note
    assert not app.store.is_forgotten("gone@example.org")


def test_an_unconfirmed_signup_is_reminded_once_and_then_expires(web):
    app, base = web
    assert sign_up(Browser(base), "slow@example.org")[0] == 200
    subscriber = app.store.get_subscriber("slow@example.org")
    start = subscriber.signup_at
    assert app.housekeeping(start + timedelta(days=1))["reminded"] == 0
    assert app.housekeeping(start + timedelta(days=3))["reminded"] == 1
    assert app.housekeeping(start + timedelta(days=4))["reminded"] == 0
    assert app.housekeeping(start + timedelta(days=6, hours=23))["reminded"] == 0
    assert app.store.outbox_stats()["pending"] == 2                 # the confirmation and one reminder
    assert app.housekeeping(start + timedelta(days=8))["expired"] == 1
    assert app.store.get_subscriber("slow@example.org") is None
    assert app.store.outbox_stats()["pending"] == 0


def test_the_preferences_page_refuses_an_unsubscribe_token_and_a_wrong_source(web):
    from digest.compose import preferences_url, unsubscribe_url

    app, base = web
    subscriber = app.store.add_subscriber("pref@example.org")
    settings = app.mailer.digest_settings()
    browser = Browser(base)
    wrong = unsubscribe_url(subscriber, settings).split("?", 1)[1]
    assert browser.open(f"/preferences?{wrong}")[0] == 403
    status, _, page = browser.open(preferences_url(subscriber, settings).replace(app.config.page_url(""), ""))
    assert status == 200
    status, _, page = browser.open("/preferences", signup_form(hidden(page, "csrf"), "", sources=("nosuch",))
                                   + [("token", hidden(page, "token"))])
    assert status == 400 and "Choose at least one of the sources listed." in page
    assert app.store.get_subscriber("pref@example.org").sources is None


def test_the_pages_answer_503_and_store_nothing_while_the_database_is_away(tmp_path, pg_database, monkeypatch):
    from crawler.runtime import run
    from postwatch.app import App
    from postwatch.config import Config, SourceConfig
    from support.harness import PG_SERVER
    from postwatch.web import WebEndpoint
    from test_web import refuse_connections

    monkeypatch.setenv("POSTWATCH_SECRET", "test-secret-for-signing-links")
    app = App.open(Config(path=tmp_path / "postwatch.toml", database=f"{PG_SERVER}/{pg_database}",
                          sources=[SourceConfig(name="link", url="https://libertyinnorthkorea.org/blog")]))
    endpoint = WebEndpoint(app, "127.0.0.1", 0)
    run(endpoint.start)
    try:
        browser = Browser(f"http://{endpoint.address}")
        status, _, page = browser.open("/subscribe")
        assert status == 200
        refuse_connections(pg_database, True)
        status, headers, answer = browser.open("/subscribe", signup_form(hidden(page, "csrf"), "away@example.org"))
        assert status == 503 and "try the link again" in answer and headers["Retry-After"] == "300"
        for path in ("/subscribe", "/confirm?token=1.9999999999.abc", "/preferences?token=1.abc"):
            assert browser.open(path)[0] == 503, path
        refuse_connections(pg_database, False)
        wait_for(lambda: browser.open("/subscribe")[0] == 200, timeout=20, what="/subscribe after the database is back")
        assert app.store.list_subscribers() == []
    finally:
        run(endpoint.stop)
        app.close()


def test_remind_after_must_be_shorter_than_confirm_within():
    from postwatch.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config({"signup": {"remind_after": "7d", "confirm_within": "3d"}})
    assert "[signup] remind_after (7d) must be shorter than confirm_within (3d)" in str(refused.value)
    assert parse_config({"signup": {"per_ip": 50}}).signup.per_ip == 50


# --------------------------------------------------------------------------------------------
# The store's consent rules on SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------
def test_signups_confirmations_and_forgetting_on_both_databases(store):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    options = dict(cadence="daily", send_time="08:00", timezone="UTC", weekday=None, sources=None)
    first = store.request_signup("pat@example.org", now=now, **options)
    assert first.outcome == "new" and first.confirm.status == "pending" and first.confirm.joined_via == "page"
    assert store.request_signup("pat@example.org", now=now + timedelta(hours=1), **options).outcome == "waiting"
    assert store.list_subscribers(active_only=True) == []
    assert store.claim_reminders(now + timedelta(days=2), timedelta(days=2)) != []
    assert store.claim_reminders(now + timedelta(days=3), timedelta(days=2)) == []
    active = store.confirm_signup(first.confirm.id, now + timedelta(days=1), ip="203.0.113.9", user_agent="UA")
    assert active.status == "active" and active.confirmed_at == now + timedelta(days=1) and active.confirm_ip == "203.0.113.9"
    assert store.confirm_signup(first.confirm.id, now, ip=None, user_agent=None) is None
    assert store.request_signup("pat@example.org", now=now, **options).outcome == "active"
    assert store.forget_subscriber("pat@example.org", now)
    assert store.get_subscriber("pat@example.org") is None and store.is_forgotten("PAT@example.org")
    result = store.import_subscribers([{"email": "pat@example.org", **{k: v for k, v in options.items()}}])
    assert result.refused and not result.committed
    assert store.request_signup("pat@example.org", now=now, **options).outcome == "returning"
    assert store.expire_signups(now + timedelta(days=8)) == 1 and store.get_subscriber("pat@example.org") is None


def test_migrations_0007_to_head_go_down_and_up_on_both_databases(store):
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import inspect

    from state.database import MIGRATIONS

    assert store.head_revision() == "0019" and store.schema_revision() == "0019"
    store.add_subscriber("kept@example.org")

    def alembic(step, revision):
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.connect() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
            if connection.in_transaction():
                connection.commit()

    def columns(table="subscribers"):
        return {c["name"] for c in inspect(store.engine).get_columns(table)}

    alembic(command.downgrade, "0006")
    assert store.schema_revision() == "0006" and "confirmed_at" not in columns()
    assert "forgotten_addresses" not in inspect(store.engine).get_table_names()
    assert "page_checked_at" not in columns("posts") and "discovered_feed_url" not in columns("sources")
    assert "reader" not in columns("post_versions")
    alembic(command.upgrade, "head")
    assert "reader" in columns("post_versions")
    assert store.schema_revision() == "0019" and {"joined_via", "confirm_ip", "consent_note"} <= columns()
    assert "page_checked_at" in columns("posts") and "discovered_feed_url" in columns("sources")
    kept = store.get_subscriber("kept@example.org")
    assert kept.status == "active" and kept.joined_via is None      # rows from before 0007: not recorded
