"""Every public name of ``sqlite3.Connection`` on the migration connection: the driver's, or refused.

The proxy forwards them through one property each (``_routes`` in
``planner.engines.sqlite.connection``), not ``__getattr__``: a class with
``__getattr__`` makes Python look up every attribute of its instances the slow
way, ``conn.execute`` in a data migration's loop included (docs/performance.md).
The names come from the running Python's ``sqlite3.Connection``, so a name a
newer Python adds is forwarded too; these checks run on every Python CI runs.
"""

from __future__ import annotations

import sqlite3

import pytest

from planner.engines.sqlite.connection import MigrationConnection, MigrationCursor
from planner.errors import TransactionTampered
from planner.transaction_guard import REFUSED_ATTRIBUTES, REFUSED_METHODS

PUBLIC = sorted(n for n in dir(sqlite3.Connection) if not n.startswith("_"))
#: What the guard does itself rather than hand to the driver (the refused methods aside).
GUARDS_OWN = {"execute", "executemany", "executescript", "cursor", "commit"}


@pytest.fixture
def pair():
    raw = sqlite3.connect(":memory:", isolation_level=None)
    raw.execute("BEGIN")
    yield raw, MigrationConnection(raw, "0001", "apply")
    raw.close()


@pytest.mark.parametrize("guarded", [MigrationConnection, MigrationCursor])
def test_lookups_never_take_the_slow_path_of_getattr(guarded: type) -> None:
    assert not any("__getattr__" in vars(cls) for cls in guarded.__mro__ if cls is not object)


def test_each_name_of_the_drivers_cursor_is_its_own_but_the_guarded_ones(pair) -> None:
    raw, conn = pair
    conn.execute("CREATE TABLE t (a)")
    cursor = conn.cursor()
    cursor.execute("INSERT INTO t VALUES (1), (2)")
    assert cursor.rowcount == 2 and cursor.lastrowid == 2 and cursor.connection is conn
    cursor.arraysize = 7
    assert cursor.arraysize == 7  # written through to the driver's cursor, read back from it
    assert cursor.execute("SELECT a FROM t ORDER BY a").fetchmany() == [(1,), (2,)]
    assert cursor.description[0][0] == "a"
    for name in (n for n in dir(sqlite3.Cursor) if not n.startswith("_")):
        assert hasattr(cursor, name), name
    for name in ("_cursor_private", "no_such_method"):
        with pytest.raises(AttributeError):
            getattr(cursor, name)
    with pytest.raises(TransactionTampered):
        cursor.execute("COMMIT")
    assert raw.in_transaction


@pytest.mark.parametrize("name", [n for n in PUBLIC if n not in REFUSED_METHODS])
def test_each_allowed_name_is_the_drivers_own_or_the_guarded_one(pair, name: str) -> None:
    raw, conn = pair
    if name in GUARDS_OWN:
        assert getattr(conn, name).__qualname__.split(".")[0] in ("MigrationConnection", "GuardedRoutes"), name
        return
    theirs = getattr(raw, name)
    ours = getattr(conn, name)
    assert ours == theirs, name  # a bound method equals another bound to the same object; values are the same


@pytest.mark.parametrize("name", sorted(REFUSED_METHODS))
def test_each_refused_method_refuses_whether_or_not_sqlite3_has_it(pair, name: str) -> None:
    raw, conn = pair
    with pytest.raises(TransactionTampered):
        getattr(conn, name)()
    assert conn.tampered is not None
    assert raw.in_transaction  # nothing ended the transaction


@pytest.mark.parametrize("name", sorted(REFUSED_ATTRIBUTES))
def test_each_refused_attribute_refuses_on_read(pair, name: str) -> None:
    _, conn = pair
    with pytest.raises(TransactionTampered):
        getattr(conn, name)


def test_private_and_unknown_names_are_not_found(pair) -> None:
    _, conn = pair
    for name in ("_MigrationConnection__x", "_private", "no_such_method"):
        with pytest.raises(AttributeError):
            getattr(conn, name)


def test_a_forwarded_setting_reads_and_writes_through_to_the_driver(pair) -> None:
    raw, conn = pair
    conn.row_factory = sqlite3.Row
    assert raw.row_factory is sqlite3.Row and conn.row_factory is sqlite3.Row
    assert conn.in_transaction is True and conn.total_changes == raw.total_changes
