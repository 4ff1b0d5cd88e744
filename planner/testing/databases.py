"""Where migration tests run: a small database object, and the ``--apm-db`` template that names one.

The runner reaches a database only through ``path`` and ``connect()``, so a
PostgreSQL database can later be one more class here without the stairway
changing. Only SQLite exists today, and a URL is refused with a message that
says so rather than being mistaken for a file name.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

#: What ``{name}`` in a template is replaced by may hold only these characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
NAME_FIELD = "{name}"


class DatabaseTemplateError(ValueError):
    """An ``--apm-db`` value that cannot name a fresh SQLite file per test."""


def safe_name(text: str) -> str:
    """``stairway[0027]`` → ``stairway-0027``: a test id usable in a file name."""
    return _UNSAFE.sub("-", text).strip("-.") or "test"


def check_template(template: str) -> str:
    """``template`` if it can name one SQLite file per test, else ``DatabaseTemplateError`` saying why.

    A template without ``{name}`` would make every test share one file, so one
    test's leftovers would become the next one's failure.
    """
    url = _URL.match(template)
    if url:
        scheme = url.group(1).lower()
        if scheme.startswith("postgres"):
            raise DatabaseTemplateError(
                f"--apm-db {template}: PostgreSQL is not supported yet; apm-migrate runs migrations on SQLite only. "
                f"Give a SQLite path template such as /tmp/apm/{NAME_FIELD}.db, or leave --apm-db out"
            )
        raise DatabaseTemplateError(
            f"--apm-db {template}: {scheme}:// URLs are not supported; give a SQLite path template "
            f"such as /tmp/apm/{NAME_FIELD}.db"
        )
    if NAME_FIELD not in template:
        raise DatabaseTemplateError(
            f"--apm-db {template}: the template must contain {NAME_FIELD} (each test gets its own file), "
            f"for example {template.rstrip('/')}/{NAME_FIELD}.db"
            if not template.endswith(".db")
            else f"--apm-db {template}: the template must contain {NAME_FIELD} (each test gets its own file), "
            f"for example {template[:-3]}-{NAME_FIELD}.db"
        )
    return template


class SQLiteDatabase:
    """One SQLite file that a migration test may create, throw away and connect to."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def from_template(cls, template: str, name: str) -> SQLiteDatabase:
        """The file ``template`` names for the test ``name`` (``{name}`` replaced by a safe form of it)."""
        return cls(Path(check_template(template).replace(NAME_FIELD, safe_name(name))))

    def reset(self) -> None:
        """Start from nothing: remove the file and its journals, so each test meets a fresh database.

        A template may name the same file on every run; yesterday's run must
        not be today's starting schema.
        """
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> sqlite3.Connection:
        """A connection for reading the schema or writing seed rows, in autocommit mode with foreign keys on.

        Autocommit, so no transaction is left open to block the executor's
        ``BEGIN IMMEDIATE``; foreign keys on, so a seed row pointing nowhere
        fails where it is written rather than in the next migration's check.
        """
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"
