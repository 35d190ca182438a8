"""Digest size: HTML bytes of the message a subscriber gets, by number of new posts.

    .venv/bin/python bench/bench_digest_size.py [--posts 1 10 43 100 200 1000]

Posts are the LiNK replica's (real titles, several paragraphs each). Prints the HTML part's
bytes for each count, the bytes one more new post costs, the first count at which the HTML part
reaches the size budget (digest.render.HTML_BUDGET, else Gmail's ~102 KB clipping point) and
whether the unsubscribe link is still in it.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
GMAIL_CLIPS_AT = 102 * 1024


def events(count: int, kind: str = "new") -> list:
    from postwatch.testing.replica import _seed_posts
    from state import EventRecord

    seeds = _seed_posts()
    made = []
    for n in range(count):
        post = seeds[n % len(seeds)]
        body = "".join(f"<p>{paragraph}</p>" for paragraph in post.body_paragraphs)
        made.append(EventRecord(id=n + 1, seq=n + 1, source="link", kind=kind,
                                url=f"https://libertyinnorthkorea.org/blog/{post.slug}-{n}", title=post.title,
                                published=NOW - timedelta(hours=n), summary=None, body_html=body, diff=None,
                                created_at=NOW, status="published"))
    return made


class Reader:
    id, email, cadence, timezone = 7, "reader@example.org", "daily", "UTC"
    subscribed_at = None


def html_of(count: int, **overrides) -> tuple[int, bool]:
    from digest.compose import build_message
    from digest.settings import DigestSettings

    settings = DigestSettings(secret=b"bench-secret", unsubscribe_base_url="https://watch.example.org/unsubscribe",
                              source_titles={"link": "Liberty in North Korea"}, **overrides)
    message = message_from_bytes(build_message(Reader(), events(count), settings, NOW).raw, policy=policy.default)
    html = message.get_body(("html",)).get_content()
    link = message["List-Unsubscribe"].split(",")[0].strip(" <>")
    return len(html.encode("utf-8")), link.replace("&", "&amp;") in html


def main() -> None:
    import digest.render as render
    from digest.settings import DigestSettings

    budget = getattr(render, "HTML_BUDGET", GMAIL_CLIPS_AT)
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[0, 1, 10, 20, 43, 100, 200, 1000])
    args = parser.parse_args()
    sizes = {}
    for count in args.posts:
        size, has_link = html_of(count)
        sizes[count] = size
        print(f"{count:5d} new posts: HTML part {size:7d} bytes ({size / 1024:6.1f} KB), unsubscribe link "
              f"{'present' if has_link else 'MISSING'}")
    one, eleven = html_of(1)[0], html_of(11)[0]
    print(f"one more new post costs {(eleven - one) / 10:.0f} bytes of HTML (average of posts 2-11)")
    # With no cap on the number of posts, where the byte budget alone starts to cut.
    uncapped = {"max_posts": 100_000} if "max_posts" in DigestSettings.__dataclass_fields__ else {}
    low, high = 1, 400
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if html_of(middle, **uncapped)[0] < budget * 0.97 else (low, middle)
    print(f"without the posts cap the HTML part reaches 97 % of the {budget / 1024:.0f} KB budget at {low} new posts"
          + (" (more are counted, not shown)" if uncapped else ""))
    size, has_link = html_of(1000, **uncapped)
    print(f"1000 new posts without the posts cap: {size} bytes, unsubscribe link {'present' if has_link else 'MISSING'}")


if __name__ == "__main__":
    main()
