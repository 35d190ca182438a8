"""The console's figures (issue 34): what each check cost the watched site per source and UTC day,
the last check's requests (URL, status, bytes), when the current run of failed checks began,
and failed sign-ins, stored so that the sign-in throttle holds across a restart.

Revision ID: 0018
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "source_traffic",
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("checks", sa.Integer, nullable=False),
        sa.Column("failed_checks", sa.Integer, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("response_bytes", sa.Integer, nullable=False),
        sa.Column("not_modified", sa.Integer, nullable=False),
    )
    op.create_table(
        "source_last_check",
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("checked_at", UTC, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("response_bytes", sa.Integer, nullable=False),
        sa.Column("not_modified", sa.Integer, nullable=False),
        sa.Column("exchanges", sa.Text, nullable=False),
        sa.Column("failing_since", UTC),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", UTC, nullable=False),
    )
    op.create_index("ix_login_failures_key_at", "login_failures", ["key", "at"])


def downgrade():
    op.drop_index("ix_login_failures_key_at", "login_failures")
    op.drop_table("login_failures")
    op.drop_table("source_last_check")
    op.drop_table("source_traffic")
