"""The daemon keeps no APScheduler job store any more (issue 31: what is due is read from
`sources.next_check_at` and the stored digest window), so the table APScheduler's
SQLAlchemyJobStore left in databases a daemon ran on goes. Nothing of postwatch's own is in it.

Revision ID: 0019
Revises: 0018
"""
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")


def downgrade():
    pass        # an older postwatch's daemon creates the table again when it starts
