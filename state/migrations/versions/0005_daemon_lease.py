"""The daemon lease: one daemon per PostgreSQL database, also when a connection drops.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "daemon_lease",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", UTC, nullable=False),
        sa.Column("renewed_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
    )


def downgrade():
    op.drop_table("daemon_lease")
