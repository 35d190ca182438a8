"""A readable change: paragraphs added, removed and changed, with the changed words marked.

Small enough for an email: at most MAX_ENTRIES paragraphs and MAX_CHARS characters.
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

from state.normalize import site_text

MAX_ENTRIES = 20
MAX_CHARS = 8000
_TOKENS = re.compile(r"\s+|[^\s]+")


def word_diff(old: str, new: str) -> list[list[str]]:
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    ops: list[list[str]] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append(["equal", "".join(a[i1:i2])])
        else:
            if i2 > i1:
                ops.append(["delete", "".join(a[i1:i2])])
            if j2 > j1:
                ops.append(["insert", "".join(b[j1:j2])])
    return ops


def similar(old: str, new: str, threshold: float = 0.5) -> bool:
    """Close enough to show as one paragraph with marked words, rather than one out, one in."""
    return SequenceMatcher(None, old.split(), new.split(), autojunk=False).ratio() >= threshold


def paragraph_diff(old: tuple[str, ...] | list[str], new: tuple[str, ...] | list[str],
                   old_title: str | None = None, new_title: str | None = None) -> dict:
    entries: list[dict] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, list(old), list(new), autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "delete":
            entries += [{"op": "removed", "text": p} for p in old[i1:i2]]
        elif tag == "insert":
            entries += [{"op": "added", "text": p} for p in new[j1:j2]]
        else:
            pairs = min(i2 - i1, j2 - j1)
            for k in range(pairs):
                a, b = old[i1 + k], new[j1 + k]
                if similar(a, b):
                    entries.append({"op": "changed", "words": word_diff(a, b)})
                else:
                    entries += [{"op": "removed", "text": a}, {"op": "added", "text": b}]
            entries += [{"op": "removed", "text": p} for p in old[i1 + pairs:i2]]
            entries += [{"op": "added", "text": p} for p in new[j1 + pairs:j2]]
    # A title stored before text was made safe on entry may still hold a control character.
    old_title, new_title = (t if t is None else site_text(t) for t in (old_title, new_title))
    title = {"old": old_title, "new": new_title} if old_title is not None and new_title is not None and old_title != new_title else None
    kept, size, truncated = [], 0, False
    for entry in entries:
        length = len(entry.get("text", "")) + sum(len(w[1]) for w in entry.get("words", []))
        if len(kept) >= MAX_ENTRIES or size + length > MAX_CHARS:
            truncated = True
            break
        kept.append(entry)
        size += length
    return {"title": title, "paragraphs": kept, "truncated": truncated}
