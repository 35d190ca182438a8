"""The Apprise channel (postwatch[apprise]): a subscriber whose address is an Apprise URL gets a
short text of the digest, cut to the service's limit. Sent for real by Apprise's json:// schema
to an HTTP receiver on 127.0.0.1, through the same outbox as email (retried, counted in status)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apprise
import pytest

from digest.notify import fit
from support.harness import Cli, write_config


class JsonReceiver:
    """What Apprise's json:// schema POSTs, kept; `answers` are given first (then 200)."""

    def __init__(self):
        self.received: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.received.append({"status": status, **json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def notified(tmp_path, site):
    with JsonReceiver() as receiver:
        config = write_config(tmp_path, site.blog_url, None)
        config.write_text(config.read_text().replace("[digest]\n", '[digest]\nretry_after = "1s"\n'))
        cli = Cli(config)
        cli("check", check=True)
        url = f"json://127.0.0.1:{receiver.port}/notify"
        added = cli("subscribers", "add", url, "--cadence", "immediate", check=True)
        assert f"subscribed {url} (after each check)" in added.stdout
        yield cli, receiver


def test_an_apprise_subscriber_gets_a_short_text_of_the_digest(notified, site, tmp_path):
    cli, receiver = notified
    first = site.add_post("Apprise says hello", body_paragraphs=["To chat and push services."])
    second = site.add_post("A second change", body_paragraphs=["Each change is one line."])
    cli("check", check=True)
    done = cli("digest", check=True)
    assert "1 composed, 1 delivered" in done.stdout

    [note] = receiver.received
    assert note["title"] == "Liberty in North Korea: 2 changes"
    assert note["message"].splitlines() == [f"• New: {second.title} — {site.post_url(second)}",
                                            f"• New: {first.title} — {site.post_url(first)}"]
    assert note["type"] == "info"
    assert "apprise: 0 pending, 1 sent, 0 failed" in cli("status").stdout
    assert not (tmp_path / "outbox").exists()


def test_an_apprise_failure_is_retried_through_the_outbox(notified, site, tmp_path):
    cli, receiver = notified
    site.add_post("Refused once by the service", body_paragraphs=["Then taken."])
    cli("check", check=True)
    receiver.answers.append(503)
    first = cli("digest")
    assert first.returncode == 1 and "1 waiting for a retry" in first.stdout
    with sqlite3.connect(tmp_path / "state.db") as db:
        [(channel, status, error)] = db.execute("SELECT channel, status, last_error FROM outbox").fetchall()
    assert (channel, status) == ("apprise", "pending") and error.startswith("NotifyJSON: ")
    time.sleep(1.5)
    assert "1 delivered" in cli("digest", check=True).stdout
    assert [n["status"] for n in receiver.received] == [503, 200]


def test_an_unknown_apprise_service_is_refused_when_added(tmp_path, site):
    cli = Cli(write_config(tmp_path, site.blog_url, None))
    refused = cli("subscribers", "add", "nosuchservice://token")
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("postwatch: nosuchservice:// is not a service Apprise knows, "
                                      "or the URL is incomplete")


@pytest.mark.parametrize("url", ["tgram://123456789:abcdefg_hijklmnop/12315544/",    # 4096, no title
                                 "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",  # 2000
                                 "ntfy://topic"])                                     # 7800
def test_the_text_fits_each_services_limit(url):
    plugin = apprise.Apprise.instantiate(url)
    lines = [f"• New: Post number {n} about something — https://www.libertyinnorthkorea.org/blog/post-{n}"
             for n in range(300)]
    document = {"title": "Liberty in North Korea: 300 changes", "lines": lines,
                "more": "https://www.libertyinnorthkorea.org/blog"}
    title, body = fit(document, plugin.body_maxlen, plugin.title_maxlen)
    assert len(body) <= plugin.body_maxlen and len(title) <= max(plugin.title_maxlen, 0)
    shown = [line for line in body.splitlines() if line.startswith("• ")]
    assert 0 < len(shown) < 300 and shown == lines[:len(shown)]
    assert body.endswith(f"… and {300 - len(shown)} more: https://www.libertyinnorthkorea.org/blog")
    if plugin.title_maxlen == 0:
        assert title == "" and body.startswith("Liberty in North Korea: 300 changes\n")
    # Not a line fewer than fits: one more line (and its shorter tail) would have gone over the limit.
    assert len(body) + len(lines[len(shown)]) + 1 > plugin.body_maxlen - 2


def test_a_tiny_limit_still_gives_a_cut_text():
    title, body = fit({"title": "T" * 300, "lines": ["x" * 500], "more": None}, 160, 20)
    assert len(title) == 20 and title.endswith("…")
    assert len(body) == 160 and body.endswith("…")


def test_an_apprise_route_in_the_config_is_a_subscriber_kept_in_step_with_the_file(tmp_path, site):
    with JsonReceiver() as receiver:
        url = f"json://127.0.0.1:{receiver.port}/ops"
        route = f'[[routes]]\nto = "{url}"\ninclude = ["/rescue|visa/"]\n'
        config = write_config(tmp_path, site.blog_url, None, extra=route)
        cli = Cli(config)
        assert cli("config", "check").returncode == 0
        cli("check", check=True)
        listed = cli("subscribers", "list", check=True).stdout
        assert "after each check" in listed and "include /rescue|visa/  (route in the config)" in listed
        assert url not in listed                           # an Apprise URL's token is not printed
        refused = cli("subscribers", "remove", url)
        assert refused.returncode == 2 and "is a route of the config file ([[routes]]); remove it there" in refused.stderr

        site.add_post("Rescue update", body_paragraphs=["Three families reached safety."])
        site.add_post("Office move", body_paragraphs=["Boxes."])
        cli("check", check=True)
        assert "1 composed, 1 delivered" in cli("digest", check=True).stdout
        [note] = receiver.received
        assert note["title"] == "Liberty in North Korea: 1 change" and "Rescue update" in note["message"]

        config.write_text(config.read_text().replace(route, ""))
        cli("check", check=True)
        assert "0 subscribers" in cli("subscribers", "list", check=True).stdout


def test_a_route_with_a_bad_filter_or_address_is_one_line_each_from_config_check(tmp_path, site):
    routes = ('[[routes]]\nto = "tgram://123456789:secret-token/555/"\nexclude = ["/[x/"]\n'
              '[[routes]]\nto = "nosuchservice://x"\n'
              '[[routes]]\nto = "https://hooks.example.org/x"\nsources = ["elsewhere"]\n')
    config = write_config(tmp_path, site.blog_url, None, extra=routes)
    result = Cli(config)("config", "check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"postwatch: {config}: [[routes]] #1 (tgram://…): exclude '/[x/' is not a regular expression: "
        "unterminated character set at position 0",
        f"postwatch: {config}: [[routes]] #2 (nosuchservice://…): nosuchservice:// is not a service Apprise knows, "
        "or the URL is incomplete",
        f"postwatch: {config}: [[routes]] #3 (https://…): no such source in the config: elsewhere"]
    assert "secret-token" not in result.stderr
