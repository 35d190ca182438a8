"""A digest as a short text for chat and push services (the Apprise channel): a title and one
line per change, cut to the length the service takes. Pure functions, no network."""
from __future__ import annotations

import json

KIND_LABELS = {"new": "New", "updated": "Edited", "removed": "Removed", "restored": "Back"}


def event_line(event) -> str:
    title = " ".join(event.title.split())
    return f"• {KIND_LABELS.get(event.kind, event.kind.title())}: {title} — {event.url}"


def notification(events, *, site_name: str, source_titles: dict[str, str], source_urls: dict[str, str]) -> bytes:
    """What the outbox keeps for one notification (JSON): the title, a line per change, and
    where the rest can be read when the service's limit leaves some out."""
    sources = sorted({e.source for e in events})
    named = ", ".join(source_titles.get(s, s) for s in sources)
    count = len(events)
    document = {
        "title": f"{named}: {count} change{'s' * (count != 1)}",
        "lines": [event_line(e) for e in events],
        "more": source_urls.get(sources[0]) if len(sources) == 1 else None,
        "site": site_name,
    }
    return json.dumps(document, ensure_ascii=False).encode()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(0, limit - 1)].rstrip() + "…"


def fit(document: dict, body_maxlen: int, title_maxlen: int) -> tuple[str, str]:
    """(title, body) within the service's limits: as many whole lines as fit, then "… and N
    more" (with the source's address when there is one). A service without titles
    (title_maxlen 0, e.g. Telegram) gets the title as the body's first line."""
    title, lines = document["title"], list(document["lines"])
    head = []
    if title_maxlen <= 0:
        head, title = [title], ""
    else:
        title = _cut(title, title_maxlen)
    body_maxlen = max(1, body_maxlen)

    def tail(left: int) -> str:
        if not left:
            return ""
        where = f": {document['more']}" if document.get("more") else ""
        return f"… and {left} more{where}"

    shown: list[str] = []
    for index, line in enumerate(lines):
        left_after = len(lines) - index - 1
        candidate = "\n".join([*head, *shown, line, *([tail(left_after)] if left_after else [])])
        if len(candidate) > body_maxlen:
            break
        shown.append(line)
    if lines and not shown:
        # A limit that cannot hold even the first line with its tail: that line, cut.
        return title, _cut("\n".join([*head, lines[0]]), body_maxlen)
    left = len(lines) - len(shown)
    body = "\n".join([*head, *shown, *([tail(left)] if left else [])])
    return title, _cut(body, body_maxlen)
