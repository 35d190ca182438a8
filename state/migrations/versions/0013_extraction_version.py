"""Each kept version of a post records the reader that produced its body (crawler.items.PostItem
.reader: "trafilatura-1", "heuristic-1", "webflow-1", "selectors-1", "feed-1", ...). A body read
by another reader than the stored one is not compared with it: it becomes the new reference
without an "updated" event (state.changes.reader_changed), so a new extractor mails no edits.

Rows from before are NULL: read by an unknown reader. For the page bodies of the generic kinds
(html, auto, feed), whose reader changed to trafilatura before readers were recorded, that counts
as another reader; elsewhere it counts as today's.

SQLite: the column is added and dropped in place (ALTER TABLE ... ADD/DROP COLUMN; DROP needs
SQLite 3.35+, an older one keeps the spare column, which revision 0012's code never reads).

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

from state.migrations.inplace import drop_columns

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _has_reader(bind) -> bool:
    return any(column["name"] == "reader" for column in sa.inspect(bind).get_columns("post_versions"))


def upgrade():
    bind = op.get_bind()
    if not _has_reader(bind):       # kept by a downgrade on an SQLite too old to drop it
        op.execute("ALTER TABLE post_versions ADD COLUMN reader VARCHAR(40)")


def downgrade():
    drop_columns("post_versions", "reader")
