"""Accessibility (issue 33): axe-core, run in a real browser (Debian's headless Chromium driven by
Playwright, never `playwright install`), over the digest's HTML (English and Korean, light and
dark, a big digest with edits, a removal and one-line posts) and over every page `postwatch run`
serves: the signup, confirm, preferences and unsubscribe pages, the archive's index, source and
digest pages, the front page, and the operator console's sign-in page and dashboard.

The bar: no violation axe rates "serious" or "critical" (contrast, names of links and form
fields, `lang`, list and table structure, ...). axe's "moderate" best-practice findings (the
digest has no `main` landmark: a mail is shown inside the client's own page, which has one) are
kept in the report but do not fail.

axe-core is vendored (tests/support/axe/, MPL-2.0, version in its README) and injected into each
page, so the test needs no network. Each page's findings are written to
tests/artifacts/a11y/axe-report.json; the digest's screenshots (375 and 800 px, light and dark,
English and Korean) to tests/artifacts/a11y/."""
from __future__ import annotations

import dataclasses
import json
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from digest.compose import build_message
from support.harness import Cli, Daemon, free_port, wait_for, write_config
from postwatch.testing.mailcatcher import MailCatcher
from postwatch.testing.replica import BlogReplica

HERE = Path(__file__).resolve().parent
AXE = HERE / "support" / "axe" / "axe.min.js"
ARTIFACTS = HERE / "artifacts" / "a11y"
CHROMIUM = "/usr/bin/chromium"
FAILING = ("serious", "critical")
ADMIN_PASSWORD = "correct horse battery"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api           # in the test extra: a missing one is an error, not a skip
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is needed for this test ({CHROMIUM}; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def report():
    """Every page's axe findings, by name; written out as a test artifact at the end."""
    found: dict[str, list] = {}
    yield found
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "axe-report.json").write_text(json.dumps(found, indent=1, ensure_ascii=False), encoding="utf-8")


def axe(page) -> list[dict]:
    """axe-core's violations on the page as it stands: [{id, impact, help, nodes: [target, summary]}]."""
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    return page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary])}));
    }""")


def check(page, name: str, report: dict) -> list[dict]:
    """axe over `page`; its findings kept in the report; the serious and critical ones returned."""
    violations = axe(page)
    report[name] = violations
    return [v for v in violations if v["impact"] in FAILING]


def _summary(failing: dict[str, list]) -> str:
    return "\n".join(f"{name}: {v['id']} ({v['impact']}, {len(v['nodes'])} nodes): {v['help']}; "
                     f"{v['nodes'][0][0]}: {' '.join(v['nodes'][0][1].split())[:300]}"
                     for name, violations in failing.items() for v in violations)


# --------------------------------------------------------------------------------------------
# The digest's HTML
# --------------------------------------------------------------------------------------------
def _edit(n: int) -> dict:
    return {"title": {"old": f"Old title {n}", "new": f"Edited post {n}"}, "truncated": True, "paragraphs": [
        {"op": "changed", "text": "Twelve refugees reached safety this spring.",
         "words": [["delete", "Twelve"], ["insert", "Fifteen"], ["equal", " refugees reached safety this spring."]]},
        {"op": "added", "text": "An update on the year's rescues and what comes next."},
        {"op": "removed", "text": "A paragraph that is no longer on the page."},
        {"op": "moved", "text": "A heading that moved."}]}


def big_digest(lang: str) -> str:
    """The HTML part of a 165 new + 5 updated + 1 removed digest (summary, full posts, one-line
    posts, "And N more"), as mailed to a reader of `lang`."""
    from digests import NOW, SETTINGS, Reader, event

    events = [event(n) for n in range(1, 166)]
    events += [event(1000 + n, kind="updated", title=f"Edited post {n}", diff=_edit(n)) for n in range(5)]
    events += [event(2000, kind="removed", title="A removed post")]
    reader = dataclasses.replace(Reader(), lang=lang)
    message = message_from_bytes(build_message(reader, events, SETTINGS, NOW).raw, policy=policy.default)
    return message.get_body(("html",)).get_content()


def test_the_digest_has_no_serious_violation_in_english_and_korean_light_and_dark(browser, report):
    failing = {}
    for lang in ("en", "ko"):
        html = big_digest(lang)
        assert f'<html lang="{lang}">' in html
        for scheme in ("light", "dark"):
            context = browser.new_context(color_scheme=scheme, viewport={"width": 800, "height": 900})
            try:
                page = context.new_page()
                page.set_content(html)
                if scheme == "light":
                    # "Read more" says which post it opens: its accessible name carries the title.
                    names = page.eval_on_selector_all("a.read-more", "links => links.map(a => a.getAttribute('aria-label'))")
                    assert len(names) >= 10 and len(set(names)) == len(names), names
                    assert all(re.fullmatch(r"(Read more|더 읽기): \S.*", name) for name in names), names[:3]
                found = check(page, f"digest-{lang}-{scheme}", report)
                if found:
                    failing[f"digest-{lang}-{scheme}"] = found
            finally:
                context.close()
    assert not failing, _summary(failing)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_digest_screenshots_at_phone_and_desktop_width_light_and_dark(browser, lang):
    """The big digest at 375 and 800 px, light and dark: kept in tests/artifacts/a11y/ for a
    person to look at; here, every one has no sideways scroll and its text is not the page's
    background colour."""
    html = big_digest(lang)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (375, 800):
        for scheme in ("light", "dark"):
            context = browser.new_context(color_scheme=scheme, viewport={"width": width, "height": 1400})
            try:
                page = context.new_page()
                page.set_content(html)
                shot = ARTIFACTS / f"digest-{lang}-{width}px-{scheme}.png"
                page.screenshot(path=str(shot), full_page=False)
                measured = page.evaluate("""() => {
                    const style = e => getComputedStyle(e);
                    const container = document.querySelector('.container');
                    return {scroll: document.documentElement.scrollWidth, view: window.innerWidth,
                            height: document.documentElement.scrollHeight,
                            text: style(container).color, background: style(container).backgroundColor,
                            link: style(document.querySelector('.post h3 a')).color};
                }""")
            finally:
                context.close()
            assert measured["scroll"] <= measured["view"], (lang, width, scheme, measured)
            assert measured["text"] != measured["background"] and measured["link"] != measured["background"], measured
            if scheme == "dark":
                assert measured["background"] == "rgb(28, 28, 26)", measured
            assert shot.stat().st_size > 10_000
            print(f"digest {lang} {width}px {scheme}: {measured['height']} px tall, {shot.name}")


# --------------------------------------------------------------------------------------------
# Every page `postwatch run` serves, and the console's
# --------------------------------------------------------------------------------------------
def _link(message, label: str) -> str:
    text = message.get_body(("plain",)).get_content()
    match = re.search(rf"{label}:?\s*(https?://\S+)", text)
    assert match, f"no {label} link in:\n{text}"
    return match.group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`postwatch run` with the console on over a database with changes (2 new, 1 edit, 1
    removal) and a digest mailed of them to an English and a Korean reader: (site base, console
    base, {lang: digest message}, smtp)."""
    from test_console import add_operator
    from test_feeds import make_changes

    folder = tmp_path_factory.mktemp("a11y")
    with BlogReplica() as site, MailCatcher(folder / "received") as smtp:
        port, console_port = free_port(), free_port()
        cli = Cli(write_config(folder, site.blog_url, smtp.port, listen_port=port,
                               extra=f'\n[console]\nlisten = "127.0.0.1:{console_port}"\n'))
        cli("check", check=True)
        cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
        cli("subscribers", "add", "min@example.org", "--cadence", "immediate", "--lang", "ko", check=True)
        make_changes(cli, site)
        cli("digest", check=True)
        digests = {str(m["To"]): m for m in smtp.messages}
        made = add_operator(cli, "ada", "admin", ADMIN_PASSWORD)
        assert made.returncode == 0, made.stderr
        with Daemon(cli, port):
            console = f"http://127.0.0.1:{console_port}"
            wait_for(lambda: _answers(console + "/login"), what="the console")
            yield (f"http://127.0.0.1:{port}", console,
                   {"en": digests["ada@example.org"], "ko": digests["min@example.org"]}, smtp)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_every_page_the_daemon_serves_has_no_serious_violation(browser, report, served, lang):
    base, _, digests, smtp = served
    digest = digests[lang]
    failing: dict[str, list] = {}
    # The language as a browser sends it (Accept-Language); the reader's own pages follow the reader's.
    context = browser.new_context(locale="ko-KR" if lang == "ko" else "en-GB", bypass_csp=True,
                                  viewport={"width": 800, "height": 900})

    def visit(name: str, url: str | None = None) -> None:
        if url:
            page.goto(url)
        assert page.evaluate("document.documentElement.lang") == lang, (name, page.url)
        # Light, then dark (the pages follow prefers-color-scheme): contrast is checked in both.
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            found = check(page, f"{name}-{lang}-{scheme}", report)
            if found:
                failing[f"{name}-{lang}-{scheme}"] = found
            page.screenshot(path=str(ARTIFACTS / f"page-{name}-{lang}-{scheme}.png"), full_page=True)
        page.emulate_media(color_scheme="light")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page = context.new_page()
        visit("home", f"{base}/")
        visit("archive-index", f"{base}/archive/")
        visit("archive-source", f"{base}/archive/link/")
        visit("archive-digest", _link(digest, "View in browser" if lang == "en" else "브라우저에서 보기"))
        visit("subscribe", f"{base}/subscribe")
        # A signup with an error shown, then one that goes through.
        page.fill("#email", "not an address")
        page.click("button[type=submit]")
        visit("subscribe-error")
        page.fill("#email", f"new-{lang}@example.org")
        page.click("button[type=submit]")
        visit("subscribe-sent")
        confirmation = wait_for(lambda: [m for m in smtp.messages if str(m["To"]) == f"new-{lang}@example.org"],
                                what="the confirmation mail")[0]
        visit("confirm", re.search(r"(https?://\S+/confirm\?token=\S+)", confirmation.get_body(("plain",)).get_content()).group(1))
        page.click("button[type=submit]")
        visit("confirmed")
        visit("preferences", _link(digest, "Change what you get" if lang == "en" else r"받는 내용 바꾸기"))
        page.click("form button[type=submit]")
        visit("preferences-saved")
        visit("unsubscribe", _link(digest, "Unsubscribe" if lang == "en" else "수신 거부"))
    finally:
        context.close()
    assert not failing, _summary(failing)


def test_the_console_sign_in_and_dashboard_have_no_serious_violation(browser, report, served):
    _, console, _, _ = served
    failing: dict[str, list] = {}
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(console + "/login")
        for name in ("console-login", "console-dashboard"):
            if name == "console-dashboard":
                page.fill("#name", "ada")
                page.fill("#password", ADMIN_PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(console + "/")
            assert page.evaluate("document.documentElement.lang")
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                found = check(page, f"{name}-{scheme}", report)
                if found:
                    failing[f"{name}-{scheme}"] = found
                page.screenshot(path=str(ARTIFACTS / f"{name}-{scheme}.png"), full_page=True)
            page.emulate_media(color_scheme="light")
    finally:
        context.close()
    assert not failing, _summary(failing)
