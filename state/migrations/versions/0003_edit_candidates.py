"""Edit candidates: new content waits for a second fetch before it is an edit; volatile posts.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "edit_candidates",
        sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("origin", sa.String(20), primary_key=True),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("title", sa.Text),
        sa.Column("streak", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True)),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("volatile_since", sa.DateTime(timezone=True)),
    )


def downgrade():
    op.drop_table("edit_candidates")
