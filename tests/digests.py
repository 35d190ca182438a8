"""Digests built straight from events (no crawl, no database): ordinary, big and hostile ones,
for the rendering, delivery and SpamAssassin tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

from digest.compose import build_message
from digest.settings import DigestSettings
from postwatch.testing.replica import _seed_posts
from state import EventRecord, Subscriber

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

SETTINGS = DigestSettings(secret=b"k", unsubscribe_base_url="https://watch.example.org/unsubscribe",
                          source_titles={"link": "Liberty in North Korea"},
                          source_urls={"link": "https://libertyinnorthkorea.org/blog"},
                          organization="Liberty in North Korea", postal_address="PO Box 8028, Long Beach, CA 90808, USA",
                          # Pages with a public address: "View in browser", and the archive's source pages for the rest.
                          archive_url="https://watch.example.org/archive/", archive_public=True)
SEEDS = _seed_posts()


def Reader() -> Subscriber:  # noqa: N802 - reads as the record it builds
    return Subscriber(id=7, email="reader@example.org", cadence="daily", send_time="08:00", timezone="UTC",
                      weekday=None, sources=None, status="active", cursor=0, created_at=NOW)


def event(n: int, kind: str = "new", title: str | None = None, body: str | None = None, diff: dict | None = None,
          source: str = "link") -> EventRecord:
    seed = SEEDS[n % len(SEEDS)]
    return EventRecord(id=n, seq=n, source=source, kind=kind, url=f"https://libertyinnorthkorea.org/blog/{seed.slug}-{n}",
                       title=title or seed.title, published=NOW - timedelta(hours=n), summary=None,
                       body_html=body if body is not None else "".join(f"<p>{p}</p>" for p in seed.body_paragraphs),
                       diff=diff, created_at=NOW, status="published")


def parts(events, settings=SETTINGS):
    message = message_from_bytes(build_message(Reader(), events, settings, NOW).raw, policy=policy.default)
    link = message["List-Unsubscribe"].split(",")[0].strip(" <>")
    return message, message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content(), link


def hostile_events(count: int = 200) -> list[EventRecord]:
    """Every way a watched site can try to blow up, clip or disguise a digest."""
    korean = "북한 이탈 주민들이 자유를 찾아 긴 여정을 떠났습니다. " * 3000          # ~100 KB of 3-byte characters
    made = [
        event(1, title="Refund\u202efdp.exe", body='<p>Sign in at <a href="https://evil.example/steal">'
              'https://www.paypal.com/signin</a> or <a href="https://libertyinnorthkorea.org/donate">'
              'libertyinnorthkorea.org/donate</a>.</p>'),
        event(2, title="T" * 500 + " end", body="<p>" + "W" * 10_000 + "</p>"),
        event(3, title="مرحبا \u2067بالعالم\u2069", body="<p>هذه فقرة باللغة العربية.</p><p>" + "A long paragraph. " * 6000 + "</p>"),
    ]
    made += [event(n, title="긴 제목 " * 60, body=f"<p>{korean}</p>") for n in range(4, count + 1)]
    return made


