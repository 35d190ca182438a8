"""Keyword filters: which events a subscriber hears of. Pure functions, no SQL.

A term is a word or phrase, matched case-insensitively as whole words ("visa" matches "Visa
rules", not "visas"), or a regular expression between slashes ("/refugees?/"), searched
case-insensitively. An event passes a filter when it matches at least one `include` term (or
the filter has none) and no `exclude` term, in its title or its text (summary and body)."""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class FilterProblem(ValueError):
    """A term that is not usable; str() is one line naming it."""


@functools.lru_cache(maxsize=1024)
def compile_term(term: str) -> re.Pattern:
    """The pattern of one term; FilterProblem when it is empty or not a regular expression."""
    if not isinstance(term, str) or not term.strip():
        raise FilterProblem(f"{term!r} is not a word or a /regular expression/")
    term = term.strip()
    if len(term) >= 2 and term.startswith("/") and term.endswith("/"):
        try:
            return re.compile(term[1:-1], re.IGNORECASE)
        except re.error as exc:
            raise FilterProblem(f"{term!r} is not a regular expression: {exc}") from None
    # \b only where the term begins or ends with a word character: "C++" and "#tag" still match.
    start = r"\b" if re.match(r"\w", term) else ""
    end = r"\b" if re.search(r"\w$", term) else ""
    return re.compile(start + r"\s+".join(map(re.escape, term.split())) + end, re.IGNORECASE)


@dataclass(frozen=True)
class KeywordFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

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
        if self.include and not any(compile_term(t).search(text) for t in self.include):
            return False
        return not any(compile_term(t).search(text) for t in self.exclude)

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
