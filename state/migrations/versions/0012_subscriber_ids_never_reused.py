"""Subscriber ids are never reused: they are in the links and addresses mailed to each subscriber
(digest/tokens.py), and SQLite hands the highest id again once its row was deleted (a signup that
expired, `subscribers forget`) unless the table is AUTOINCREMENT. PostgreSQL's serial sequence
never goes back: nothing to do there. Other ids are in no mailed token (outbox ids, event seqs).

SQLite cannot add AUTOINCREMENT to a table: it is rebuilt from its own CREATE statement, as
batch mode would, but keeping the outbox's links: with foreign keys on (state/database.py turns
them on, and a migration's transaction cannot turn them off) dropping the old table sets
outbox.subscriber_id to NULL, so they are put back from a copy taken before.

The ids already deleted above the highest one left can still be handed out once more; tokens
sign the address and the subscription too, so none of theirs fits the next person.

Revision ID: 0012
Revises: 0011
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    create = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'subscribers'")).scalar()
    if "AUTOINCREMENT" in create.upper():
        return
    rebuilt, primary = re.subn(r",\s*PRIMARY KEY \(id\)", "", create, count=1)
    rebuilt, column = re.subn(r"\bid INTEGER NOT NULL", "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT", rebuilt, count=1)
    if not (primary and column):
        raise RuntimeError(f"revision 0012: the subscribers table has an unexpected form: {create}")
    rebuilt = re.sub(r"^\s*CREATE TABLE\s+\"?subscribers\"?", "CREATE TABLE _subscribers_0012", rebuilt, count=1)
    indexes = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'subscribers' "
                                   "AND sql IS NOT NULL")).scalars().all()
    bind.execute(sa.text("CREATE TEMP TABLE _outbox_subscribers AS SELECT id, subscriber_id FROM outbox "
                         "WHERE subscriber_id IS NOT NULL"))
    bind.execute(sa.text(rebuilt))
    bind.execute(sa.text("INSERT INTO _subscribers_0012 SELECT * FROM subscribers"))
    bind.execute(sa.text("DROP TABLE subscribers"))
    bind.execute(sa.text("ALTER TABLE _subscribers_0012 RENAME TO subscribers"))
    for index in indexes:
        bind.execute(sa.text(index))
    bind.execute(sa.text("UPDATE outbox SET subscriber_id = (SELECT k.subscriber_id FROM _outbox_subscribers k "
                         "WHERE k.id = outbox.id) WHERE id IN (SELECT id FROM _outbox_subscribers)"))
    bind.execute(sa.text("DROP TABLE _outbox_subscribers"))


def downgrade():
    # A table that never reuses its ids is a valid revision 0011: going back keeps it, rather
    # than reopening the reuse.
    pass
