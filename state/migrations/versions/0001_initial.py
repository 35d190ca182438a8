"""Initial schema: sources, posts, versions, events, subscribers, outbox, validators, robots.

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("feed_url", sa.Text),
        sa.Column("sitemap_url", sa.Text),
        sa.Column("selectors", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("baseline_done", sa.Boolean, nullable=False),
        sa.Column("last_check_at", UTC),
        sa.Column("last_success_at", UTC),
        sa.Column("last_error", sa.Text),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("degraded", sa.Boolean, nullable=False),
        sa.Column("degraded_reason", sa.Text),
        sa.Column("last_full_sweep_at", UTC),
        sa.Column("created_at", UTC, nullable=False),
    )
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("published_at", UTC),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("gone_since", UTC),
        sa.Column("content_hash", sa.String(64)),
        sa.UniqueConstraint("source_id", "url", name="uq_posts_source_url"),
    )
    op.create_table(
        "post_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("body_html", sa.Text),
        sa.Column("fetched_at", UTC, nullable=False),
    )
    op.create_index("ix_post_versions_post", "post_versions", ["post_id", "origin", "id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, unique=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id", ondelete="SET NULL")),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("published_at", UTC),
        sa.Column("summary", sa.Text),
        sa.Column("body_html", sa.Text),
        sa.Column("diff", sa.Text),
        sa.Column("version_hash", sa.String(64)),
        sa.Column("previous_hash", sa.String(64)),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
    )
    op.create_index("ix_events_source_status", "events", ["source_id", "status"])
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("cadence", sa.String(20), nullable=False),
        sa.Column("send_time", sa.String(5), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("weekday", sa.Integer),
        sa.Column("sources", sa.Text),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("unsubscribed_at", UTC),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="SET NULL")),
        sa.Column("to_addr", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("first_seq", sa.Integer),
        sa.Column("last_seq", sa.Integer),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "http_validators",
        sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("updated_at", UTC, nullable=False),
    )
    op.create_table(
        "robots_cache",
        sa.Column("origin", sa.String(512), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("fetched_at", UTC, nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(sa.table("counters", sa.column("name", sa.String), sa.column("value", sa.Integer)),
                   [{"name": "event_seq", "value": 0}])


def downgrade():
    for table in ("counters", "robots_cache", "http_validators", "outbox", "subscribers", "events",
                  "post_versions", "posts", "sources"):
        op.drop_table(table)
