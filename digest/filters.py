"""Keyword filters: which events a subscriber hears of. Pure functions, no SQL.

A term is a word or phrase, matched case-insensitively as whole words ("visa" matches "Visa
rules", not "visas"), or a regular expression between slashes ("/refugees?/"), searched
case-insensitively. An event passes a filter when it matches at least one `include` term (or
the filter has none) and no `exclude` term, in its title or its text (summary and body).

Terms are matched by RE2 (google-re2), not by `re`: a subscriber's or a source's pattern meets
text from blogs nobody controls, and `re` backtracks — "/(a+)+$/" against a's and a "!" takes
twice as long per "a" (0.94 s for 24, measured; some 16 minutes for 34), holding the GIL: the
whole daemon froze, again after each restart. RE2 matches in time linear in the text,
at the price of refusing what needs backtracking (lookaround, backreferences); a refused term is
named, with the reason, wherever a filter is given (`subscribers add`/`import`, the config's
sources and routes). In /regular expressions/, \\w \\d \\s \\b are RE2's ASCII classes; \\pL,
\\p{N} stand for letters and digits of any script."""
from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import re2

log = logging.getLogger("postwatch.filters")

# RE2's memory for one pattern (its compiled program and its DFA caches); past this a pattern
# is refused as too large. 2 MiB takes every realistic term (`\pL{100}` needs more than 1 MiB)
# while up to 1024 cached terms cannot claim RE2's default 8 MiB each.
MAX_PATTERN_MEMORY = 2 << 20


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False          # RE2 would print its own copy of the error on stderr
    return options


_OPTIONS = _options()

# Python's \w and \s, which plain words were matched with before RE2, are Unicode-wide; RE2's
# are ASCII. Spelled out, a plain word keeps its meaning in every script ("북한", "café").
# RE2 has no lookaround, so the boundaries consume the neighbouring character: harmless, as a
# filter only asks whether there is a match.
_START = r"(?:^|[^\p{L}\p{N}_])"
_END = r"(?:[^\p{L}\p{N}_]|$)"
_SPACES = r"[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]+"

_WHY_UNSUPPORTED = {
    "(?=": "lookahead", "(?!": "negative lookahead", "(?<=": "lookbehind", "(?<!": "negative lookbehind",
    "(?P": "backreference",     # (?P=name): RE2 takes (?P<name>...)
    "(?>": "atomic group", "(?(": "conditional group",
}
_NO_BACKTRACKING = "RE2 matches in linear time and has no lookaround or backreference"


class FilterProblem(ValueError):
    """A term that is not usable; str() is one line naming it."""


def _unsupported(pattern: str, error: str) -> str:
    """What in `pattern` (valid for `re`) RE2 refused, from RE2's error text."""
    if error.startswith("pattern too large"):
        return f"too large (more than {MAX_PATTERN_MEMORY >> 20} MiB compiled)"
    detail = error.partition(": ")[2]
    for opening, name in sorted(_WHY_UNSUPPORTED.items(), key=lambda item: -len(item[0])):
        if detail.startswith(opening):
            return f"{name} ({_NO_BACKTRACKING})"
    if re.fullmatch(r"\\[1-9]\d*", detail):
        return f"backreference {detail} ({_NO_BACKTRACKING})"
    if error.startswith("bad repetition operator") and detail[-1:] == "+":
        return f"possessive quantifier {detail} ({_NO_BACKTRACKING})"
    if detail == r"\Z":
        return r"\Z (write $, which RE2 matches only at the end of the text)"
    return error


@functools.lru_cache(maxsize=1024)
def compile_term(term: str) -> re2._Regexp:
    """The pattern of one term; FilterProblem when it is empty, not a regular expression, or one
    RE2 cannot match in linear time."""
    if not isinstance(term, str) or not term.strip():
        raise FilterProblem(f"{term!r} is not a word or a /regular expression/")
    term = term.strip()
    if len(term) >= 2 and term.startswith("/") and term.endswith("/"):
        pattern = term[1:-1]
        try:
            return re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            error = exc.args[0].decode("utf-8", "replace") if isinstance(exc.args[0], bytes) else str(exc)
        if error.startswith("pattern too large"):
            raise FilterProblem(f"{term!r} is not supported: {_unsupported(pattern, error)}")
        # `re` only judges the syntax (compiling never backtracks): a pattern neither takes is
        # not a regular expression, with the message Python users know; one `re` takes is
        # refused for what RE2 lacks.
        try:
            re.compile(pattern)
        except re.error as exc:
            raise FilterProblem(f"{term!r} is not a regular expression: {exc}") from None
        raise FilterProblem(f"{term!r} is not supported: {_unsupported(pattern, error)}")
    # A boundary only where the term begins or ends with a word character: "C++" and "#tag" still match.
    start = _START if re.match(r"\w", term) else ""
    end = _END if re.search(r"\w$", term) else ""
    try:
        return re2.compile(start + _SPACES.join(map(re2.escape, term.split())) + end, _OPTIONS)
    except re2.error:               # escaped words are always valid: only max_mem can refuse them
        raise FilterProblem(f"{term!r} is too long a phrase (more than {MAX_PATTERN_MEMORY >> 20} MiB "
                            f"compiled)") from None


# (owner, term) already reported: a stored term RE2 refuses is logged once per process, not
# at every compose run.
_reported: set[tuple[str, str]] = set()


def _usable(term: str, owner: str) -> re2._Regexp | None:
    """The pattern of a term already stored, or None (logged once) when it cannot be used:
    a term saved by a version that matched with `re` may be one RE2 refuses."""
    try:
        return compile_term(term)
    except FilterProblem as exc:
        if (owner, term) not in _reported:
            _reported.add((owner, term))
            log.warning("keyword filter of %s: %s; it hides no event until it is replaced", owner or "a source", exc)
        return None


@dataclass(frozen=True)
class KeywordFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Whose filter it is ("subscriber #12"), for the log line about a term that cannot be used.
    owner: str = field(default="", compare=False)

    @classmethod
    def of(cls, include: Iterable[str] | None = (), exclude: Iterable[str] | None = ()) -> "KeywordFilter":
        """A filter of these terms, each checked; FilterProblem naming the first bad one."""
        made = cls(tuple(t.strip() for t in include or ()), tuple(t.strip() for t in exclude or ()))
        for term in (*made.include, *made.exclude):
            compile_term(term)
        return made

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def passes(self, text: str) -> bool:
        # A stored term that cannot be used (see _usable) never hides an event: as an include
        # term it lets everything in, as an exclude term it keeps nothing out. The subscriber
        # gets more than they asked for rather than silently missing news they wanted; their
        # cursor moves past what a filter drops, so dropping would lose it for good.
        if self.include:
            patterns = [_usable(t, self.owner) for t in self.include]
            if None not in patterns and not any(p.search(text) for p in patterns):
                return False
        return not any(p is not None and p.search(text) for p in (_usable(t, self.owner) for t in self.exclude))

    def as_json(self) -> dict | None:
        return {"include": list(self.include), "exclude": list(self.exclude)} if self else None


def filter_problems(include, exclude) -> list[str]:
    """One line per unusable term (or list): for `config check` and the subscriber commands."""
    problems = []
    for name, terms in (("include", include), ("exclude", exclude)):
        if terms is None:
            continue
        if not isinstance(terms, (list, tuple)):
            problems.append(f"{name} must be a list of words or /regular expressions/")
            continue
        for term in terms:
            try:
                compile_term(term)
            except FilterProblem as exc:
                problems.append(f"{name} {exc}")
    return problems


_TAG = re.compile(r"<[^>]*>")


def event_text(event) -> str:
    """What the terms are matched against: the title, the summary and the body's text (tags
    dropped, entities decoded), one space between them."""
    body = html.unescape(_TAG.sub(" ", event.body_html)) if event.body_html else ""
    return " \n ".join(part for part in (event.title, event.summary or "", body) if part)


def select_events(events: Sequence, source_filters: dict[str, KeywordFilter], subscriber_filter: KeywordFilter) -> list:
    """The events that pass their source's filter and then the subscriber's, in their order."""
    if not subscriber_filter and not source_filters:
        return list(events)
    kept = []
    for event in events:
        source_filter = source_filters.get(event.source)
        if not source_filter and not subscriber_filter:
            kept.append(event)
            continue
        text = event_text(event)
        if (not source_filter or source_filter.passes(text)) and (not subscriber_filter or subscriber_filter.passes(text)):
            kept.append(event)
    return kept
