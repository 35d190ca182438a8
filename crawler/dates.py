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
# Chinese, Japanese and Korean dates: 2025年8月19日, 2025년 8월 19일, and WordPress's "F j, Y" in
# those locales, where the month name is the number with 月/월: 8月 19, 2025.
_CJK_YMD = re.compile(r"((?:19|20)\d\d)\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]?")
_CJK_MDY = re.compile(r"(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]?\s*,?\s*((?:19|20)\d\d)")
# Numeric forms with the year first (2025.08.19, 2025/8/19): unambiguous, unlike 08/19/2025.
_NUMERIC_YMD = re.compile(r"((?:19|20)\d\d)[./](\d{1,2})[./](\d{1,2})(?!\d)")
_IN_TEXT = re.compile(r"([A-Z][a-z]{2,8}\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}|\d{1,2} [A-Z][a-z]{2,8} \d{4}"
                      r"|\d{4}-\d{2}-\d{2}(?:T[\d:.+\-Z]+)?"
                      r"|(?:19|20)\d\d\s*[年년]\s*\d{1,2}\s*[月월]\s*\d{1,2}"
                      r"|\d{1,2}\s*[月월]\s*\d{1,2}\s*[日일]?\s*,?\s*(?:19|20)\d\d"
                      r"|(?<![\d.])(?:19|20)\d\d[./]\d{1,2}[./]\d{1,2}(?!\d|\.\d))")
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
    numbered = _numbered_date(text)
    if numbered:
        return numbered
    cleaned = _ORDINAL.sub(r"\1", text).replace("Sept ", "Sep ").strip(" .")
    for fmt in _FORMATS:
        try:
            return _sane(datetime.strptime(cleaned, fmt).replace(tzinfo=timezone.utc))
        except ValueError:
            continue
    return None


def find_date_in_text(text: str) -> datetime | None:
    """The first thing that looks like a date in a short text ("Posted on April 22, 2022")."""
    for match in _IN_TEXT.finditer(text or ""):
        found = match.group(1)
        parsed = parse_date(found if _numbered_date(found) else found.replace(".", ""))
        if parsed:
            return parsed
    return None


def _numbered_date(text: str) -> datetime | None:
    """A date written with numbers for its month: CJK forms, or year-first with dots or slashes."""
    for pattern, order in ((_CJK_YMD, (0, 1, 2)), (_CJK_MDY, (2, 0, 1)), (_NUMERIC_YMD, (0, 1, 2))):
        match = pattern.fullmatch(text.strip(" ."))
        if match:
            parts = match.groups()
            try:
                return _sane(datetime(int(parts[order[0]]), int(parts[order[1]]), int(parts[order[2]]),
                                      tzinfo=timezone.utc))
            except ValueError:
                return None
    return None


def _sane(value: datetime) -> datetime | None:
    value = value.astimezone(timezone.utc)
    if value.year < MIN_YEAR or value.year > datetime.now(timezone.utc).year + 1:
        return None
    return value
