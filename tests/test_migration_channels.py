"""Revision 0009 on SQLite and PostgreSQL: messages queued before it are emails, subscribers
added before it have no filters and come from the command line; it goes down to 0008 and up
again with what was stored."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from state import Store

from conftest import PG_URL

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request, tmp_path):
    """A Store at revision 0008, on SQLite and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        s = Store(str(tmp_path / "old.db"), migrate=False)
        yield s, lambda: Store(str(tmp_path / "old.db"))
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    args = {"options": f"-csearch_path={schema}"}
    s = Store(PG_URL, migrate=False, connect_args=args)
    yield s, lambda: Store(PG_URL, connect_args=args)
    s.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def alembic(store: Store, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from state.database import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.connect() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)
        if connection.in_transaction():
            connection.commit()


def test_0009_keeps_what_was_queued_as_email_and_goes_down_and_up(old_store):
    old, reopen = old_store
    old.migrate("0008")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO subscribers (email, cadence, send_time, timezone, status, cursor, created_at) "
                          "VALUES ('ada@example.org', 'daily', '08:00', 'UTC', 'active', 0, :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO outbox (subscriber_id, to_addr, message_id, subject, raw, status, attempts, "
                          "next_attempt_at, created_at) VALUES (1, 'ada@example.org', '<m1@x>', 's', :raw, 'pending', "
                          "0, :now, :now)"), {"raw": b"raw", "now": NOW})
    old.close()

    store = reopen()
    assert store.schema_revision() == Store.head_revision() == "0016"
    [item] = store.due_outbox(NOW, claim=False)
    assert (item.channel, item.to_addr) == ("email", "ada@example.org")
    assert store.due_channels(NOW) == ["email"]
    [ada] = store.list_subscribers()
    assert (ada.include, ada.exclude, ada.origin) == ((), (), "cli")
    store.add_subscriber("ada@example.org", include=["visa"], now=NOW)

    alembic(store, "downgrade", "0008")
    assert store.schema_revision() == "0008"
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT email FROM subscribers")).scalars().all() == ["ada@example.org"]
    alembic(store, "upgrade", "head")
    assert store.due_outbox(NOW, claim=False)[0].channel == "email"
    assert store.get_subscriber("ada@example.org").include == ()      # the column came back empty
    store.close()
