"""The reader's pages as a phone and a desktop browser show them: /subscribe, the confirmation
page and /preferences from the daemon's real HTTP server, laid out by headless Chromium at
375 px and 1024 px: no horizontal overflow, and a label for every field."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from support.browser import CHROMIUM, measure_in_frame
from test_signup import Browser, web  # noqa: F401 - the fixture

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Headless Chromium will not make a window narrower than 500 px, so the page is laid out in an
# iframe of the width under test (srcdoc keeps it same-origin, so the page can measure it; the
# daemon's own frame-ancestors 'none' would refuse to be framed by URL, as it should).
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="page" style="border:0;display:block" width="{width}" height="1400" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument, fields = doc.querySelectorAll("input:not([type=hidden]), select, textarea, button");
  var unlabelled = [];
  fields.forEach(function (f) {{
    var named = f.tagName === "BUTTON" ? f.textContent.trim() : (f.labels && f.labels.length && f.labels[0].textContent.trim());
    if (!named) unlabelled.push(f.name || f.id || f.tagName);
  }});
  document.title = JSON.stringify({{scroll: doc.documentElement.scrollWidth, view: this.contentWindow.innerWidth,
                                    fields: fields.length, unlabelled: unlabelled}});
}});
</script></body></html>"""


def measure(html: str, width: int, folder: Path, name: str) -> dict:
    return measure_in_frame(FRAME, html, width, folder, ARTIFACTS / f"{name}.png")


def pages(app, base: str) -> dict[str, str]:
    """The HTML of the three pages, fetched from the running server as a reader's browser would."""
    from digest.compose import preferences_url
    from postwatch.signup import confirm_link

    browser = Browser(base)
    signup = browser.open("/subscribe")[2]
    app.store.request_signup("reader@example.org", cadence="daily", send_time="08:00", timezone="Asia/Seoul",
                             weekday=None, sources=None, now=datetime.now(timezone.utc))
    local = app.config.page_url("")          # the links name the configured address; this server's port is its own
    confirm = browser.open(confirm_link(app.config, app.store.get_subscriber("reader@example.org"))[0].replace(local, ""))[2]
    subscriber = app.store.add_subscriber("a-rather-long-address-for-a-phone@example.org", cadence="weekly", weekday=4)
    preferences = browser.open(preferences_url(subscriber, app.mailer.digest_settings()).replace(local, ""))[2]
    assert "Subscribe" in signup and "Confirm my subscription" in confirm and "Your preferences" in preferences
    return {"subscribe": signup, "confirm": confirm, "preferences": preferences}


@pytest.mark.parametrize("width", [375, 1024])
def test_the_pages_fit_a_phone_and_a_desktop_and_label_every_field(web, tmp_path, width):  # noqa: F811
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is needed for this test (.ci/run installs it: apt-get install chromium)")
    app, base = web
    for name, html in pages(app, base).items():
        measured = measure(html, width, tmp_path, f"signup-{name}-{width}px")
        assert measured["view"] == width, (name, measured)
        assert measured["scroll"] <= measured["view"], (name, measured)
        assert measured["unlabelled"] == [], (name, measured)
        assert measured["fields"] >= {"subscribe": 10, "confirm": 1, "preferences": 9}[name], (name, measured)
        assert measured["screenshot"].stat().st_size > 5000
