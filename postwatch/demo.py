"""`postwatch demo`: the whole loop offline, against a local replica of the LiNK blog and a
local SMTP server, in a temporary folder. Nothing of the user's own config or state is touched."""
from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from crawler.runtime import run
from digest.sender import preview
from postwatch.app import App, CheckSummary
from postwatch.config import Config, SourceConfig

if TYPE_CHECKING:
    from postwatch.testing.mailcatcher import MailCatcher
    from postwatch.testing.replica import BlogReplica

SUBSCRIBER = "reader@example.org"


def say(line: str = "") -> None:
    print(line, flush=True)


def demo_config(folder: Path, blog_url: str, smtp_port: int) -> Config:
    config = Config(path=folder / "postwatch.toml", database="postwatch.db",
                    sources=[SourceConfig(name="link", url=blog_url, kind="webflow", title="Liberty in North Korea (local replica)")])
    config.crawl.download_delay = 0          # the replica is ours: no politeness delay needed
    config.crawl.autothrottle = False
    config.crawl.removal_confirm_after = timedelta(0)
    config.crawl.confirm_edits_after = timedelta(seconds=0.5)
    config.smtp.host, config.smtp.port, config.smtp.security = "127.0.0.1", smtp_port, "none"
    config.digest.from_addr = "postwatch demo <postwatch@localhost>"
    # The digest's links (view in browser, unsubscribe, the archive) point at the web endpoint the
    # demo serves while it runs (_loop): its real port replaces this 0 before any digest is composed.
    config.daemon.listen = "127.0.0.1:0"
    return config


async def _loop(app: App, site: BlogReplica, smtp: MailCatcher, folder: Path) -> None:
    from postwatch.web import WebEndpoint

    # The daemon's web pages, as `postwatch run` serves them: the links in the demo's digest
    # (view in browser, unsubscribe) open real pages while the demo runs, not port 0.
    endpoint = WebEndpoint(app, "127.0.0.1", 0)
    await endpoint.start()
    app.config.daemon.listen = endpoint.address
    try:
        await _steps(app, site, smtp, folder, endpoint)
    finally:
        await endpoint.stop()


async def _steps(app: App, site: BlogReplica, smtp: MailCatcher, folder: Path, endpoint) -> None:
    def check(label: str, full: bool | None = None):
        return app.checker.check_many(["link"], full=full)

    say(f"1. Baseline: reading the replica's blog listing at {site.blog_url}")
    [summary] = await check("baseline")
    _fail_if_not_ok(summary)
    say(f"   {summary.posts_seen} posts found in {summary.requests} requests; recorded as the baseline, "
        "so nothing is reported as new.")

    [summary] = await check("quiet")
    say(f"2. A check with nothing changed: {summary.requests} request(s), {summary.response_bytes} body bytes "
        f"({'304 Not Modified' if summary.not_modified else 'listing re-read'}), {len(summary.events)} events.")

    [summary] = await check("sweep", full=True)
    _fail_if_not_ok(summary)
    say(f"3. A full sweep reads each known post once ({summary.requests} requests) so later edits can be diffed.")

    app.store.add_subscriber(SUBSCRIBER, cadence="immediate")
    say(f"4. Subscribed {SUBSCRIBER}.")

    _change_the_replica(site)

    [summary] = await check("changes", full=True)
    _fail_if_not_ok(summary)
    say(f"6. Check: {len(summary.events)} events in {summary.requests} requests:")
    for event in summary.events:
        say(f"     {event.kind:<8} {event.title}")
    confirm = app.config.crawl.confirm_edits_after.total_seconds()
    say(f"   The edit was seen, then its page fetched again {confirm:g} s later within the same check: it is "
        "published because both fetches agree (a rotating ad or timestamp would differ).")

    [summary] = await check("quiet")
    _fail_if_not_ok(summary)
    say(f"7. A check with nothing new: {len(summary.events)} events in {summary.requests} requests (the listing "
        "answers 304; posts under 2 days old are looked at again at every check, so a correction is caught).")

    await _deliver(app, smtp, folder, endpoint)


def _change_the_replica(site: BlogReplica) -> None:
    """Two new posts and an edit, on the replica blog."""
    added = [
        site.add_post("Demo: 12 North Korean Refugees Reach Freedom",
                      body_paragraphs=["Twelve North Korean refugees reached safety this month after a journey of thousands of miles.",
                                       "Your support made each of these rescues possible."]),
        site.add_post("Demo: Radio Broadcasts Reach the Border Regions",
                      body_paragraphs=["Outside information keeps reaching North Koreans through radios and USB drives.",
                                       "Our partners report growing demand for news from the outside world."]),
    ]
    edited = site.posts[len(added)]
    site.edit_post(edited.slug, body_paragraphs=[*edited.body_paragraphs,
                                                 "Update: this post was edited after publication to add this paragraph."])
    say(f"5. On the replica: added {len(added)} posts and edited \"{edited.title}\".")


async def _deliver(app: App, smtp: MailCatcher, folder: Path, endpoint) -> None:
    """Send the digest to the local SMTP server, then open its links on the endpoint."""
    queued, stats = app.mailer.send_digests()
    say(f"8. Digest: {len(queued)} composed, {stats.sent} sent to the local SMTP server, {stats.retried} retrying.")
    preview_path = preview(app.store, app.mailer.digest_settings(), None, folder / "digest-preview.html",
                           datetime.now(timezone.utc))
    pages = await _open_links(smtp)
    say()
    say("Received emails:")
    for path in smtp.files:
        say(f"   {path}")
    say(f"HTML preview of the digest: {preview_path}")
    say(f"The digest's links were served at http://{endpoint.address}/ while the demo ran:")
    for name, url, status in pages:
        say(f"   {name}: {url} → {status}")
    say("   (the endpoint stops with the demo; `postwatch run` serves the same pages for good)")


async def _open_links(smtp: MailCatcher) -> list[tuple[str, str, int]]:
    """Follow the received digest's "View in browser" and unsubscribe links (GET only shows the
    unsubscribe page; it changes nothing): each link's name, URL and HTTP status."""
    import re
    from email import message_from_bytes, policy

    import aiohttp

    found = []
    if not smtp.files:
        return found
    message = message_from_bytes(Path(smtp.files[-1]).read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for name in ("View in browser", "Unsubscribe"):
            match = re.search(rf"^{name}: (\S+)$", text, re.M)
            if match:
                async with session.get(match.group(1)) as response:
                    await response.read()
                    found.append((name, match.group(1), response.status))
    return found


def _fail_if_not_ok(summary: CheckSummary) -> None:
    if not summary.ok:
        raise RuntimeError(summary.error)


def run_demo(keep: bool = False) -> int:
    # Here, not at the top: every command imports this module through the CLI, and aiosmtpd
    # alone takes 0.2 s to import.
    from postwatch.testing.mailcatcher import MailCatcher
    from postwatch.testing.replica import BlogReplica

    folder = Path(tempfile.mkdtemp(prefix="postwatch-demo-"))
    say(f"postwatch demo — everything happens in {folder} and on 127.0.0.1; your own config and state are not touched.")
    code = 0
    try:
        with BlogReplica() as site, MailCatcher(folder / "received") as smtp:
            say(f"Started a replica of the LiNK blog at {site.blog_url} and an SMTP server at 127.0.0.1:{smtp.port}.")
            app = App.open(demo_config(folder, site.blog_url, smtp.port))
            try:
                run(lambda: _loop(app, site, smtp, folder))
            finally:
                app.close()
        say("Stopped the replica and the SMTP server.")
    except KeyboardInterrupt:
        say("Interrupted: stopped the replica and the SMTP server.")
        code = 130
    except Exception as exc:
        print(f"postwatch demo: {exc}", file=sys.stderr)
        code = 1
    if keep:
        say(f"Kept {folder} (state database, received emails, preview).")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        say("Removed the temporary folder (use --keep to look at the files).")
    return code
