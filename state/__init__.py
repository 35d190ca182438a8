"""Stored state and change detection. `Store` owns every SQL statement postwatch runs."""
from state.store import (AlreadyRunning, ApplyResult, CheckInput, ComposedMessage, CrawlState, EventRecord, KnownPost,
                         NoDatabase, OutboxItem, SchemaMismatch, SourceRecord, SourceStatus, StorageError, Store,
                         Subscriber, SubscriberImport)

__all__ = ["AlreadyRunning", "ApplyResult", "CheckInput", "ComposedMessage", "CrawlState", "EventRecord", "KnownPost",
           "NoDatabase", "OutboxItem", "SchemaMismatch", "SourceRecord", "SourceStatus", "StorageError", "Store",
           "Subscriber", "SubscriberImport"]
