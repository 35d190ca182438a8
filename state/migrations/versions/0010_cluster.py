"""Scale-out workers (`postwatch worker`): when each source is next to be checked, so that the
planning task of any worker can pick the due ones with FOR UPDATE SKIP LOCKED and move them on
in the same transaction. NULL: never planned (due now). The single-machine daemon does not use
it: it keeps deciding from last_check_at.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True)))
    op.create_index("ix_sources_next_check", "sources", ["next_check_at"])


def downgrade():
    op.drop_index("ix_sources_next_check", table_name="sources")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("next_check_at")
