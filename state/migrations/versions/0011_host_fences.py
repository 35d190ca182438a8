"""Scale-out workers: when the next request to a host may start, left by the worker that last
crawled it for the one that crawls it next (state.cluster.host_turn), so that the per-host delay
and a Retry-After hold across workers, not only within one. The single-machine daemon does not
use it: its process gate knows.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "host_fences",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("free_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("host_fences")
