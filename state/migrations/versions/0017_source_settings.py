"""A source added with the CLI or the console keeps its own check interval and keyword filters,
edited in the console (issue 34); a configured source's come from the config file.

Revision ID: 0017
Revises: 0016
"""
import sqlalchemy as sa
from alembic import op

from state.migrations.inplace import drop_columns

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = ("interval_seconds", "include_terms", "exclude_terms")


def upgrade():
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("interval_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("include_terms", sa.Text, nullable=True))
        batch.add_column(sa.Column("exclude_terms", sa.Text, nullable=True))


def downgrade():
    drop_columns("sources", *COLUMNS)
