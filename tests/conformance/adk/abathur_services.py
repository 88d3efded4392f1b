"""abathur's side of the vendored ADK suite: AbathurSessionService on an empty
database per test, SQLite (a file in the test's tmp_path) or PostgreSQL (on
``ABATHUR_TEST_POSTGRES_URL``; those runs are skipped when it is unset, like
the rest of the suite).

Migrating a fresh database costs more than most of these tests, so the schema
is migrated once per run: SQLite tests get a copy of a migrated file,
PostgreSQL tests share one migrated schema that is emptied before each test
(``DELETE``) and dropped at the end of the run. The service's own path (a
URL it opens and migrates itself) is tested in tests/integrations/test_adk.py.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from abathur.db.engine import create_engine
from abathur.db.url import to_url
from abathur.infrastructure.database import Database
from abathur.integrations.adk import AbathurSessionService
from tests.conftest import PG_URL

SQLITE = "ABATHUR_SQLITE"
POSTGRES = "ABATHUR_POSTGRES"


class Templates:
    """The migrated databases of this run, made on first use."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.sqlite: Path | None = None
        self.schema: str | None = None

    async def sqlite_copy(self, dest: Path) -> Path:
        if self.sqlite is None:
            self.dir = Path(tempfile.mkdtemp(prefix="abathur-adk-"))
            path = self.dir / "template.db"
            db = Database(path)
            await db.initialize()
            await db.close()  # the last connection folds the WAL into the file
            self.sqlite = path
        shutil.copyfile(self.sqlite, dest)
        return dest

    def _pg(self, schema: str) -> Database:
        assert PG_URL
        return Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})

    async def pg_database(self) -> Database:
        if self.schema is None:
            schema = f"t_adk_{uuid.uuid4().hex[:12]}"
            await _admin(f'CREATE SCHEMA "{schema}"')
            db = self._pg(schema)
            await db.initialize()
            await db.close()
            self.schema = schema
        db = self._pg(self.schema)
        async with db.transaction() as tx:  # the adapter writes these two (and events)
            await tx.execute(text("DELETE FROM shared_state"))
            await tx.execute(text("DELETE FROM sessions"))  # its events go with it
        return db

    def cleanup(self) -> None:
        if self.schema is not None:
            asyncio.run(_admin(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


async def _admin(statement: str) -> None:
    assert PG_URL
    engine = create_engine(to_url(PG_URL))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


TEMPLATES = Templates()


@asynccontextmanager
async def abathur_service(kind: str, tmp_path: Path) -> AsyncIterator[AbathurSessionService]:
    """A service on an empty, migrated database of its own."""
    if kind == POSTGRES and not PG_URL:
        pytest.skip("ABATHUR_TEST_POSTGRES_URL is not set")
    if kind == SQLITE:
        db = Database(await TEMPLATES.sqlite_copy(tmp_path / "abathur.db"))
    else:
        db = await TEMPLATES.pg_database()
    try:
        yield AbathurSessionService(db)
    finally:
        await db.close()
