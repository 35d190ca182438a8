"""Digest height on a phone: headless Chromium lays the HTML part out in a 375 px frame.

    .venv/bin/python bench/bench_digest_height.py [--width 375] [--lead short|full] [--lang en|ko]

Two digests built from the LiNK replica's posts (real titles, several paragraphs each):
165 new + 5 edited + 1 removed, and 90 edited (each edit appends a sentence to a paragraph and
rewords another, as state.diff produces it). Prints the height in px, the HTML bytes and the
posts shown in full; keeps screenshots in tests/artifacts/.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))     # support: the test helpers kept out of the wheel

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="border:0;display:block" width="{width}" height="1400" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById("mail").addEventListener("load", function () {{
  var doc = this.contentDocument.documentElement;
  document.title = JSON.stringify({{height: doc.scrollHeight, scroll: doc.scrollWidth, view: this.contentWindow.innerWidth}});
}});
</script></body></html>"""


def events(new: int, updated: int, removed: int) -> list:
    from postwatch.testing.replica import _seed_posts
    from state import EventRecord
    from state.diff import paragraph_diff

    seeds = _seed_posts()
    made = []

    def add(n: int, kind: str, diff=None):
        post = seeds[n % len(seeds)]
        body = "".join(f"<p>{paragraph}</p>" for paragraph in post.body_paragraphs)
        made.append(EventRecord(id=n + 1, seq=n + 1, source="link", kind=kind,
                                url=f"https://libertyinnorthkorea.org/blog/{post.slug}-{n}", title=post.title,
                                published=NOW - timedelta(hours=n), summary=None, body_html=body, diff=diff,
                                created_at=NOW - timedelta(minutes=n), status="published"))

    for n in range(new):
        add(n, "new")
    for n in range(1000, 1000 + updated):
        old = list(seeds[n % len(seeds)].body_paragraphs)
        new_paragraphs = old[:]
        new_paragraphs[0] = old[0] + " We will share more about this in the coming weeks."
        if len(old) > 2:
            new_paragraphs[2] = old[2].replace(" the ", " our ", 1)
        add(n, "updated", paragraph_diff(old, new_paragraphs))
    for n in range(2000, 2000 + removed):
        add(n, "removed")
    return made


def reader(lang: str | None):
    import dataclasses

    from state import Subscriber

    made = Subscriber(id=7, email="reader@example.org", cadence="daily", send_time="08:00", timezone="UTC",
                      weekday=None, sources=None, status="active", cursor=0, created_at=NOW, joined_via="page")
    return dataclasses.replace(made, lang=lang) if lang else made


def html_of(made: list, lang: str | None = None, **overrides) -> str:
    from digest.compose import build_message
    from digest.settings import DigestSettings

    settings = DigestSettings(secret=b"bench-secret", unsubscribe_base_url="https://watch.example.org/unsubscribe",
                              source_titles={"link": "Liberty in North Korea"},
                              source_urls={"link": "https://libertyinnorthkorea.org/blog"}, **overrides)
    message = message_from_bytes(build_message(reader(lang), made, settings, NOW).raw, policy=policy.default)
    return message.get_body(("html",)).get_content()


def main() -> None:
    from digest.settings import DigestSettings
    from support.browser import measure_in_frame

    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=375)
    parser.add_argument("--lead", choices=["short", "full"], default=None)
    parser.add_argument("--lang", default=None)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    overrides = {}
    if args.lead and "lead" in DigestSettings.__dataclass_fields__:
        overrides["lead"] = args.lead
    with tempfile.TemporaryDirectory() as folder:
        for name, counts in (("165new-5upd-1rem", (165, 5, 1)), ("90upd", (0, 90, 0))):
            html = html_of(events(*counts), args.lang, **overrides)
            shot = ROOT / "tests" / "artifacts" / f"bench-height-{name}-{args.width}px{args.tag}.png"
            measured = measure_in_frame(FRAME, html, args.width, Path(folder), shot)
            shown = html.count('class="post"')
            print(f"{name:18s} {measured['height']:7,d} px at {args.width} px, HTML {len(html.encode()):7,d} bytes, "
                  f"{shown} posts in full, overflow {measured['scroll'] > measured['view']}, "
                  f"screenshot {shot.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
