"""Fixtures shared by the tests: the LiNK replica, a real SMTP server, the real `postwatch` CLI
against them, a PostgreSQL database of one's own, and the Store on SQLite and on PostgreSQL.
Plain helpers (a free port, a config file, the daemon as a subprocess) live in
postwatch.testing.harness."""
from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from postwatch.testing.harness import PG_SERVER, Cli, write_config
from postwatch.testing.mailcatcher import MailCatcher
from postwatch.testing.replica import BlogReplica
from state import Store

PG_URL = os.environ.get("POSTWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def site():
    with BlogReplica() as replica:
        yield replica


@pytest.fixture
def smtp(tmp_path):
    with MailCatcher(tmp_path / "received") as catcher:
        yield catcher


@pytest.fixture
def cli(tmp_path, site, smtp) -> Cli:
    return Cli(write_config(tmp_path, site.blog_url, smtp.port))


@pytest.fixture
def pg_database():
    """The name of a PostgreSQL database of this test's own on PG_SERVER, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"pw_lock_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (set POSTWATCH_TEST_PG_SERVER to another server): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A new Store, once on SQLite and once on PostgreSQL (a schema of its own in PG_URL's database)."""
    if request.param == "sqlite":
        s = Store(str(tmp_path / "state.db"), removal_confirm_after=timedelta(hours=1))
        yield s
        s.close()
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (set POSTWATCH_TEST_PG to another server): {exc}")
    s = Store(PG_URL, removal_confirm_after=timedelta(hours=1), connect_args={"options": f"-csearch_path={schema}"})
    yield s
    s.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
