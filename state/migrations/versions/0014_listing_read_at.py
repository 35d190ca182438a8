"""When a source's listing was last read (answered 200 or 304): a source of kind `auto` whose
listing advertised a feed is checked through that feed alone, and its listing is read again when
the feed fails, on the full sweep, or when this is more than a day old (issue 32).

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    # NULL for every source: the next check of each reads its listing, as checks did before.
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("listing_read_at", sa.DateTime(timezone=True)))


def downgrade():
    # In place, not batch mode: a batch rebuild drops the old table, and with SQLite's foreign keys
    # on that deletes (or nulls) every row that refers to it (posts and their versions, outbox rows).
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info < (3, 35):
            return      # cannot drop a column in place: a spare NULL-able column is a valid older revision
    op.execute("ALTER TABLE sources DROP COLUMN listing_read_at")
