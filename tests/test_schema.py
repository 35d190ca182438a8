"""A new database is built from state/schema.py in one step and stamped at the head revision,
while an existing one is upgraded migration by migration: both must give the same database, or a
fresh install and an upgraded one would behave differently."""
from __future__ import annotations

import sqlite3

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from state import Store
from state.database import MIGRATIONS
from state.schema import INITIAL_ROWS, metadata


def _alembic(connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _migrate_step_by_step(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        command.upgrade(_alembic(connection), "head")
        connection.commit()
    engine.dispose()


def _differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_server_default": True})
        found = compare_metadata(context, metadata)
        found += [("rows", table.name) for table, rows in INITIAL_ROWS.items()
                  if [dict(r) for r in connection.execute(table.select()).mappings()] != rows]
    engine.dispose()
    return found


def test_every_migration_in_turn_gives_the_schema_a_new_database_is_built_from(store):
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    engine = create_engine(url)
    with engine.connect() as connection:          # back to an empty database, then up one by one
        command.downgrade(_alembic(connection), "base")
        connection.commit()
        assert inspect(connection).get_table_names() == ["alembic_version"]
    engine.dispose()
    _migrate_step_by_step(url)
    assert _differences(url) == []


def test_a_new_database_is_at_the_head_revision_and_goes_down_and_up_again(store):
    assert store.schema_revision() == store.head_revision()
    store.add_subscriber("reader@example.org")
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        command.downgrade(_alembic(connection), "base")
        command.upgrade(_alembic(connection), "head")
        connection.commit()
        assert connection.execute(text("SELECT count(*) FROM subscribers")).scalar() == 0
    engine.dispose()
    assert _differences(url) == []


def test_a_new_sqlite_database_never_reuses_a_subscriber_id(tmp_path):
    Store(str(tmp_path / "state.db")).close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        [ddl] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'subscribers'").fetchone()
    assert "AUTOINCREMENT" in ddl.upper()


def test_the_job_store_an_older_daemon_left_goes_at_the_upgrade(store):
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    engine = create_engine(url)
    with engine.connect() as connection:      # a database an older daemon (APScheduler's job store) ran on
        command.downgrade(_alembic(connection), "0018")
        connection.execute(text("CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, next_run_time FLOAT, "
                                "job_state BYTEA)" if engine.dialect.name == "postgresql" else
                                "CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, next_run_time FLOAT, "
                                "job_state BLOB)"))
        connection.commit()
    engine.dispose()
    upgraded = Store(url)
    assert upgraded.schema_revision() == upgraded.head_revision()
    with upgraded.engine.connect() as connection:
        assert "apscheduler_jobs" not in inspect(connection).get_table_names()
    upgraded.close()
