"""Migrations: Alembic's configuration, the connection they run on, and the
lock that keeps one migration at a time per process."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abathur.db import errors as db_errors
from abathur.errors import MigrationError, ValidationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


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


async def run_migration(
    engine: AsyncEngine, step: Callable[[Config], None], revision: str, *, downgrade: bool
) -> None:
    """Run one Alembic command (``step``, towards ``revision``) on a migration
    connection, after ``check_migration`` found it sound; other failures
    become MigrationError."""

    def run(sync_conn: Connection) -> None:
        check_migration(sync_conn, revision, downgrade=downgrade)
        step(alembic_config(sync_conn))

    async with migration_connection(engine) as conn:
        try:
            await conn.run_sync(run)
        except (MigrationError, ValidationError):
            raise
        except Exception as exc:
            orig = getattr(exc, "orig", None)
            detail = " ".join(str(orig if orig is not None else exc).split())
            if db_errors.is_read_only(exc):
                raise MigrationError(
                    f"the database refuses writes, so it cannot be migrated to {revision!r} "
                    f"(a read-only file or directory, connection or user): {detail}"
                ) from exc
            raise MigrationError(f"migration to {revision!r} failed: {detail}") from exc


def script_directory() -> ScriptDirectory:
    """Alembic's view of abathur's revisions (the files under ``alembic/``)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def known_revisions(script: ScriptDirectory) -> set[str]:
    """Every revision id this code has: a database at any other was migrated
    by a newer abathur."""
    return {rev.revision for rev in script.walk_revisions()}


# Targets Alembic resolves against the database's revision, not the script.
_SYMBOLIC = ("head", "heads", "base")
_RELATIVE = re.compile(r"\w*[+-]\d+")  # -1, +2, head-1, 0005+2


def check_migration(connection: Connection, revision: str, *, downgrade: bool) -> None:
    """Refuse, before Alembic touches anything, a migration that cannot go well.

    * The database's revision is unknown to this code (``MigrationError``):
      a newer abathur migrated it; Alembic could neither upgrade nor
      downgrade it.
    * No ``alembic_version`` but abathur's tables exist (``MigrationError``):
      the first revision would fail on them half-way.
    * ``revision`` is unknown, or lies the wrong way (``upgrade`` to an
      older revision, ``downgrade`` to a newer one), which Alembic would
      report obscurely or silently do nothing about (``ValidationError``).

    The read happens in a transaction of its own, ended before Alembic
    begins; the states it can see are committed ones, so a concurrent
    migrator cannot make it refuse wrongly.
    """
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    script = script_directory()
    head = script.get_current_head()
    try:
        current = current_revision(connection)
        clash = [] if current is not None else _abathur_tables(connection)
    finally:
        if connection.in_transaction():
            connection.rollback()
    if current is None and clash:
        raise MigrationError(
            f"the database has abathur's tables ({', '.join(clash)}) but no "
            "alembic_version table, so its revision is unknown; refusing to migrate "
            "it (restore alembic_version, or move the tables away)"
        )
    known = known_revisions(script)
    if current is not None and current not in known:
        raise MigrationError(
            f"the database is at revision {current!r}, which this abathur does not "
            f"know (its newest is {head!r}): a newer abathur migrated it; upgrade "
            "abathur, or downgrade the database with the abathur that migrated it"
        )
    if downgrade and revision in ("head", "heads") and current not in (None, head):
        raise ValidationError(
            f"the database's {current!r} is older than head {head!r}: use upgrade to go forward"
        )
    if revision in _SYMBOLIC or _RELATIVE.fullmatch(revision):
        return  # relative targets: Alembic resolves them against ``current``
    try:
        target = script.get_revision(revision)
    except (CommandError, RevisionError):
        target = None
    if target is None or target.revision not in known:
        raise ValidationError(
            f"unknown revision {revision!r}: `abathur db history` lists the revisions "
            f"(newest {head!r}), or use head, base, +N, -N"
        )
    if current is None or target.revision == current:
        return
    ancestors = {rev.revision for rev in script.iterate_revisions(current, "base")}
    if not downgrade and target.revision in ancestors:
        raise ValidationError(
            f"revision {target.revision!r} is older than the database's {current!r}: "
            "use downgrade to go back"
        )
    if downgrade and target.revision not in ancestors:
        raise ValidationError(
            f"revision {target.revision!r} is newer than the database's {current!r}: "
            "use upgrade to go forward"
        )


def _abathur_tables(connection: Connection) -> list[str]:
    from sqlalchemy import inspect

    from abathur.schema.models import Base

    return sorted(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
