"""Stored state and change detection. `Store` composes one storage class per entity, each owning
its SQL (state.sources, posts, events, subscribers, outbox, lease); the change rules are pure
functions in state.changes."""
from state.errors import AlreadyRunning, NeedsConsent, NoDatabase, SchemaMismatch, StorageError, describe_error
from state.records import (ApplyResult, CheckInput, ComposedMessage, CrawlState, EventRecord, KnownPost, ObservedCheck,
                           ObservedPost,
                           OutboxItem, SourceRecord, SourceStatus, Subscriber, SubscriberImport)
from state.database import database_display_name, database_url
from state.store import Store

__all__ = ["AlreadyRunning", "ApplyResult", "CheckInput", "ComposedMessage", "CrawlState", "EventRecord", "KnownPost",
           "NeedsConsent", "NoDatabase", "ObservedCheck", "ObservedPost", "OutboxItem", "SchemaMismatch", "SourceRecord",
           "SourceStatus", "StorageError",
           "Store", "Subscriber", "SubscriberImport", "database_display_name", "database_url", "describe_error"]
