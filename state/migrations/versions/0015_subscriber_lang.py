"""Each subscriber's language (issue 33): the digest, the confirmation mail and the pages are in
English ("en", every subscriber before this revision) or Korean ("ko").

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

from state.migrations.inplace import drop_columns

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("lang", sa.String(8), nullable=False, server_default="en"))


def downgrade():
    drop_columns("subscribers", "lang")
