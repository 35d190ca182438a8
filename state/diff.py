"""A readable change: paragraphs added, removed, moved and changed; inside a changed paragraph,
the sentences added or removed, and the words changed inside a reworded sentence.

Small enough for an email: at most MAX_ENTRIES paragraphs and MAX_CHARS characters.
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

from state.normalize import site_text

MAX_ENTRIES = 20
MAX_CHARS = 8000
_TOKENS = re.compile(r"\s+|[^\s]+")
# A sentence with the space after it: up to .!? (and their full-width forms) or 。, closing
# quotes and brackets included, then spaces (none after 。).
_SENTENCES = re.compile(r"\S.*?(?:[.!?\uff01\uff1f][\"'\u2019\u201d)\]]*(?=\s|$)|\u3002|$)\s*", re.S)
# Two paragraphs are "the same paragraph, edited" when most of the words of the shorter are kept
# in order (an appended sentence: all of them) ...
KEPT_SHARE = 0.8
KEPT_WORDS = 3


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


def sentences(text: str) -> list[str]:
    """A paragraph's sentences, each with the spaces after it (their concatenation is `text`)."""
    found = _SENTENCES.findall(text)
    lead = text[:len(text) - len(text.lstrip())]
    if lead and found:
        found[0] = lead + found[0]
    return found or [text]


def sentence_diff(old: str, new: str) -> list[list[str]]:
    """Word ops (as word_diff) at the level people read: a sentence added or removed is one
    insert or delete; only a reworded sentence is compared word by word."""
    a, b = sentences(old), sentences(new)
    ops: list[list[str]] = []

    def add(op: str, text: str) -> None:
        if not text:
            return
        if ops and ops[-1][0] == op:
            ops[-1][1] += text
        else:
            ops.append([op, text])

    for tag, i1, i2, j1, j2 in SequenceMatcher(None, [s.strip() for s in a], [s.strip() for s in b],
                                               autojunk=False).get_opcodes():
        if tag == "equal":
            add("equal", "".join(b[j1:j2]))
        elif tag == "replace" and i2 - i1 == j2 - j1 and all(similar(a[i1 + k], b[j1 + k], 0.5) for k in range(i2 - i1)):
            for k in range(i2 - i1):
                for op, piece in word_diff(a[i1 + k], b[j1 + k]):
                    add(op, piece)
        else:
            add("delete", "".join(a[i1:i2]))
            add("insert", "".join(b[j1:j2]))
    return ops


def similar(old: str, new: str, threshold: float = 0.5) -> bool:
    """Close enough to show as one paragraph with marked words, rather than one out, one in: the
    words are mostly the same, or most of the shorter one's words are kept in order (a long
    paragraph with a sentence added, or a short one grown into a long one)."""
    a, b = old.split(), new.split()
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() >= threshold:
        return True
    kept = sum(block.size for block in matcher.get_matching_blocks())
    return kept >= KEPT_WORDS and kept >= KEPT_SHARE * min(len(a), len(b))


def _moves(entries: list[dict]) -> list[dict]:
    """A paragraph removed in one place and added unchanged in another is one "moved" entry, where
    it now stands (the old place is dropped)."""
    removed: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        if entry["op"] == "removed":
            removed.setdefault(" ".join(entry["text"].split()), []).append(index)
    dropped: set[int] = set()
    for index, entry in enumerate(entries):
        key = " ".join(entry.get("text", "").split())
        if entry["op"] == "added" and removed.get(key):
            dropped.add(removed[key].pop(0))
            entries[index] = {"op": "moved", "text": entry["text"]}
    return [entry for index, entry in enumerate(entries) if index not in dropped]


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
                    entries.append({"op": "changed", "words": sentence_diff(a, b)})
                else:
                    entries += [{"op": "removed", "text": a}, {"op": "added", "text": b}]
            entries += [{"op": "removed", "text": p} for p in old[i1 + pairs:i2]]
            entries += [{"op": "added", "text": p} for p in new[j1 + pairs:j2]]
    entries = _moves(entries)
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
