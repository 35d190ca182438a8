"""Dropping columns in a downgrade without Alembic's batch mode.

A batch rebuild copies a table to a new one and drops the old: with SQLite's foreign keys on
(state/database.py turns them on), dropping the old `sources` or `subscribers` table deletes or
nulls every row that refers to it (posts and their versions, outbox rows). SQLite 3.35 and
later drop a column in place; an older SQLite keeps the spare NULL-able column, which the older
revision's code never reads."""
from __future__ import annotations

import sqlite3

from alembic import op


def drop_columns(table: str, *columns: str) -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        return
    for column in columns:
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
