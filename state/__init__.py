"""Stored state and change detection. `Store` owns every SQL statement postwatch runs."""
from state.store import (AlreadyRunning, ApplyResult, CheckInput, ComposedMessage, CrawlState, EventRecord, KnownPost,
                         OutboxItem, SourceRecord, SourceStatus, Store, Subscriber)

__all__ = ["AlreadyRunning", "ApplyResult", "CheckInput", "ComposedMessage", "CrawlState", "EventRecord", "KnownPost",
           "OutboxItem", "SourceRecord", "SourceStatus", "Store", "Subscriber"]
