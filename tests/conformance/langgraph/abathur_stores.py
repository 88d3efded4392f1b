"""abathur's side of the vendored LangGraph store suite.

The vendored files build their stores through the module names
``SqliteStore`` (sync: ``with SqliteStore.from_conn_string(conn) as store:
store.setup()``) and ``AsyncSqliteStore`` (``async with ... as store: await
store.setup()``). For the abathur runs, ./conftest.py rebinds those names to
the factories below, which yield an ``AbathurStore`` on an empty, migrated
database of its own: SQLite (a copy of a migrated template file) or
PostgreSQL (one migrated schema per run, emptied before each store, dropped
at the end; on ``ABATHUR_TEST_POSTGRES_URL``).

The async factory yields ``AsyncLifecycleStore``, an ``AbathurStore`` whose
four lifecycle methods carry the names LangGraph's async stores give them
(``await store.setup()``, ``await store.sweep_ttl()``,
``await store.start_ttl_sweeper()``, ``await store.stop_ttl_sweeper()``);
``AbathurStore`` itself follows ``BaseStore``'s naming (``sweep_ttl`` sync,
``asweep_ttl`` async). Everything else is ``AbathurStore`` unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from abathur.db.engine import create_engine
from abathur.db.url import to_url
from abathur.infrastructure.database import Database
from abathur.integrations.langgraph import AbathurStore
from tests.conftest import PG_URL

T = TypeVar("T")

# The tables an AbathurStore writes, children before parents.
WRITTEN_TABLES = ("audit", "memory_embeddings", "memory_expiry", "memory_entries", "tasks")
SQLITE = "abathur-sqlite"
POSTGRES = "abathur-postgres"


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own (callable with or
    without a running loop in this thread)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(*statements: str) -> None:
    assert PG_URL
    engine = create_engine(to_url(PG_URL))
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


class Templates:
    """The migrated databases of this run, made on first use."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.sqlite: Path | None = None
        self.schema: str | None = None
        self.tables: list[str] = []

    def sqlite_copy(self, dest: Path) -> Path:
        if self.sqlite is None:
            self.dir = Path(tempfile.mkdtemp(prefix="abathur-langgraph-"))
            path = self.dir / "template.db"

            async def build() -> None:
                db = Database(path)
                await db.initialize()
                await db.close()  # the last connection folds the WAL into the file

            run_blocking(build())
            self.sqlite = path
        shutil.copyfile(self.sqlite, dest)
        return dest

    def pg_schema(self) -> str:
        """The run's migrated schema, emptied of what a store writes."""
        if self.schema is None:
            schema = f"t_lg_{uuid.uuid4().hex[:12]}"

            async def build() -> list[str]:
                await _admin(f'CREATE SCHEMA "{schema}"')
                db = pg_database(schema)
                await db.initialize()
                await db.close()
                engine = create_engine(to_url(PG_URL or ""))
                try:
                    async with engine.begin() as conn:
                        rows = await conn.execute(
                            text(
                                "SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = :s AND table_name <> 'alembic_version'"
                            ),
                            {"s": schema},
                        )
                        return [r[0] for r in rows]
                finally:
                    await engine.dispose()

            self.tables = run_blocking(build())
            self.schema = schema
        # DELETE, not TRUNCATE: on these few rows it is far cheaper (TRUNCATE
        # takes an exclusive lock and new files per table). Children first.
        written = [t for t in WRITTEN_TABLES if t in self.tables]
        run_blocking(_admin(*(f'DELETE FROM "{self.schema}"."{t}"' for t in written)))
        return self.schema

    def cleanup(self) -> None:
        if self.schema is not None:
            run_blocking(_admin(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def pg_database(schema: str) -> Database:
    assert PG_URL
    return Database(PG_URL, **pg_options(schema))


def pg_options(schema: str) -> dict[str, Any]:
    return {"connect_args": {"server_settings": {"search_path": schema}}}


TEMPLATES = Templates()


def _target(backend: str, conn_string: str, scratch: list[Path]) -> tuple[Database, dict[str, Any]]:
    """The database a store gets for ``conn_string``, migrated already (the
    store closes it): SQLite (the file the test named, or a fresh one for
    ``:memory:``) or the PostgreSQL schema."""
    if backend == POSTGRES:
        if not PG_URL:
            pytest.skip("ABATHUR_TEST_POSTGRES_URL is not set")
        # The schema is migrated already: the store gets the Database as it is
        # (no migration check per test) and closes it.
        return pg_database(TEMPLATES.pg_schema()), {"close_database": True}
    if conn_string == ":memory:":
        folder = Path(tempfile.mkdtemp(prefix="abathur-lg-"))
        scratch.append(folder)
        path = folder / "store.db"
    else:
        path = Path(conn_string)
        path.unlink(missing_ok=True)
    return Database(TEMPLATES.sqlite_copy(path)), {"close_database": True}


def _cleanup(scratch: list[Path], conn_string: str) -> None:
    for folder in scratch:
        shutil.rmtree(folder, ignore_errors=True)
    if conn_string != ":memory:":
        for suffix in ("-wal", "-shm"):
            with_suffix = conn_string + suffix
            if os.path.exists(with_suffix):
                os.unlink(with_suffix)


class SyncFactory:
    """Stands in for ``SqliteStore`` in the vendored sync tests."""

    def __init__(self, backend: str):
        self.backend = backend

    @contextmanager
    def from_conn_string(
        self, conn_string: str, *, index: Any = None, ttl: Any = None
    ) -> Iterator[AbathurStore]:
        scratch: list[Path] = []
        target, options = _target(self.backend, conn_string, scratch)
        try:
            with AbathurStore(target, index=index, ttl=ttl, **options) as store:
                yield store
        finally:
            _cleanup(scratch, conn_string)


class AsyncLifecycleStore(AbathurStore):
    """AbathurStore with LangGraph's async-store names for its lifecycle methods."""

    async def setup(self) -> None:  # type: ignore[override]
        await self.asetup()

    async def sweep_ttl(self) -> int:  # type: ignore[override]
        return await self.asweep_ttl()

    async def start_ttl_sweeper(  # type: ignore[override]
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        return await self.astart_ttl_sweeper(sweep_interval_minutes)

    async def stop_ttl_sweeper(  # type: ignore[override]
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (LangGraph's name)
    ) -> bool:
        return await self.astop_ttl_sweeper(timeout)


class AsyncFactory:
    """Stands in for ``AsyncSqliteStore`` in the vendored async tests."""

    def __init__(self, backend: str):
        self.backend = backend

    @asynccontextmanager
    async def from_conn_string(
        self, conn_string: str, *, index: Any = None, ttl: Any = None
    ) -> AsyncIterator[AbathurStore]:
        scratch: list[Path] = []
        target, options = _target(self.backend, conn_string, scratch)
        try:
            async with AsyncLifecycleStore(target, index=index, ttl=ttl, **options) as store:
                yield store
        finally:
            _cleanup(scratch, conn_string)
