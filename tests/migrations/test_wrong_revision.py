"""Opening or migrating a database at the wrong revision: one newer than the
code, one whose alembic_version is gone, a target that does not exist or lies
the wrong way. Each is refused with the same ``abathur.errors`` exception on
both backends, before anything is changed; two processes migrating the same
fresh database at once both end at head."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from abathur.db.migrate import alembic_config
from abathur.errors import DatabaseError, MigrationError, ValidationError
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.support.processes import run_all_ok

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
OLD = "0005_byte_order_collations"


async def _tasks(db: Database) -> list[str]:
    async with db.transaction(write=False) as session:
        return list((await session.execute(text("SELECT prompt FROM tasks"))).scalars())


async def _set_version(db: Database, revision: str) -> None:
    async with db.transaction() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


async def test_a_database_newer_than_the_code_is_refused_untouched(make_db: DbFactory) -> None:
    db = await make_db(migrated=True)
    await db.initialize()
    await db.tasks.create_task("kept")
    await _set_version(db, "0099_from_the_future")
    for attempt in (db.initialize(), db.upgrade("head"), db.downgrade(OLD), db.downgrade("-1")):
        with pytest.raises(MigrationError, match="'0099_from_the_future', which this abathur"):
            await attempt
    assert await db.current_revision() == "0099_from_the_future"
    assert await _tasks(db) == ["kept"]


async def test_tables_without_alembic_version_are_refused_untouched(make_db: DbFactory) -> None:
    db = await make_db(migrated=True)
    await db.initialize()
    await db.tasks.create_task("kept")
    async with db.transaction() as session:
        await session.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(MigrationError, match=r"abathur's tables \(.*tasks.*\) but no alembic_ver"):
        await db.initialize()
    assert await db.current_revision() is None
    assert await _tasks(db) == ["kept"]


async def test_foreign_tables_do_not_stop_a_first_migration(make_db: DbFactory) -> None:
    """Another application's tables beside ours (a shared PostgreSQL schema)."""
    db = await make_db()
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    await db.initialize()
    assert await db.current_revision() == HEAD


async def test_an_unknown_target_revision_is_refused(make_db: DbFactory) -> None:
    db = await make_db(migrated=True)
    for attempt in (db.upgrade("no_such_revision"), db.downgrade("no_such_revision")):
        with pytest.raises(ValidationError, match="unknown revision 'no_such_revision'"):
            await attempt


async def test_upgrade_backwards_and_downgrade_forwards_are_refused(make_db: DbFactory) -> None:
    """Alembic silently does nothing for the first and names no revision for
    the second; the database stays where it was."""
    db = await make_db()
    await db.upgrade(OLD)
    with pytest.raises(
        ValidationError,
        match=re.escape(f"'0001_milestone1_core' is older than the database's '{OLD}'"),
    ):
        await db.upgrade("0001_milestone1_core")
    with pytest.raises(
        ValidationError, match=re.escape(f"'{HEAD}' is newer than the database's '{OLD}'")
    ):
        await db.downgrade(HEAD)
    with pytest.raises(ValidationError, match="older than head"):
        await db.downgrade("head")
    assert await db.current_revision() == OLD
    await db.upgrade("0006")  # a unique prefix still names a revision
    await db.downgrade(OLD)
    assert await db.current_revision() == OLD


async def test_a_read_only_database_at_an_old_revision(make_db: DbFactory) -> None:
    """A read-only SQLite file (``mode=ro`` stands in for file permissions,
    which do not bind root) or PostgreSQL connection: it reads, refuses to
    migrate with one message on both backends, and nothing changes."""
    db = await make_db()
    await db.upgrade(OLD)
    await db.tasks.create_task("kept")
    if db.is_sqlite:
        read_only = Database(f"sqlite+aiosqlite:///file:{db.url.database}?mode=ro&uri=true")
    else:
        async with db.engine.connect() as conn:
            schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
        settings = {"search_path": schema, "default_transaction_read_only": "on"}
        read_only = Database(db.url, connect_args={"server_settings": settings})
    try:
        assert await read_only.current_revision() == OLD
        with pytest.raises(MigrationError, match="refuses writes, so it cannot be migrated to 'h"):
            await read_only.initialize()
        with pytest.raises(DatabaseError, match=r"^the database refuses writes"):
            await read_only.tasks.create_task("refused")
    finally:
        await read_only.close()
    assert await db.current_revision() == OLD
    assert await _tasks(db) == ["kept"]


CONCURRENT = """
from abathur.infrastructure.database import Database

async def main(url, schema):
    options = {"connect_args": {"server_settings": {"search_path": schema}}} if schema else {}
    db = Database(url, **options)
    try:
        await db.initialize()
        await db.tasks.create_task("from a child")
    finally:
        await db.close()
"""


async def test_processes_migrating_one_fresh_database_at_once(
    make_db: DbFactory, tmp_path: Path
) -> None:
    db = await make_db()
    if db.is_sqlite:
        args = [str(db.url), ""]
    else:
        async with db.engine.connect() as conn:
            schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
        args = [db.url.render_as_string(hide_password=False), schema]
    await run_all_ok(tmp_path, CONCURRENT, [args] * 3)
    assert await db.current_revision() == HEAD
    assert await _tasks(db) == ["from a child"] * 3
    assert await db.validate_foreign_keys() == []


async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    db = Database(path)
    try:
        with pytest.raises(DatabaseError, match=r"^the file is not an SQLite database"):
            await db.initialize()
        with pytest.raises(DatabaseError, match=r"^the file is not an SQLite database"):
            await db.current_revision()
    finally:
        await db.close()
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["notes.db"]  # no -wal or -shm left beside it


async def test_a_directory_given_as_the_database_file(tmp_path: Path) -> None:
    db = Database(tmp_path)
    try:
        with pytest.raises(DatabaseError, match=r"^the database file cannot be opened"):
            await db.initialize()
    finally:
        await db.close()


async def test_an_empty_file_is_an_empty_database(tmp_path: Path) -> None:
    """SQLite's own rule: a zero-byte file is a database without tables."""
    path = tmp_path / "empty.db"
    path.touch()
    async with Database(path) as db:
        assert await db.current_revision() == HEAD
