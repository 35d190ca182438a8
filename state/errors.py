"""What the store raises. Library code raises these; only the CLI turns them into one line and
an exit code."""
from __future__ import annotations

import functools
import inspect
import re



class AlreadyRunning(RuntimeError):
    """Another daemon holds the instance lock of this database."""


class NeedsConsent(ValueError):
    """An address that unsubscribed or was suppressed, which only its owner's new consent
    subscribes again; str() is one line naming it and why."""

    def __init__(self, email: str, reason: str):
        super().__init__(f"{email}: {reason}")
        self.email, self.reason = email, reason


class StorageError(RuntimeError):
    """The database could not be opened, read or written. str() is one line: which database, why."""

    def __init__(self, database: str, cause: BaseException | str):
        self.database = database
        self.cause = cause
        super().__init__(self._line(database, cause))

    @staticmethod
    def _line(database: str, cause: BaseException | str) -> str:
        return f"database {database}: {cause if isinstance(cause, str) else describe_error(cause)}"


class NoDatabase(StorageError):
    """A command that only reads found no database to read. `cause` is the whole line."""

    @staticmethod
    def _line(database: str, cause: BaseException | str) -> str:
        return str(cause)


class SchemaMismatch(NoDatabase):
    """A command that only reads found a database at another schema revision than this code's."""


def database_error_types() -> tuple[type[BaseException], ...]:
    """What a database failure reaches a caller as: StorageError, or SQLAlchemy's own error from
    code that talks to the database without the Store (APScheduler's job store). Asked for when
    an exception is being matched, so a command that touches no database (--help) never loads
    SQLAlchemy."""
    from sqlalchemy.exc import SQLAlchemyError

    return StorageError, SQLAlchemyError


def describe_error(exc: BaseException) -> str:
    """One line for a driver or OS error: the first line of the DBAPI's own message, without
    SQLAlchemy's SQL echo and background link or the server's LINE/HINT lines."""
    from sqlalchemy.exc import StatementError    # loaded already whenever a database error exists

    cause = (exc.orig if isinstance(exc, StatementError) else None) or exc
    if isinstance(cause, OSError) and cause.strerror:
        where = f" ({cause.filename})" if cause.filename else ""
        return f"{cause.strerror}{where}"
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", str(cause))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def raises_storage_errors(method):
    """Turn SQLAlchemy and OS errors raised by a storage method into a StorageError naming the
    database (`self.display_name`)."""
    from sqlalchemy.exc import SQLAlchemyError     # storage classes load SQLAlchemy anyway

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(self.display_name, exc) from exc

    return wrapper


def wrap_public_methods(cls):
    """Every public method defined on `cls` raises StorageError for storage failures."""
    for name, value in list(vars(cls).items()):
        if inspect.isfunction(value) and not name.startswith("_"):
            setattr(cls, name, raises_storage_errors(value))
    return cls
