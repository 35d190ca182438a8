"""Revision 0012 (issue 29): subscriber ids are never reused, on a database from before it too,
with every row and the outbox's links to its subscribers kept. SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text

from state import Store

from test_migration_channels import alembic, old_store  # noqa: F401 - the fixture

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


def test_0012_an_old_database_stops_reusing_subscriber_ids_and_keeps_its_rows(old_store):  # noqa: F811
    old, reopen = old_store
    old.migrate("0011")
    # Rows as the code of revision 0011 wrote them (today's Store reads columns added since: 0015's lang).
    with old.engine.begin() as conn:
        for email in ("ada@example.org", "bo@example.org", "cy@example.org"):
            conn.execute(text("INSERT INTO subscribers (email, cadence, send_time, timezone, status, cursor, created_at, "
                              "subscribed_at, joined_via) VALUES (:email, 'daily', '08:00', 'UTC', 'active', 0, :now, "
                              ":now, 'cli')"), {"email": email, "now": NOW})
        ids = dict(conn.execute(text("SELECT email, id FROM subscribers")).all())
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO outbox (subscriber_id, to_addr, message_id, subject, raw, status, attempts, "
                          "next_attempt_at, created_at) VALUES (:id, 'ada@example.org', '<m1@x>', 's', :raw, "
                          "'pending', 0, :now, :now)"), {"id": ids["ada@example.org"], "raw": b"raw", "now": NOW})
    old.close()

    store = reopen()
    assert store.schema_revision() == Store.head_revision() == "0016"
    ada, cy = store.get_subscriber("ada@example.org"), store.get_subscriber("cy@example.org")
    assert (ada.id, cy.id, ada.lang) == (ids["ada@example.org"], ids["cy@example.org"], "en")
    assert [s.email for s in store.list_subscribers()] == ["ada@example.org", "bo@example.org", "cy@example.org"]
    [queued] = store.due_outbox(NOW, claim=False)
    assert queued.subscriber_id == ada.id                      # the rebuild left the outbox's link alone
    store.forget_subscriber("cy@example.org", now=NOW)         # the highest id goes
    dee = store.add_subscriber("dee@example.org", now=NOW)
    assert dee.id > cy.id
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            create = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")).scalar()
            assert "AUTOINCREMENT" in create and conn.execute(text("PRAGMA foreign_key_check")).all() == []
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    with store.engine.begin() as conn:                          # the unique address still holds
        try:
            conn.execute(text("INSERT INTO subscribers (email, cadence, send_time, timezone, status, cursor, created_at) "
                              "VALUES ('dee@example.org', 'daily', '08:00', 'UTC', 'active', 0, :now)"), {"now": NOW})
            duplicated = True
        except Exception:
            duplicated = False
    assert not duplicated
    alembic(store, "downgrade", "0011")
    alembic(store, "upgrade", "head")
    assert store.schema_revision() == "0016" and len(store.list_subscribers()) == 3
    store.close()


def test_a_new_database_never_reuses_a_subscriber_id(tmp_path):
    store = Store(str(tmp_path / "new.db"))
    store.add_subscriber("ada@example.org", now=NOW)
    last = store.add_subscriber("bo@example.org", now=NOW)
    store.forget_subscriber("bo@example.org", now=NOW)
    assert store.add_subscriber("cy@example.org", now=NOW).id > last.id
    store.close()
