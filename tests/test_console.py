"""The operator's console (issue 34) against a real `postwatch run` with [console] listen set: the
sign-in and its guards over HTTP (throttling, cookie flags, session fixation, CSRF, the viewer's
403s, idle expiry), then an operator's day in Chromium (Playwright, Debian's /usr/bin/chromium):
a failing source, a held flood released, a source added after its preview, a subscriber
forgotten, signed out; screenshots at 1280 and 390 px in tests/artifacts/console/, and the
README's three (console-*.png) there too, or in $POSTWATCH_README_IMAGES (docs/images to make
them again)."""
from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from html import unescape
from pathlib import Path

import pytest

from support.harness import ENVIRONMENT, Cli, Daemon, free_port, wait_for, write_config
from postwatch.testing.replica import ReplicaPost

ADMIN_PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer password 1"
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
README_IMAGES = Path(os.environ.get("POSTWATCH_README_IMAGES") or ARTIFACTS)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Visitor:
    """A client with a cookie jar that does not follow redirects: (status, headers, body)."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def open(self, path: str, form: list | dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data)
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def sign_in(self, name: str, password: str):
        status, _, page = self.open("/login")
        assert status == 200, page
        return self.open("/login", {"csrf": hidden(page, "csrf"), "name": name, "password": password, "next": "/"})


def hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name} in the page"
    return unescape(match.group(1))


def add_operator(cli: Cli, name: str, role: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "postwatch", "--config", str(cli.config), "operators", "add", name,
                           "--role", role], input=password + "\n", capture_output=True, text=True, timeout=60,
                          env={**os.environ, **ENVIRONMENT}, cwd=cli.config.parent)


def console_setup(tmp_path, site, smtp, *, console: str = "", down_source: bool = False):
    """(cli, daemon port, console base URL): `link` on the replica checked every 2 s, and with
    `down_source` a source `downsite` whose site is down."""
    port, console_port = free_port(), free_port()
    down = (f'\n[[sources]]\nname = "downsite"\nurl = "http://127.0.0.1:{free_port()}/blog/"\nkind = "html"\n'
            f'title = "A site that is down"\ninterval = "2s"\n') if down_source else ""
    extra = f'\n[console]\nlisten = "127.0.0.1:{console_port}"\n{console}\n{down}'
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s", extra=extra)
    cli = Cli(config)
    cli("check", "link", check=True)
    for name, role, password in (("ada", "admin", ADMIN_PASSWORD), ("vic", "viewer", VIEWER_PASSWORD)):
        made = add_operator(cli, name, role, password)
        assert made.returncode == 0, made.stderr
    return cli, port, f"http://127.0.0.1:{console_port}"


@pytest.fixture
def console(tmp_path, site, smtp):
    cli, port, base = console_setup(tmp_path, site, smtp, console='idle_timeout = "3s"\nmax_failures = 3\n'
                                                                   'throttle_window = "1m"')
    with Daemon(cli, port) as daemon:
        wait_for(lambda: _answers(base), what="the console")
        yield cli, base, daemon


def _answers(base: str) -> bool:
    try:
        urllib.request.urlopen(base + "/login", timeout=2).close()
        return True
    except (OSError, urllib.error.HTTPError):
        return False


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------
def test_operators_add_list_passwd_remove(tmp_path, site, smtp):
    cli = Cli(write_config(tmp_path, site.blog_url, smtp.port))
    assert add_operator(cli, "ada", "admin", ADMIN_PASSWORD).returncode == 0
    again = add_operator(cli, "ada", "viewer", ADMIN_PASSWORD)
    assert again.returncode == 1 and "exists already" in again.stderr
    short = add_operator(cli, "bo", "viewer", "short")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    listed = cli("operators", "list", check=True).stdout
    assert re.search(r"^ada\s+admin\s+added .*never signed in", listed, re.M) and "1 operator" in listed
    helped = cli("operators", "add", "--help").stdout
    assert "Argon2id" in helped and "standard input" in helped and "--role" in helped
    changed = subprocess.run([sys.executable, "-m", "postwatch", "--config", str(cli.config), "operators", "passwd", "ada"],
                             input="another long password\n", capture_output=True, text=True, env={**os.environ, **ENVIRONMENT})
    assert changed.returncode == 0, changed.stderr
    assert cli("operators", "remove", "ada", check=True).returncode == 0
    assert cli("operators", "remove", "ada").returncode == 1


# --------------------------------------------------------------------------------------------
# Sign-in and its guards, over HTTP
# --------------------------------------------------------------------------------------------
def test_sign_in_cookie_flags_fixation_and_sign_out(console):
    cli, base, _ = console
    visitor = Visitor(base)
    status, headers, _ = visitor.open("/")
    assert status == 303 and headers["Location"] == "/login"
    # A session id planted before sign-in (fixation) is never the one signed in.
    planted = "planted-session-id-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    visitor.jar.set_cookie(http.cookiejar.Cookie(0, "pw_console", planted, None, False, "127.0.0.1", False, False, "/",
                                                 True, False, None, False, None, None, {}))
    wrong = visitor.sign_in("ada", "not the password")
    assert wrong[0] == 401 and "Wrong name or password" in wrong[2]
    status, headers, _ = visitor.sign_in("ada", ADMIN_PASSWORD)
    assert status == 303 and headers["Location"] == "/"
    cookie = next(h for h in headers.get_all("Set-Cookie") if h.startswith("pw_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie   # http: no Secure
    session = visitor.cookie("pw_console")
    assert session and session != planted and len(session) >= 43                            # 256 bits, base64
    status, _, page = visitor.open("/")
    assert status == 200 and "link" in page and "Sign out" in page
    # The session id is stored hashed only.
    import sqlite3

    with sqlite3.connect(cli.config.parent / "state.db") as db:
        stored = [row[0] for row in db.execute("SELECT id_hash FROM operator_sessions")]
        audit = [row[0] for row in db.execute("SELECT action FROM audit_log ORDER BY id")]
    assert session not in stored and len(stored) == 1
    assert "sign-in failed" in audit and "signed in" in audit
    status, headers, _ = visitor.open("/logout", {"csrf": hidden(page, "csrf")})
    assert status == 303 and headers["Location"] == "/login"
    # The old id is dead on the server, even if replayed.
    replay = Visitor(base)
    replay.jar.set_cookie(http.cookiejar.Cookie(0, "pw_console", session, None, False, "127.0.0.1", False, False, "/",
                                                True, False, None, False, None, None, {}))
    assert replay.open("/")[0] == 303


def test_throttling_after_failures_per_account_and_per_address_holds_across_a_restart(tmp_path, site, smtp):
    cli, port, base = console_setup(tmp_path, site, smtp, console='max_failures = 3\nthrottle_window = "1m"')
    with Daemon(cli, port) as daemon:
        wait_for(lambda: _answers(base), what="the console")
        visitor = Visitor(base)
        for _ in range(3):                                # max_failures = 3 in this config
            assert visitor.sign_in("ada", "wrong password!")[0] == 401
        status, headers, page = visitor.sign_in("ada", ADMIN_PASSWORD)     # even the right password waits now
        assert status == 429 and "Too many failed sign-ins" in page and 0 < int(headers["Retry-After"]) <= 61
        # The same address trying another account is throttled too (per client address).
        assert visitor.sign_in("vic", VIEWER_PASSWORD)[0] == 429
        assert daemon.stop() == 0
    # A restart forgives nothing: the failures are stored, not kept in the daemon's memory.
    with Daemon(cli, port):
        wait_for(lambda: _answers(base), what="the console after the restart")
        status, headers, page = Visitor(base).sign_in("ada", ADMIN_PASSWORD)
        assert status == 429 and "Too many failed sign-ins" in page and 0 < int(headers["Retry-After"]) <= 61


def test_csrf_and_viewer_403_change_nothing(console):
    cli, base, _ = console
    admin = Visitor(base)
    assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    # A POST without the token (or with another's) is refused, and the source is not paused.
    for form in ({}, {"csrf": "forged"}):
        status, _, page = admin.open("/sources/link/pause", form)
        assert status == 403 and "Nothing was changed" in page
    assert 'class="badge paused"' not in admin.open("/sources/link")[2]
    viewer = Visitor(base)
    assert viewer.sign_in("vic", VIEWER_PASSWORD)[0] == 303
    status, _, page = viewer.open("/sources/link")
    assert status == 200 and "Check now" not in page                       # no buttons for a viewer
    token = hidden(page, "csrf")
    posts = ["/sources/link/check", "/sources/link/release", "/sources/link/pause", "/sources/link/resume",
             "/sources/new", "/subscribers/1/suppress", "/subscribers/1/forget", "/deliveries/retry"]
    for path in posts:
        status, _, page = viewer.open(path, {"csrf": token, "confirm": "yes", "url": "http://127.0.0.1:1/",
                                             "action": "save"})
        assert status == 403 and "role viewer" in page, path
    # Unsigned POSTs too.
    assert Visitor(base).open("/sources/link/pause", {"csrf": token})[0] == 403
    assert 'class="badge paused"' not in admin.open("/")[2]
    # ...and the viewer can still sign out.
    assert viewer.open("/logout", {"csrf": token})[0] == 303


def test_idle_session_expires(console):
    _, base, _ = console
    visitor = Visitor(base)
    assert visitor.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    assert visitor.open("/")[0] == 200
    time.sleep(1.5)
    assert visitor.open("/")[0] == 200           # in use: not idle
    time.sleep(3.6)                              # idle_timeout = 3s
    status, headers, _ = visitor.open("/settings")
    assert status == 303 and headers["Location"].startswith("/login?next=")


def _from_address(base: str, source: str, path: str, headers: dict, form: dict | None = None):
    """(status, headers, body) of a request to the console sent from the local address `source`
    (127.0.0.2 is another client than 127.0.0.1 to a server on loopback, on Linux)."""
    import http.client

    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15, source_address=(source, 0))
    try:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        sent = {**headers, **({"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {})}
        connection.request("POST" if form is not None else "GET", path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def test_trusted_header_only_from_trusted_proxies(tmp_path, site, smtp):
    cli, port, base = console_setup(tmp_path, site, smtp, console='trusted_user_header = "X-Remote-User"\n'
                                                                  'trusted_proxies = ["127.0.0.1/32"]')
    with Daemon(cli, port):
        wait_for(lambda: _answers(base), what="the console")
        # From the trusted proxy: signed in as the operator it names, with that operator's role.
        status, _, page = _from_address(base, "127.0.0.1", "/", {"X-Remote-User": "ada"})
        assert status == 200 and "ada · admin" in page and "Sign out" in page
        token = hidden(page, "csrf")
        status, headers, _ = _from_address(base, "127.0.0.1", "/sources/link/pause", {"X-Remote-User": "ada"},
                                           {"csrf": token})
        assert status == 303 and headers["Location"] == "/sources/link?done=pause"
        status, _, page = _from_address(base, "127.0.0.1", "/sources/link", {"X-Remote-User": "vic"})
        assert status == 200 and "vic · viewer" in page and 'class="badge paused"' in page and "Resume" not in page
        status, _, page = _from_address(base, "127.0.0.1", "/sources/link/resume", {"X-Remote-User": "vic"},
                                        {"csrf": hidden(page, "csrf")})
        assert status == 403 and "role viewer" in page
        # A name that is no operator is refused, not signed in as anyone.
        assert _from_address(base, "127.0.0.1", "/", {"X-Remote-User": "mallory"})[0] == 403
        # The same header from another address is ignored: the sign-in page, and no change.
        status, headers, _ = _from_address(base, "127.0.0.2", "/", {"X-Remote-User": "ada"})
        assert status == 303 and headers["Location"] == "/login"
        status, _, _ = _from_address(base, "127.0.0.2", "/sources/link/resume", {"X-Remote-User": "ada"}, {"csrf": token})
        assert status == 403
        status, _, page = _from_address(base, "127.0.0.1", "/sources/link", {"X-Remote-User": "ada"})
        assert 'class="badge paused"' in page
        audit = _from_address(base, "127.0.0.1", "/audit", {"X-Remote-User": "ada"})[2]
        assert "paused" in audit and "resumed" not in audit


# --------------------------------------------------------------------------------------------
# The figures: requests and bytes today, the last check's requests, each post's versions, what
# changed today and how it was mailed
# --------------------------------------------------------------------------------------------
def _requests_table(page: str) -> list[tuple[str, str]]:
    table = re.search(r'<table class="stack requests">(.*?)</table>', page, re.S)
    assert table, "no table of the last check's requests"
    return re.findall(r'<td data-label="URL"><a href="([^"]+)".*?<td data-label="Status">(.*?)</td>', table.group(1), re.S)


def test_todays_requests_last_check_versions_and_what_was_mailed(tmp_path, site, smtp):
    cli, port, base = console_setup(tmp_path, site, smtp)
    cli("check", "--full", "link", check=True)            # every post's page read once: edits can be diffed
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    post = site.posts[2]
    site.edit_post(post.slug, body_paragraphs=["A new first paragraph about the rescue team.", "And more."])
    assert "1 updated" in cli("check", "--full", "link", check=True).stdout
    with Daemon(cli, port):
        wait_for(lambda: _answers(base), what="the console")
        admin = Visitor(base)
        assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
        # What changed today and how it was mailed: the edit, in one email sent to ada.
        wait_for(lambda: smtp.messages, what="the edit mailed")
        page = unescape(admin.open("/")[2])
        changes = re.search(r'<table class="stack changes">(.*?)</table>', page, re.S).group(1)
        row = next(r for r in changes.split("<tr>") if post.title in r)
        assert "updated" in row and re.search(r"email</a>: <span class=\"badge sent\">1 sent", row), row
        # Requests and bytes today: what the replica served, every check of the day counted
        # (the CLI's three and the daemon's). The source is paused so that no check runs between.
        token = hidden(page, "csrf")
        assert admin.open("/sources/link/pause", {"csrf": token})[0] == 303
        wait_for(lambda: _settled(site), what="no check of link running")
        page = admin.open("/")[2]
        today = re.search(r'<td data-label="Today" class="today" data-requests="(\d+)" data-bytes="(\d+)" '
                          r'data-not-modified="(\d+)">', page)
        assert today, page
        served = (len(site.requests), sum(r.body_bytes for r in site.requests), site.count(status=304))
        assert tuple(int(n) for n in today.groups()) == served and served[0] > 10 and served[2] > 0
        # The last check's requests, as the site logged them: the newest ones, in order.
        page = unescape(admin.open("/sources/link")[2])
        listed = _requests_table(page)
        assert listed and "The last check's requests" in page
        logged = site.requests[-len(listed):]
        assert [url for url, _ in listed] == [site.base_url + r.path + (f"?{r.query}" if r.query else "") for r in logged]
        for (_, shown), request in zip(listed, logged):
            assert ("304 not modified" if request.status == 304 else f">{request.status}<") in shown
        # Each post's versions: the edited post has two, the newest the current one.
        versions = re.search(rf'<tr class="post"><td data-label="Post"><a href="[^"]*{re.escape(post.slug)}[^"]*".*?</tr>',
                             page, re.S)
        assert versions and "<summary>2 versions</summary>" in versions.group(0), versions and versions.group(0)
        assert re.search(r'<td data-label="Events"><span style="display:block">updated <span class="muted">[^<]*· published · <code>', versions.group(0))
        hashes = re.findall(r"<code>([0-9a-f]{12})</code>( <span class=\"badge ok\">current</span>)?",
                            versions.group(0).split('<td data-label="Events">')[0])
        assert len({h for h, _ in hashes}) == 2 and hashes[0][1] and not hashes[1][1], hashes


def _settled(site) -> bool:
    before = len(site.requests)
    time.sleep(3)                                         # longer than the 2 s interval
    return len(site.requests) == before


def test_cluster_workers_serve_the_console_and_show_on_its_dashboard(tmp_path, smtp):
    """In cluster mode there is no `postwatch run`: the first worker to bind [console] listen
    serves the console, the second goes on without it; the dashboard shows both alive."""
    from support.cluster import ClusterTrial

    console_port = free_port()
    with ClusterTrial(tmp_path, ["127.0.0.2"], 1, smtp.port) as trial:
        config = trial.cli.config
        config.write_text(config.read_text() + f'\n[console]\nlisten = "127.0.0.1:{console_port}"\n')
        made = add_operator(trial.cli, "ada", "admin", ADMIN_PASSWORD)
        assert made.returncode == 0, made.stderr
        base = f"http://127.0.0.1:{console_port}"
        trial.start_worker()
        wait_for(lambda: _answers(base), timeout=60, what="the first worker's console")
        trial.start_worker()
        admin = Visitor(base)
        assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303

        def alive() -> list[str]:
            table = re.search(r'<table class="stack workers">(.*?)</table>', admin.open("/")[2], re.S)
            return re.findall(r'<td data-label="Worker">#(\d+) <span class="badge ok">alive</span>', table.group(1)) if table else []

        wait_for(lambda: len(alive()) == 2, timeout=60, what="two workers alive on the dashboard")
        page = admin.open("/")[2]
        assert "2 alive: a heartbeat within the last 30 s" in page and "No cluster" not in page
        # The workers check the source: its requests today show on the same dashboard.
        wait_for(lambda: int(re.search(r'data-requests="(\d+)"', admin.open("/")[2]).group(1)) > 0, timeout=60,
                 what="the workers' checks counted")
        codes = trial.stop_workers()
        assert codes == [0, 0], trial.worker_output()
        assert "no operator's console from this worker: cannot listen" in trial.worker_output()


# --------------------------------------------------------------------------------------------
# The operator's day, in Chromium
# --------------------------------------------------------------------------------------------
def _shots(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def _readme_shot(page, name: str, width: int, height: int, start: str | None = None) -> Path:
    """One of the README's images: one screen of the page (its top, or from the heading `start`),
    kept small."""
    README_IMAGES.mkdir(parents=True, exist_ok=True)
    path = README_IMAGES / f"console-{name}.png"
    page.set_viewport_size({"width": width, "height": height})
    if start:
        page.locator("h2", has_text=start).first.evaluate(
            "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 12)")
    page.screenshot(path=str(path), full_page=False)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert path.stat().st_size < 150_000, (path, path.stat().st_size)
    return path


@pytest.mark.timeout(240)
def test_an_operators_day_in_chromium(tmp_path, site, smtp):
    from playwright import sync_api      # the test extra installs it

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM} (.ci/run installs it: apt-get install chromium)")
    cli, port, base = console_setup(tmp_path, site, smtp, down_source=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    cli("subscribers", "add", "bo@example.org", "--cadence", "daily", check=True)
    # A flood: far more new posts than [crawl] flood_share of the known ones at once: held as suspect.
    site._posts[:0] = [ReplicaPost(slug=f"flood-{n}", title=f"Flood post {n}", published=date(2030, 1, 1),
                                   body_paragraphs=["A post of the flood."]) for n in range(12)]
    held = cli("check", "link")
    assert "held" in (held.stdout + held.stderr).lower(), held.stdout + held.stderr
    with Daemon(cli, port), sync_api.sync_playwright() as playwright:
        wait_for(lambda: _answers(base), what="the console")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            _sign_in_and_see_the_failing_source(page, base)
            _release_the_held_flood(page, base)
            _add_a_source_after_its_preview(page, site)
            _forget_a_subscriber(page, base)
            _look_around_and_sign_out(page, base)
        finally:
            browser.close()
    assert cli("sources", "list", check=True).stdout.count("console") == 1


def _sign_in_and_see_the_failing_source(page, base: str) -> None:
    page.goto(base + "/")
    assert page.url.endswith("/login")
    _shots(page, "login")
    page.fill("#name", "ada")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    # The source whose site is down shows as failing, with its error.
    for _ in range(60):
        if "failing since" in page.content():
            break
        time.sleep(0.5)
        page.reload()
    row = page.locator("tr", has_text="downsite").first
    assert "failing" in row.inner_text() and "held" in page.locator("tr", has_text="link").first.inner_text()
    # Requests today: the CLI's checks of link at least; no cluster; what changed today.
    assert int(page.locator("tr", has_text="link").first.locator("td.today").get_attribute("data-requests")) > 0
    assert "No cluster" in page.content() and page.locator("h2", has_text="Changed today").count() == 1
    _shots(page, "dashboard")
    _readme_shot(page, "dashboard", 1280, 800)


def _release_the_held_flood(page, base: str) -> None:
    """The held flood: its changes shown first (with the last check's requests), then released."""
    page.click("text=link")
    page.wait_for_url(base + "/sources/link")
    assert page.locator("h2", has_text="Held changes").count() == 1 and "Flood post 3" in page.content()
    assert page.locator("table.requests td[data-label=URL]").count() > 0 and "Posts and their versions" in page.content()
    _shots(page, "source-held")
    _readme_shot(page, "source-held", 390, 844, start="Held changes")
    page.click("button:has-text('Release')")
    page.wait_for_url(re.compile(r".*/sources/link\?released=\d+"))
    assert "Released 12 held changes" in page.content() and "Held changes" not in page.content()


def _add_a_source_after_its_preview(page, site) -> None:
    """A preview of what `sources test` finds, then saved."""
    page.click("nav >> text=Add source")
    page.fill("#url", site.blog_url)
    page.fill("#name", "linkcopy")
    page.click("button[value=preview]")
    page.wait_for_selector("text=What postwatch finds there")
    assert "Flood post" in page.content() and page.locator("button[value=save]").count() == 1
    _shots(page, "source-preview")
    page.click("button[value=save]")
    page.wait_for_url(re.compile(r".*/sources/linkcopy\?done=added"))
    assert "Added." in page.content()


def _forget_a_subscriber(page, base: str) -> None:
    """Found by a search, why they got nothing looked at, then forgotten through the confirmation step."""
    page.click("nav >> text=Subscribers")
    page.wait_for_url(base + "/subscribers")
    assert page.locator("#q").count() == 1, page.content()[-3000:]
    page.fill("#q", "bo@")
    page.click("button:has-text('Search')")
    _shots(page, "subscribers")
    page.click("text=bo@example.org")
    assert "Why did this reader get nothing?" in page.content()
    assert re.search(r"downsite\s+failing", page.locator("dd", has=page.locator("a", has_text="downsite")).inner_text())
    _shots(page, "subscriber")
    _readme_shot(page, "subscriber", 1280, 900)
    page.click("text=Forget…")
    assert "cannot be undone" in page.content()
    page.click("button:has-text('Forget bo@example.org')")
    page.wait_for_url(re.compile(r".*/subscribers\?done=forget"))
    assert "Erased" in page.content() and "bo@example.org" not in page.content()


def _look_around_and_sign_out(page, base: str) -> None:
    page.click("nav >> text=Deliveries")
    _shots(page, "deliveries")
    page.click("nav >> text=Settings")
    assert "test-secret" not in page.content()
    _shots(page, "settings")
    page.click("nav >> text=Audit")
    audit = page.content()
    assert "released held changes" in audit and "added source" in audit and "forgot subscriber" in audit
    _shots(page, "audit")
    page.click("button:has-text('Sign out')")
    page.wait_for_url(base + "/login")
    page.goto(base + "/deliveries")
    assert "/login" in page.url


def test_admin_pauses_resumes_and_checks_now(console):
    cli, base, _ = console
    admin = Visitor(base)
    assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    token = hidden(admin.open("/")[2], "csrf")
    status, headers, _ = admin.open("/sources/link/pause", {"csrf": token})
    assert status == 303 and headers["Location"] == "/sources/link?done=pause"
    assert 'class="badge paused"' in admin.open("/")[2]
    assert admin.open("/sources/link/resume", {"csrf": token})[0] == 303
    assert 'class="badge paused"' not in admin.open("/")[2]
    assert admin.open("/sources/link/check", {"csrf": token})[0] == 303
    assert "A check was asked for" in admin.open("/sources/link?done=check")[2]
    audit = admin.open("/audit")[2]
    assert "paused" in audit and "resumed" in audit and "check now" in audit


def test_edit_a_stored_sources_interval_and_filters(console, site):
    cli, base, _ = console
    cli("sources", "add", site.blog_url, "--name", "copy", "--no-test", check=True)
    admin = Visitor(base)
    assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    # A configured source: read-only here, and a POST changes nothing.
    status, _, page = admin.open("/sources/link")
    assert status == 200 and "set in the config file" in page and 'name="interval"' not in page
    token = hidden(page, "csrf")
    status, _, page = admin.open("/sources/link/settings", {"csrf": token, "interval": "5m"})
    assert status == 409 and "Nothing was changed" in page
    status, _, page = admin.open("/sources/copy")
    assert status == 200 and 'name="interval"' in page
    default = re.search(r"<dt>Interval</dt><dd>([^<]+)</dd>", page).group(1)
    # Bad values: the one-line problem the CLI's checks give, nothing stored.
    for form, problem in (({"interval": "soon"}, "is not a duration"),
                          ({"interval": "90d"}, "interval must be between 1s and 30d"),
                          ({"interval": "0s"}, "interval must be between 1s and 30d, not 0s"),
                          ({"include": "visa\n/(unclosed/"}, "include ")):
        status, _, page = admin.open("/sources/copy/settings", {"csrf": token, **form})
        assert status == 400 and problem in unescape(page), (form, page[-2000:])
        assert 'role="alert"' in page
    assert admin.open("/sources/copy/settings", {"interval": "5m"})[0] == 403                   # no CSRF token
    status, headers, _ = admin.open("/sources/copy/settings", {"csrf": token, "interval": "5m",
                                                               "include": "visa\r\nrefugees", "exclude": "podcast"})
    assert status == 303 and headers["Location"] == "/sources/copy?done=settings"
    page = unescape(admin.open("/sources/copy?done=settings")[2])
    assert "Saved" in page and "<dd>5m</dd>" in page and "visa\nrefugees" in page and "podcast" in page
    audit = admin.open("/audit")[2]
    assert "edited source" in audit and "interval 5m" in audit
    # Back to the defaults: empty fields.
    assert admin.open("/sources/copy/settings", {"csrf": token, "interval": "", "include": "", "exclude": ""})[0] == 303
    page = admin.open("/sources/copy")[2]
    assert f"<dt>Interval</dt><dd>{default}</dd>" in page and "podcast" not in page


def test_resubscribe_why_nothing_and_preview(console, site):
    cli, base, _ = console
    cli("subscribers", "add", "bo@example.org", "--cadence", "daily", "--exclude", "podcast", check=True)
    admin = Visitor(base)
    assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    key = re.search(r'href="/subscribers/(\d+)"', admin.open("/subscribers?q=bo%40")[2]).group(1)
    page = unescape(admin.open(f"/subscribers/{key}")[2])
    assert "Why did this reader get nothing?" in page and "Subscribe again" not in page
    assert re.search(r"<dt>Next digest</dt><dd>\d{4}-\d\d-\d\d 08:00 UTC \(in ", page), page
    assert "up to date" in page and "podcast" in page
    assert "<b>Nothing has changed for them since their last digest.</b>" in page and "every one ok" in page
    token = hidden(page, "csrf")
    # Nothing waiting: the preview says so.
    status, _, page = admin.open(f"/subscribers/{key}/preview")
    assert status == 200 and "no digest would go out now" in page
    # A new post: bo's cursor falls behind, and the preview is the digest they would get.
    site._posts.insert(0, ReplicaPost(slug="fresh-news", title="Fresh news post", published=date(2031, 1, 1),
                                      body_paragraphs=["Something new."]))
    wait_for(lambda: "1 passing their filters" in admin.open(f"/subscribers/{key}")[2], what="bo's cursor behind")
    assert re.search(r"<b>1 change waits for their next digest: \d{4}-\d\d-\d\d 08:00 UTC", admin.open(f"/subscribers/{key}")[2])
    status, headers, page = admin.open(f"/subscribers/{key}/preview")
    assert status == 200 and "Fresh news post" in page and headers["Content-Security-Policy"].startswith("sandbox")
    assert "token=" not in page and "csrf" not in page                      # no working token, no console token
    # Suppressed, then subscribed again: only with a consent note.
    assert admin.open(f"/subscribers/{key}/suppress", {"csrf": token, "reason": "complaint"})[0] == 303
    page = unescape(admin.open(f"/subscribers/{key}")[2])
    assert "console: complaint" in page and "Subscribe again" in page and "<dt>Next digest</dt><dd>none: suppressed" in page
    assert "<b>Suppressed (console: complaint): nothing is sent to this address.</b>" in page
    status, _, page = admin.open(f"/subscribers/{key}/resubscribe", {"csrf": token, "note": " "})
    assert status == 400 and "consent note" in page and 'badge suppressed' in page
    assert admin.open(f"/subscribers/{key}/resubscribe", {"note": "asked again by mail"})[0] == 403    # no CSRF token
    status, headers, _ = admin.open(f"/subscribers/{key}/resubscribe", {"csrf": token, "note": "asked again by mail on 1 Dec"})
    assert status == 303 and headers["Location"] == f"/subscribers/{key}?done=resubscribe"
    page = unescape(admin.open(f"/subscribers/{key}?done=resubscribe")[2])
    assert "Subscribed again" in page and "badge active" in page and "podcast" in page        # settings kept
    assert "re-consent by the operator ada in the console: asked again by mail on 1 Dec after the address was suppressed" in page
    # ...and once active, resubscribing again is refused.
    assert admin.open(f"/subscribers/{key}/resubscribe", {"csrf": token, "note": "once more please"})[0] == 409
    shown = cli("subscribers", "show", "bo@example.org").stdout
    assert "re-consent by the operator ada in the console" in shown
    audit = admin.open("/audit")[2]
    assert "resubscribed" in audit and "asked again by mail on 1 Dec" in audit
    viewer = Visitor(base)
    assert viewer.sign_in("vic", VIEWER_PASSWORD)[0] == 303
    assert viewer.open(f"/subscribers/{key}/resubscribe", {"csrf": hidden(viewer.open("/")[2], "csrf"),
                                                           "note": "asked again"})[0] == 403


def test_bounces_and_suppressions_page(console):
    cli, base, _ = console
    for address in ("cy@example.org", "di@example.org", "ed@example.org"):
        cli("subscribers", "add", address, check=True)
    admin = Visitor(base)
    assert admin.sign_in("ada", ADMIN_PASSWORD)[0] == 303
    status, _, page = admin.open("/suppressions")
    assert status == 200 and "No subscriber is suppressed" in page and re.search(r"<b>0</b><span>erased", page)
    ids = dict(re.findall(r'href="/subscribers/(\d+)">([^<]+)<', admin.open("/subscribers")[2]))
    ids = {address: key for key, address in ids.items()}
    token = hidden(page, "csrf")
    assert admin.open(f"/subscribers/{ids['cy@example.org']}/suppress", {"csrf": token, "reason": "spam complaint"})[0] == 303
    assert admin.open(f"/subscribers/{ids['di@example.org']}/forget", {"csrf": token, "confirm": "yes"})[0] == 303
    page = unescape(admin.open("/suppressions")[2])
    row = re.search(r"<tr><td data-label=\"Address\"><a href=\"/subscribers/\d+\">cy@example.org</a>.*?</tr>", page, re.S)
    assert row and "console: spam complaint" in row.group(0) and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", row.group(0))
    assert re.search(r"<b>1</b><span>erased", page) and "1 address erased on request is kept as a hash only" in page
    assert "di@example.org" not in page and "ed@example.org" not in page
    viewer = Visitor(base)
    assert viewer.sign_in("vic", VIEWER_PASSWORD)[0] == 303
    assert viewer.open("/suppressions")[0] == 200            # a viewer may look
