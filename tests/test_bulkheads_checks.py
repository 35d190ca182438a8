"""Bulkheads on the check side (issue 29): a site that drips its answer, text no parser accepts
and a check that crashes stay with their own source, through `postwatch run` as a subprocess
against real servers (a replica per source, a real SMTP server)."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

from hypothesis import given, settings, strategies as st

from support.harness import Cli, Daemon, free_port, get, wait_for
from postwatch.testing.replica import BlogReplica, generate_posts
from state.normalize import normalize, paragraphs_of, site_text

TIMEOUT = 2           # [crawl] timeout: the whole of one exchange
GRACE = 2             # [daemon] shutdown_grace


def config(folder: Path, sources: dict[str, str], smtp_port: int, port: int, *, interval: str, extra: str = "") -> Path:
    blocks = "".join(f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\nkind = "link"\ninterval = "{interval}"\n'
                     for name, url in sources.items())
    path = folder / "postwatch.toml"
    path.write_text(f'''database = "state.db"

[crawl]
jitter = "0s"
download_delay = 0
autothrottle = false
timeout = {TIMEOUT}
retries = 1
removal_confirm_after = "0s"
{blocks}
[digest]
from = "postwatch <digest@postwatch.test>"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[daemon]
listen = "127.0.0.1:{port}"
shutdown_grace = "{GRACE}s"
outbox_every = "5s"
{extra}
''', encoding="utf-8")
    return path


class DripReplica(BlogReplica):
    """A blog whose listing, once `dripping`, answers a conditional GET with its headers and then
    one body byte a second (for a minute), as a struggling host or a slowloris proxy does."""

    dripping = False
    drip_prefix = "/blog"
    conditional_only = True     # False: every request for drip_prefix drips, a first fetch too

    def _handle(self, handler, head: bool = False) -> None:
        conditional = "If-None-Match" in handler.headers or "If-Modified-Since" in handler.headers
        if not (self.dripping and (conditional or not self.conditional_only)
                and handler.path.startswith(self.drip_prefix) and not head):
            return super()._handle(handler, head)
        with self._lock:
            self.requests.append(entry := _logged(handler))
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", "60")
        handler.end_headers()
        try:
            for _ in range(60):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(1)
        except OSError:
            pass
        entry.finished = time.time()

    def dripping_now(self) -> bool:
        with self._lock:
            return any(r.finished is None and r.path.startswith(self.drip_prefix) for r in self.requests)


def _logged(handler):
    from postwatch.testing.replica import LoggedRequest

    return LoggedRequest("GET", handler.path, "", dict(handler.headers), 200, 60, time.time())


def plain_text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_a_dripping_site_holds_no_other_source_health_answers_and_sigterm_ends_the_daemon(tmp_path, smtp):
    with BlogReplica(generate_posts(4), url_variants=False) as normal, \
            DripReplica(generate_posts(3), url_variants=False, host="127.0.0.2") as drip:
        port = free_port()
        interval = 5
        cli = Cli(config(tmp_path, {"normal": normal.blog_url, "drip": drip.blog_url}, smtp.port, port,
                         interval=f"{interval}s"))
        cli("check", check=True)
        cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
        drip.dripping = True
        with Daemon(cli, port) as daemon:
            wait_for(drip.dripping_now, timeout=15, what="the drip site's listing being dripped")
            post = normal.add_post("Bulkheads: a new rescue", body_paragraphs=["Nine people reached safety."])
            added = time.monotonic()
            started = time.monotonic()
            status, _ = get(f"http://127.0.0.1:{port}/healthz")
            assert time.monotonic() - started < 2, "/healthz took 2 s or more"
            assert status in (200, 503)
            # Within one interval plus one outbox period, however the checks of the drip site go.
            wait_for(lambda: any(post.title in plain_text(m) for m in smtp.messages), timeout=interval + 5,
                     what="the normal source's new post mailed")
            print(f"\nnew post of the normal source mailed {time.monotonic() - added:.1f}s after it was added")

            wait_for(drip.dripping_now, timeout=15, what="the drip site's listing being dripped again")
            daemon.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = daemon.process.wait(timeout=GRACE + TIMEOUT + 8)
            took = time.monotonic() - started
            print(f"SIGTERM to exit while a site drips: {took:.1f}s")
            assert code == 0
            assert took <= GRACE + TIMEOUT + 3, took
        assert "drip" in cli("status").stdout


def test_scrapy_download_timeout_bounds_a_dripping_robots_txt_and_listing(tmp_path):
    """What the lean client leaves to the crawl is bounded too: Scrapy's DOWNLOAD_TIMEOUT is a
    total timeout (measured: 7.2 s for a first check whose robots.txt drips, 5.6 s for a full sweep
    whose listing drips; each drip would last 60 s)."""
    tries = 2           # retries = 1
    bound = tries * TIMEOUT + 8         # + the command's start (Scrapy's imports) on a loaded machine
    with DripReplica(generate_posts(3), url_variants=False) as drip:
        cli = Cli(config(tmp_path, {"drip": drip.blog_url}, free_port(), free_port(), interval="5s"))
        drip.drip_prefix, drip.conditional_only, drip.dripping = "/robots.txt", False, True
        started = time.monotonic()
        first = cli("check")
        assert time.monotonic() - started < bound and first.returncode == 1, first.stderr
        drip.dripping = False
        cli("check", check=True)
        drip.drip_prefix, drip.conditional_only, drip.dripping = "/blog", True, True
        started = time.monotonic()
        full = cli("check", "--full")
        assert time.monotonic() - started < bound and full.returncode == 1, full.stderr
        assert "timed out" in full.stderr


class ControlCharacterReplica(BlogReplica):
    """Post pages carry what they were given, and an invalid UTF-8 byte where a paragraph says
    INVALID-BYTE."""

    def _render_post(self, post, query):
        status, content_type, body, modified = super()._render_post(post, query)
        return status, content_type, body.replace(b"INVALID-BYTE", b"\xff"), modified


def test_a_post_with_control_characters_is_stored_and_mailed(tmp_path, smtp):
    with ControlCharacterReplica(generate_posts(4), url_variants=False) as site:
        port = free_port()
        cli = Cli(config(tmp_path, {"odd": site.blog_url}, smtp.port, port, interval="2s"))
        cli("check", check=True)
        cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
        with Daemon(cli, port) as daemon:
            site.add_post("Back\x08space and form\x0cfeed", body_paragraphs=[
                "A bell\x07, an escape \x1b[31m and a form feed\x0c in one paragraph.",
                "Then an invalid byte: INVALID-BYTE, and a C1 control \x85 here."])
            message = wait_for(lambda: next((m for m in smtp.messages if "space and form" in plain_text(m)), None),
                               timeout=20, what="the post with control characters mailed")
            text = plain_text(message)
            assert not any(ch in text for ch in "\x07\x08\x0c\x1b\x85")
            assert daemon.stop() == 0
        status = cli("status").stdout
        assert "last error" not in status, status
        with sqlite3.connect(tmp_path / "state.db") as db:
            titles = [title for (title,) in db.execute("SELECT title FROM posts WHERE title LIKE 'Back%'")]
        assert titles and "\x08" not in titles[0], titles


def test_a_crashing_check_is_recorded_as_failed_and_waits_its_interval(tmp_path, smtp):
    """A stored post whose removal date cannot be read (a malformed row: written by hand, or by a
    bug) crashes every check of its source that applies what it saw."""
    with BlogReplica(generate_posts(4), url_variants=False) as site:
        port = free_port()
        interval = 6
        extra = '[alerts]\noperator = "ops@example.org"\nfailures_before_alert = 2\n'
        cli = Cli(config(tmp_path, {"broken": site.blog_url}, smtp.port, port, interval=f"{interval}s", extra=extra))
        cli("check", check=True)
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("UPDATE posts SET gone_since = 'not a date'")
        site.add_post("A post the check will see every time")      # no 304: every check applies, and crashes
        site.clear_log()
        with Daemon(cli, port) as daemon:
            window = 12.0
            time.sleep(window)
            requests = len(site.requests)
            print(f"\nrequests to the crashing site: {requests} in {window:.0f}s ({requests * 60 / window:.0f}/min)")
            # A check costs 2 requests (listing, new post): one check per interval, not per tick.
            assert requests <= 2 * (window / interval + 1), requests
            _, metrics = get(f"http://127.0.0.1:{port}/metrics")
            assert 'postwatch_checks_total{result="error",source="broken"}' in metrics
            assert 'postwatch_check_crashes_total{source="broken"}' in metrics
            status, body = wait_for(lambda: (h := get(f"http://127.0.0.1:{port}/healthz"))[0] == 503 and h,
                                    timeout=interval * 2 + 4, what="/healthz 503 after repeated crashes")
            assert "crash" in json.loads(body)["detail"]
            wait_for(lambda: any("ops@example.org" in tos for _, tos in smtp.envelopes), timeout=10,
                     what="the operator alert")
            assert daemon.stop() == 0
        status = cli("status").stdout
        assert "FAILING" in status and "crashed" in status, status


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200))
def test_any_text_goes_through_normalize_and_hashes(text):
    for html in (text, f"<p>{text}</p><div>{text}<br>{text}</div>"):
        content = normalize(html)
        content.content_hash
        for paragraph in paragraphs_of(html):
            paragraph.encode("utf-8")
            assert site_text(paragraph) == paragraph


def test_site_text_keeps_tabs_and_newlines_and_drops_controls_and_surrogates():
    assert site_text("a\tb\nc\r\n") == "a\tb\nc\r\n"
    assert site_text("a\x08b\x00c\x1b[1m\x7f\x9f") == "abc[1m"
    assert site_text("form\x0cfeed\x0bvt\x85nel") == "form feed vt nel"
    assert site_text("lone \ud800 surrogate \udfff") == "lone \ufffd surrogate \ufffd"
    assert site_text("\ufffe\uffff") == ""


def test_health_tells_a_stuck_sweep_and_repeated_crashes_even_before_the_first_sweep_ends(tmp_path):
    from postwatch.app import App
    from postwatch.config import Config, SourceConfig

    config = Config(path=tmp_path / "postwatch.toml", database="state.db",
                    sources=[SourceConfig(name="src", url="http://127.0.0.1:9/blog", kind="link")])
    config.crawl.timeout, config.crawl.retries = 2, 1
    with App.open(config) as app:
        assert app.healthy() == (True, "starting")
        limit = app.checker.sweep_limit()
        assert limit == max(2 * 3600 + config.crawl.jitter.total_seconds(), 4 * 2 * 2 + 2)
        app.checker.sweep_started = time.time() - 10
        assert app.healthy() == (True, "starting")
        app.checker.sweep_started = time.time() - limit - 5       # stuck since before the first sweep could end
        ok, detail = app.healthy()
        assert not ok and detail.startswith("a sweep has been running for"), detail
        app.checker.sweep_started = None
        app.checker.crash_streaks["src"] = config.alerts.failures_before_alert - 1
        assert app.healthy()[0]
        app.checker.crash_streaks["src"] += 1
        ok, detail = app.healthy()
        assert not ok and "crashed" in detail and "src" in detail, detail
