"""Channels beyond email: each outbox message names the channel it leaves through (email,
webhook, apprise); a subscriber keeps their keyword filters and where they were added (the
command line, or a [[routes]] entry of the config file).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    # Every message queued before this revision was an email.
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("channel", sa.String(20), nullable=False, server_default="email"))
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("filters", sa.Text))
        batch.add_column(sa.Column("origin", sa.String(20), nullable=False, server_default="cli"))


def downgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("origin")
        batch.drop_column("filters")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("channel")
