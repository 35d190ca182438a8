"""Stored state and change detection. `Store` composes one storage class per entity, each owning
its SQL (state.sources, posts, events, subscribers, outbox, lease); the change rules are pure
functions in state.changes.

The names below are loaded from their modules when first asked for: `from state import
Subscriber` costs a dataclass, while `Store` loads SQLAlchemy (0.2-0.3 s here), which a command
that touches no database (`postwatch --help`) must not wait for.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "state.errors": ("AlreadyRunning", "NeedsConsent", "NoDatabase", "SchemaMismatch", "StorageError", "describe_error",
                     "database_error_types"),
    "state.records": ("ApplyResult", "CheckInput", "ComposedMessage", "CrawlState", "EventRecord", "KnownPost",
                      "ObservedCheck", "ObservedPost", "OutboxItem", "SourceRecord", "SourceStatus", "Subscriber",
                      "SubscriberImport"),
    "state.database": ("database_display_name", "database_url"),
    "state.store": ("Store",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'state' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
