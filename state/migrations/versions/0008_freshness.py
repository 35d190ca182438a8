"""Freshness: the feed a source's listing advertises is kept (so later checks read it first), and
each post keeps when its own page was last fetched (revisits by age, issue #16).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("discovered_feed_url", sa.Text))
    with op.batch_alter_table("posts") as batch:
        batch.add_column(sa.Column("page_checked_at", sa.DateTime(timezone=True)))
    # Pages read by the last full sweep count as checked then, so an upgrade does not make every
    # old post's revisit fall due at once.
    op.execute("UPDATE posts SET page_checked_at = (SELECT last_full_sweep_at FROM sources "
               "WHERE sources.id = posts.source_id)")


def downgrade():
    with op.batch_alter_table("posts") as batch:
        batch.drop_column("page_checked_at")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("discovered_feed_url")
