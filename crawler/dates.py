"""Dates as blogs and feeds write them, to timezone-aware UTC."""
from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

_FORMATS = ("%B %d, %Y", "%b %d, %Y", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y", "%Y-%m-%d",
            "%Y/%m/%d", "%d.%m.%Y", "%B %Y")
_ORDINAL = re.compile(r"(\d{1,2})(st|nd|rd|th)\b", re.I)
MIN_YEAR = 1990


def parse_date(value) -> datetime | None:
    """'April 22, 2022', ISO 8601, RFC 822/2822, a feedparser time struct -> aware UTC, or None."""
    if value is None:
        return None
    if isinstance(value, time.struct_time):
        # feedparser's *_parsed structs are UTC: timegm, not mktime.
        return _sane(datetime.fromtimestamp(calendar.timegm(value), timezone.utc))
    if isinstance(value, datetime):
        return _sane(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    text = " ".join(str(value).split())
    if not text or len(text) > 80:
        return None
    iso = text.replace("Z", "+00:00") if text.endswith("Z") else text
    try:
        parsed = datetime.fromisoformat(iso)
        return _sane(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))
    except ValueError:
        pass
    try:
        parsed = parsedate_to_datetime(text)
        if parsed is not None:
            return _sane(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))
    except (TypeError, ValueError, IndexError):
        pass
    cleaned = _ORDINAL.sub(r"\1", text).replace("Sept ", "Sep ").strip(" .")
    for fmt in _FORMATS:
        try:
            return _sane(datetime.strptime(cleaned, fmt).replace(tzinfo=timezone.utc))
        except ValueError:
            continue
    return None


def find_date_in_text(text: str) -> datetime | None:
    """The first thing that looks like a date in a short text ("Posted on April 22, 2022")."""
    for match in re.finditer(r"([A-Z][a-z]{2,8}\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}|\d{1,2} [A-Z][a-z]{2,8} \d{4}|\d{4}-\d{2}-\d{2}(?:T[\d:.+\-Z]+)?)", text or ""):
        parsed = parse_date(match.group(1).replace(".", ""))
        if parsed:
            return parsed
    return None


def _sane(value: datetime) -> datetime | None:
    value = value.astimezone(timezone.utc)
    if value.year < MIN_YEAR or value.year > datetime.now(timezone.utc).year + 1:
        return None
    return value
