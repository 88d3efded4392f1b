"""The service tests run on SQLite's stock path too: a release of aiosqlite or
SQLAlchemy that the fast path does not support makes abathur slower, never
wrong (``abathur.db.sqlite.support``)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "sqlite-stock", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
