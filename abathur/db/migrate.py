"""Migrations: Alembic's configuration, the connection they run on, and the
lock that keeps one migration at a time per process."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abathur.errors import MigrationError

if TYPE_CHECKING:
    from alembic.config import Config


def script_location() -> Path:
    """The Alembic scripts: packaged in a wheel, or the repository's ``alembic/``."""
    package_dir = Path(__file__).resolve().parent.parent
    packaged = package_dir / "_alembic"
    return packaged if packaged.is_dir() else package_dir.parent / "alembic"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


@asynccontextmanager
async def migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection fit for running migrations.

    On SQLite, batch migrations copy tables; with foreign keys enforced, the
    DROP of the old copy would cascade (``ON DELETE SET NULL`` would wipe
    references) or fail. ``PRAGMA foreign_keys`` is a no-op inside a
    transaction, so it is switched off here, before Alembic begins, and the
    migration itself runs ``PRAGMA foreign_key_check`` before it commits.
    ``BEGIN IMMEDIATE`` makes concurrent migrators queue instead of racing.
    """
    async with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            yield conn
            return
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("PRAGMA foreign_keys=OFF")
        try:
            yield await conn.execution_options(sqlite_begin="IMMEDIATE")
        finally:
            if conn.in_transaction():
                await conn.rollback()
            # Outside any transaction now, so the pragma takes effect before
            # the connection goes back to the pool.
            await driver.execute("PRAGMA foreign_keys=ON")


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def process_migration_lock() -> asyncio.Lock:
    """Alembic keeps the running migration in module globals: one at a time
    per process (and event loop)."""
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


async def run_migration(engine: AsyncEngine, step: Callable[[Config], None]) -> None:
    """Run one Alembic command on a migration connection; failures become
    MigrationError."""
    async with migration_connection(engine) as conn:
        try:
            await conn.run_sync(lambda sync_conn: step(alembic_config(sync_conn)))
        except MigrationError:
            raise
        except Exception as exc:
            raise MigrationError(f"migration failed: {exc}") from exc


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
