"""Fixtures: a fresh, migrated database per test, on SQLite and on PostgreSQL.

Every test that takes ``db`` runs once per backend. SQLite gets a new file in
the test's own temporary directory (WAL, the production settings); the
service tests also run on ``sqlite-stock``, SQLite through SQLAlchemy's stock
aiosqlite adapter instead of the fast path (``ABATHUR_SQLITE_FAST_PATH=0``);
PostgreSQL gets a new schema on the server named by
``ABATHUR_TEST_POSTGRES_URL``, dropped afterwards. Without that variable the
PostgreSQL runs are skipped with a reason; CI sets it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from abathur.db.engine import create_engine
from abathur.db.sqlite.support import ENVIRONMENT as FAST_PATH
from abathur.db.url import to_url
from abathur.infrastructure.database import Database
from tests.support.templates import TEMPLATES

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]

DbFactory = Callable[..., Awaitable[Database]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_URL:
        return
    skip = pytest.mark.skip(reason="ABATHUR_TEST_POSTGRES_URL is not set")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgres":
            item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stock_sqlite(path: Path | str, **options: Any) -> Database:
    """A SQLite Database on SQLAlchemy's stock adapter: the fast path's seam
    (``db.sqlite.support``) is asked when the engine is made, and says no."""
    saved = os.environ.get(FAST_PATH)
    os.environ[FAST_PATH] = "0"
    try:
        database = Database(path, **options)
    finally:
        if saved is None:
            del os.environ[FAST_PATH]
        else:
            os.environ[FAST_PATH] = saved
    assert not database.fast_path
    return database


@asynccontextmanager
async def pg_schema(*, migrated: bool = False) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards;
    ``migrated`` makes it a copy of this run's migrated schema (see
    ``tests/support/templates.py``), which ``initialize()`` then finds at head."""
    assert PG_URL
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(to_url(PG_URL))
    try:
        async with admin.connect() as conn:
            if not (migrated and await TEMPLATES.pg_create(conn, schema, PG_URL)):
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            await conn.commit()
        yield schema
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def make_db(backend: str, tmp_path: Path) -> AsyncIterator[DbFactory]:
    """Build databases, NOT yet migrated unless asked; all are closed at teardown."""
    made: list[Database] = []
    connect_options: dict[int, dict[str, Any]] = {}
    schemas: list[Any] = []

    async def factory(
        name: str = "abathur.db",
        *,
        share_with: Database | None = None,
        migrated: bool = False,
        **options: Any,
    ) -> Database:
        """A new Database object; ``share_with`` opens the same database again;
        ``migrated`` starts it as a copy of this run's migrated database."""
        if share_with is not None:
            opener = Database if share_with.fast_path or not share_with.is_sqlite else stock_sqlite
            database = opener(share_with.url, **connect_options[id(share_with)], **options)
        elif backend in ("sqlite", "sqlite-stock"):
            if migrated:
                await TEMPLATES.sqlite_copy(tmp_path / name)
            opener = Database if backend == "sqlite" else stock_sqlite
            database = opener(tmp_path / name, **options)
        else:
            context = pg_schema(migrated=migrated)
            schema = await context.__aenter__()
            schemas.append(context)
            options.setdefault("connect_args", {"server_settings": {"search_path": schema}})
            database = Database(PG_URL, **options)
        made.append(database)
        connect_options[id(database)] = {k: v for k, v in options.items() if k == "connect_args"}
        return database

    yield factory
    for database in made:
        await database.close()
    for context in reversed(schemas):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def db(make_db: DbFactory) -> Database:
    database = await make_db(migrated=True)
    await database.initialize()
    return database


@pytest.fixture
async def task_id(db: Database) -> str:
    """An existing task, for operations whose audit rows must name one."""
    return (await db.tasks.create_task("test task")).id
