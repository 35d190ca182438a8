"""The words the config file, the CLI, the subscriber checks and the web forms share: cadences,
weekdays, a time of day, durations, and the error a config problem raises. Nothing of postwatch
is imported here, so every module can use them without importing the config."""
from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

# Not a source name: /feeds/all.atom and `postwatch feed all` are every source's changes.
ALL_SOURCES = "all"
# How often a subscriber gets a digest: after each check, daily, or weekly.
CADENCES = ("immediate", "daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")       # index = the stored weekday
LEADS = ("short", "full")                                          # [digest] lead
LOG_FORMATS = ("text", "json")                                     # [daemon] log_format, --log-format
SMTP_SECURITY = ("starttls", "ssl", "none")                        # [smtp] security
TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):[0-5]\d")              # HH:MM, 24-hour clock


class ConfigError(ValueError):
    """A config problem; str() is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
# No setting means more than this; it also keeps every duration far from timedelta's overflow.
LONGEST_DURATION = timedelta(days=3650)


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '1h', '2d', '1w' or a number of seconds; finite, not negative, at most 10 years."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (examples: 90s, 15m, 1h, 2d)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (examples: 90s, 15m, 1h, 2d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (a finite number of seconds, 0 or more)")
    if seconds > LONGEST_DURATION.total_seconds():
        raise ValueError(f"{value!r} is longer than {format_duration(LONGEST_DURATION)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: 90s, 15m, 2h, 180d."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
