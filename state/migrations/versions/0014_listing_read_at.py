"""When a source's listing was last read (answered 200 or 304): a source of kind `auto` whose
listing advertised a feed is checked through that feed alone, and its listing is read again when
the feed fails, on the full sweep, or when this is more than a day old (issue 32).

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

from state.migrations.inplace import drop_columns

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    # NULL for every source: the next check of each reads its listing, as checks did before.
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("listing_read_at", sa.DateTime(timezone=True)))


def downgrade():
    drop_columns("sources", "listing_read_at")
