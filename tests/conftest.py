"""Fixtures shared by the tests: the LiNK replica, a real SMTP server, the real `postwatch` CLI
against them, and a PostgreSQL database of one's own. Plain helpers (a free port, a config file,
the daemon as a subprocess) live in postwatch.testing.harness."""
from __future__ import annotations

import uuid

import pytest

from postwatch.testing.harness import PG_SERVER, Cli, write_config
from postwatch.testing.mailcatcher import MailCatcher
from postwatch.testing.replica import BlogReplica


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
