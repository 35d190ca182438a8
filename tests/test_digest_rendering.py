"""The digest as a phone and a desktop browser show it: headless Chromium, real layout."""
from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawler.items import PostItem
from digest.compose import build_message
from digest.settings import DigestSettings
from state import CheckInput, SourceRecord, Store

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOW = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless Chromium will not make a window narrower than 500 px, so the digest is laid out in an
# iframe of the width under test (srcdoc keeps it same-origin, so the page can measure it).
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="border:0;display:block" width="{width}" height="1400" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById("mail").addEventListener("load", function () {{
  var doc = this.contentDocument.documentElement;
  document.title = JSON.stringify({{scroll: doc.scrollWidth, view: this.contentWindow.innerWidth}});
}});
</script></body></html>"""


def digest_html(tmp_path) -> str:
    store = Store(str(tmp_path / "state.db"))
    store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog", kind="link")])
    base = [PostItem(url=f"https://libertyinnorthkorea.org/blog/p{n}", title=f"Post {n}", published=NOW,
                     body_html=f"<p>Original paragraph of post {n} about refugees reaching safety.</p><p>Second.</p>",
                     summary=None, origin="page") for n in range(10)]
    store.apply_check("link", CheckInput(posts=base, baseline=True), NOW)
    subscriber = store.add_subscriber("ada@example.org", timezone="Asia/Seoul")
    long_url = "https://libertyinnorthkorea.org/blog/" + "a-very-long-slug-without-any-break-" * 6
    fresh = [PostItem(url=long_url, title="Supercalifragilisticexpialidocious" * 3, published=NOW,
                      body_html="<p>" + "Unbreakable" * 40 + "</p><p><img src='https://x.example/big.jpg' width='2000'></p>",
                      summary=None, origin="page"),
             PostItem(url="https://libertyinnorthkorea.org/blog/p-new", title="Twelve refugees reach freedom", published=NOW,
                      body_html="<p>A normal paragraph.</p>", summary=None, origin="page")]
    edited = base[:]
    edited[2] = PostItem(url=base[2].url, title="Post 2", published=NOW,
                         body_html="<p>Original paragraph of post 2 about refugees reaching safety and freedom.</p><p>Second.</p>",
                         summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=fresh + edited), NOW)
    store.apply_check("link", CheckInput(posts=edited), NOW)      # the edit is published when seen again
    store.release_source("link")
    events = store.pending_events(subscriber)
    assert {e.kind for e in events} == {"new", "updated"}
    settings = DigestSettings(secret=b"k", source_titles={"link": "Liberty in North Korea"})
    message = build_message(subscriber, events, settings, NOW)
    from email import message_from_bytes, policy

    html = message_from_bytes(message.raw, policy=policy.default).get_body(("html",)).get_content()
    store.close()
    return html


def render(html: str, width: int, folder: Path, name: str) -> dict:
    page = folder / f"{name}.html"
    import html as html_lib

    page.write_text(FRAME.format(width=width, srcdoc=html_lib.escape(html, quote=True)), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={folder / ('profile-' + name)}",
             f"--window-size={max(width, 500)},1400", "--virtual-time-budget=3000"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"digest-{width}px.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60, check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, timeout=60, check=True,
                         text=True).stdout
    import json

    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    return {**json.loads(html_lib.unescape(title)), "screenshot": shot}


@pytest.mark.parametrize("width", [375, 1024])
def test_the_digest_has_no_horizontal_overflow(tmp_path, width):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is needed for this test (.ci/run installs it: apt-get install chromium)")
    measured = render(digest_html(tmp_path), width, tmp_path, f"w{width}")
    assert measured["view"] == width
    assert measured["scroll"] <= measured["view"], measured
    assert measured["screenshot"].stat().st_size > 5000
