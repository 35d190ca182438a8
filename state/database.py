"""Opening the database: what URL a configured `database` means, the engine for it, and its
schema revision. Every storage module (sources, posts, events, subscribers, outbox, lease)
builds on `Database`."""
from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from state.errors import NoDatabase, SchemaMismatch, StorageError, wrap_public_methods

SQLITE_PREFIX = "sqlite:///"

# A PostgreSQL server that does not answer must not hang a command or a daemon job forever; and
# the server must notice a client cut off by the network within a minute or so (its keepalives),
# so that the session's locks do not block the daemon that takes over.
PG_CONNECT_ARGS = {"connect_timeout": 10}
PG_SESSION_OPTIONS = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"

MIGRATIONS = resources.files("state") / "migrations"
_REVISION_LINE = re.compile(r"^revision(?:\s*:[^=\n]*)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION_LINE = re.compile(r"^down_revision(?:\s*:[^=\n]*)?\s*=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def database_url(database: str, base_dir: Path | None = None) -> str:
    """The SQLAlchemy URL of a configured `database`: a file path (relative to `base_dir`, else
    the working directory) is a SQLite database; postgresql:// means psycopg 3, the driver
    postwatch installs (SQLAlchemy's default for it is psycopg2)."""
    if "://" not in database:
        return SQLITE_PREFIX + str(((base_dir or Path.cwd()) / database).resolve())
    if database.startswith("postgresql://"):
        return database.replace("postgresql://", "postgresql+psycopg://", 1)
    return database


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (":memory:" for an in-memory one); None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or ":memory:"


def database_display_name(url: str) -> str:
    """The database as the operator knows it: a file path, or the URL without its password."""
    path = sqlite_path(url)
    if path is not None:
        return path
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def pg_connect_args(extra: dict, *options: str) -> dict:
    """psycopg connect arguments: the timeouts and keepalives above, the caller's own, and more
    server `options` (`-c setting=value`)."""
    merged = " ".join(filter(None, [PG_SESSION_OPTIONS, extra.get("options"), *options]))
    return {**PG_CONNECT_ARGS, **extra, "options": merged}


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@wrap_public_methods
class Database:
    """An open database. `url`: a bare file path or `sqlite:///path` (WAL, foreign keys, 5 s busy
    timeout), or `postgresql://...`. Opening runs the Alembic migrations to the newest revision.
    `read_only=True` migrates nothing, writes nothing and creates no file: a missing database
    raises NoDatabase, one at another schema revision SchemaMismatch.

    Every public method of a subclass raises StorageError for storage failures."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        wrap_public_methods(cls)

    def __init__(self, url: str, *, connect_args: dict | None = None, migrate: bool = True,
                 read_only: bool = False):
        self.url = database_url(url)
        self.is_sqlite = sqlite_path(self.url) is not None
        self.read_only = read_only
        self.connect_args = connect_args or {}
        self.display_name = database_display_name(self.url)
        try:
            if read_only:
                self.engine = self._make_read_only_engine()
                self._check_revision()
            else:
                self.engine = self._make_engine()
                if migrate:
                    self.migrate()
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(self.display_name, exc) from exc

    def _make_engine(self) -> Engine:
        path = sqlite_path(self.url)
        if path is None:
            return create_engine(self.url, pool_pre_ping=True, connect_args=pg_connect_args(self.connect_args))
        if path and path != ":memory:":
            # Subscribers' addresses live here: a new database (and the -wal/-shm files SQLite
            # gives the same mode) is readable by the account postwatch runs as only.
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = create_engine(self.url, connect_args={"timeout": 5, **self.connect_args})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            # Let SQLAlchemy's begin() issue BEGIN IMMEDIATE: a writer takes the write lock up
            # front, so two processes never deadlock upgrading a read lock.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _make_read_only_engine(self) -> Engine:
        path = sqlite_path(self.url)
        if path is None:
            return create_engine(self.url, pool_pre_ping=True, connect_args=pg_connect_args(
                self.connect_args, "-c default_transaction_read_only=on"))
        file = Path(path)
        if not file.is_file() or file.stat().st_size == 0:
            raise NoDatabase(path, f"no database at {path} yet; run `postwatch check` first")
        # mode=ro alone still creates -wal and -shm beside a WAL database (and cannot create them
        # in a read-only folder). With no -wal present no writer has uncheckpointed changes, so
        # the file is read as immutable: no lock, no new file. A writer that checkpoints during
        # these few milliseconds can at worst make this read fail; it cannot harm the database.
        immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
        return create_engine(f"{SQLITE_PREFIX}file:{quote(path)}?mode=ro{immutable}&uri=true",
                             connect_args={"timeout": 5, **self.connect_args})

    # -- the schema ----------------------------------------------------------------------------
    # Alembic is imported only to upgrade: it costs about 0.1-0.3 s of start-up (measured with
    # -X importtime), which a database already at head never needs. The revision graph is read
    # from the migration files' `revision` / `down_revision` lines instead.
    @staticmethod
    def revisions() -> dict[str, tuple[str, ...]]:
        """Every migration's revision -> the revisions it revises, from state/migrations/versions."""
        graph = {}
        for script in (MIGRATIONS / "versions").iterdir():
            if not script.name.endswith(".py") or script.name.startswith("_"):
                continue
            source = script.read_text(encoding="utf-8")
            revision = _REVISION_LINE.search(source)
            revises = _DOWN_REVISION_LINE.search(source)
            if revision is None or revises is None:
                raise RuntimeError(f"migration {script.name} names no revision/down_revision")
            graph[revision.group(1)] = tuple(_QUOTED.findall(revises.group(1)))
        return graph

    @classmethod
    def head_revision(cls) -> str:
        graph = cls.revisions()
        revised = {parent for parents in graph.values() for parent in parents}
        heads = sorted(set(graph) - revised)
        if len(heads) != 1:
            raise RuntimeError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); expected one")
        return heads[0]

    def _check_revision(self) -> None:
        current = self.schema_revision()
        if current is None:
            raise NoDatabase(self.display_name, f"no postwatch database at {self.display_name} yet; run `postwatch check` first")
        head = self.head_revision()
        if current == head:
            return
        if current in self.revisions():
            raise SchemaMismatch(self.display_name, f"database {self.display_name} is at schema revision {current}, this "
                                                    f"postwatch needs {head}; run `postwatch check` (or any command that "
                                                    "writes) once to upgrade it")
        raise SchemaMismatch(self.display_name, f"database {self.display_name} is at schema revision {current}, written by "
                                                "a newer postwatch; upgrade postwatch")

    def migrate(self, revision: str = "head") -> None:
        if revision == "head" and self.schema_revision() == self.head_revision():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as connection:
            config.attributes["connection"] = connection
            if revision == "head" and not inspect(connection).get_table_names():
                # A new database is built from the schema module and stamped, as Alembic's
                # cookbook does ("building an up to date database from scratch"): one step
                # instead of every migration in turn (tests/test_schema.py holds the two equal).
                from state.schema import INITIAL_ROWS, metadata

                metadata.create_all(connection)
                for table, rows in INITIAL_ROWS.items():
                    connection.execute(table.insert(), rows)
                command.stamp(config, "head")
            else:
                command.upgrade(config, revision)
            if connection.in_transaction():
                connection.commit()

    def schema_revision(self) -> str | None:
        with self.engine.connect() as connection:
            try:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                return None

    def integrity_ok(self) -> bool:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                return conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            return conn.execute(text("SELECT 1")).scalar() == 1

    def close(self) -> None:
        self.engine.dispose()
