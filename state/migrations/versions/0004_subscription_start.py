"""Subscribers remember when their current subscription began, so an unsubscribe token only
works for the subscription it was issued for.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # Left NULL for the subscriptions that exist now: their links, signed before tokens carried
    # the subscription, keep working until the address is unsubscribed and subscribed again.
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("subscribed_at", sa.DateTime(timezone=True)))


def downgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("subscribed_at")
