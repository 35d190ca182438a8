"""Suppression that sticks: subscribers count hard bounces in a row, and a suppressed address
keeps why and when.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("bounces", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("suppressed_reason", sa.String(200)))
        batch.add_column(sa.Column("suppressed_at", sa.DateTime(timezone=True)))


def downgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("suppressed_at")
        batch.drop_column("suppressed_reason")
        batch.drop_column("bounces")
