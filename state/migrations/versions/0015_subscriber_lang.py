"""Each subscriber's language (issue 33): the digest, the confirmation mail and the pages are in
English ("en", every subscriber before this revision) or Korean ("ko").

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("lang", sa.String(8), nullable=False, server_default="en"))


def downgrade():
    # In place, not batch mode: a batch rebuild drops the old table, and with SQLite's foreign keys
    # on that deletes (or nulls) every row that refers to it (posts and their versions, outbox rows).
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info < (3, 35):
            return      # cannot drop a column in place: a spare NULL-able column is a valid older revision
    op.execute("ALTER TABLE subscribers DROP COLUMN lang")
