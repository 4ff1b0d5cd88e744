"""The hook that the pytest plugin adds: seed data for migration tests.

Kept in its own module so that declaring it costs nothing but this file.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_apm_seed(version: str, connection: Any) -> None:
    """Insert rows right after ``version`` was applied, so later migrations (and rollbacks) meet data.

    Called in the ``upgrade`` test and the stairway every time a version is
    applied, with an open transaction on ``connection`` that is committed
    when every implementation has returned (and rolled back if one raises,
    which fails the test naming the version). Ignore the versions you do not
    seed. In the stairway a version is applied twice (before and after its
    rollback) and rows in tables the rollback kept are still there the
    second time, so write ``INSERT OR IGNORE`` or check first. Insert rows
    only: a table created here is reported as something a rollback left.

    On SQLite ``connection`` is a ``sqlite3`` connection; on PostgreSQL it is
    the connection migrations receive (``execute`` with ``?`` or ``%s``
    parameters, ``fetchval``...). Both say ``connection.engine``
    (``"sqlite"`` or ``"postgresql"``), so one conftest can seed either;
    ``INSERT ... ON CONFLICT DO NOTHING`` works on both.

    Declare it with ``@pytest.hookimpl(optionalhook=True)`` so the conftest
    still loads when the plugin is disabled (``-p no:apm``).
    """
