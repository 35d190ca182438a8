"""Signing up: a subscriber may be pending (asked on the /subscribe page, not yet confirmed), and
each keeps how and when they joined and the request that confirmed it. Forgotten addresses
(erased on request) leave only a hash behind.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("joined_via", sa.String(20)))
        batch.add_column(sa.Column("signup_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("confirm_ip", sa.String(64)))
        batch.add_column(sa.Column("confirm_user_agent", sa.String(300)))
        batch.add_column(sa.Column("consent_note", sa.String(200)))
    op.create_table(
        "forgotten_addresses",
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("forgotten_addresses")
    with op.batch_alter_table("subscribers") as batch:
        for name in ("consent_note", "confirm_user_agent", "confirm_ip", "confirmed_at", "reminded_at", "signup_at",
                     "joined_via"):
            batch.drop_column(name)
