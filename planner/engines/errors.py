"""What can go wrong with a database engine itself: the driver, the server, the backup tool.

These subclass ``planner.errors.DatabaseError`` (exit 6), so the command's
error table needs no new row. They live beside the engines rather than in
``planner/errors.py`` because only the engine layer raises them. Every
message shows the connection string through ``redact``: never a password.
"""

from __future__ import annotations

from planner.urls import shown as masked
from planner.errors import DatabaseError


class DriverMissing(DatabaseError):
    """A PostgreSQL URL was given, but psycopg (the ``postgres`` extra) is not installed."""

    def __init__(self, shown: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        super().__init__(
            f"{shown} is a PostgreSQL database, and the PostgreSQL driver is not installed: "
            f"pip install 'apm-migrate[postgres]'",
            database=shown,  # a connection string, redacted, not a file
        )


class DatabaseUnreachable(DatabaseError):
    """The server refused the connection or could not be reached; nothing was changed."""

    def __init__(self, shown: str, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"cannot connect to {shown}: {reason}; nothing was changed", database=shown)


class DatabaseMissing(DatabaseUnreachable):
    """The server answered, but the database the URL names does not exist on it (``CREATE DATABASE`` first)."""


class ServerError(DatabaseError):
    """The server failed a statement of the ledger or the lock (not a migration's); nothing was changed."""

    def __init__(self, shown: str, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"PostgreSQL error on {shown}: {reason}", database=shown)


class BackupToolMissing(DatabaseError, FileNotFoundError):
    """``pg_dump`` (or ``pg_restore``) is not installed, so the backup cannot be written (or restored)."""

    def __init__(self, shown: str, *, tool: str = "pg_dump", task: str = "back up {shown} before rolling back",
                 advice: str | None = None):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.tool = tool
        #: What the caller that wanted the tool lets the user do; ``None`` leaves it to the command.
        self.advice = advice
        super().__init__(
            f"cannot {task.format(shown=shown)}: {tool} is not installed (apt-get install "
            f"postgresql-client); nothing was changed" + (f". {advice}" if advice else ""), database=shown,
        )


class BackupFailed(DatabaseError):
    """``pg_dump`` ran and failed; the command that wanted the backup (a rollback, a restore) did not run."""

    def __init__(self, shown: str, reason: str, advice: str | None = None):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        #: What the caller that wanted the dump lets the user do; ``None`` leaves it to the command.
        self.advice = advice
        super().__init__(f"pg_dump could not back up {shown}: {reason}; nothing was changed"
                         + (f". {advice}" if advice else ""), database=shown)


class RestoreFailed(DatabaseError):
    """``pg_restore`` failed; its single transaction rolled back, so the database is as it was."""

    def __init__(self, shown: str, backup: object, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"pg_restore could not restore {shown} from {backup}: {reason}; the restore ran in one "
                         f"transaction, so nothing was changed", database=shown)
