"""Operator alert bookkeeping, send leases on the outbox, an index for retention.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    )
    # A message being handed to the SMTP server is leased, so that a daemon and a CLI run never
    # send it at the same time; a lease left by a crashed process expires.
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True)))
    op.create_index("ix_events_created", "events", ["created_at"])


def downgrade():
    op.drop_index("ix_events_created", "events")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_until")
    op.drop_table("alerts")
