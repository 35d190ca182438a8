"""The operator's console (issue 34): operator accounts (Argon2id password hashes), their
server-side sessions (only the sha256 of a session id is stored), the audit log of what each
operator did, and two source columns the console steers: `paused_at` (a paused source is not
checked) and `check_requested_at` ("check now": the daemon's next sweep takes the source).

Revision ID: 0016
Revises: 0015
"""
import sqlalchemy as sa
from alembic import op

from state.migrations.inplace import drop_columns

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("password_changed_at", UTC, nullable=False),
        sa.Column("last_sign_in_at", UTC),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("operator_id", sa.Integer, sa.ForeignKey("operators.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("client", sa.String(64)),
    )
    op.create_index("ix_operator_sessions_operator", "operator_sessions", ["operator_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTC, nullable=False),
        sa.Column("operator", sa.String(100)),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("detail", sa.Text),
        sa.Column("client", sa.String(64)),
    )
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("paused_at", UTC))
        batch.add_column(sa.Column("check_requested_at", UTC))


def downgrade():
    drop_columns("sources", "check_requested_at", "paused_at")
    op.drop_table("audit_log")
    op.drop_index("ix_operator_sessions_operator", "operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
