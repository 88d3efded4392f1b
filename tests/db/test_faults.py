"""Faults reach callers as ``abathur.errors`` exceptions only: a closed
Database, a full disk, a PostgreSQL server that restarts under writers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from abathur.errors import DatabaseClosedError
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory


async def test_a_closed_database_refuses_every_call(db: Database) -> None:
    task = await db.tasks.create_task("before close")
    await db.close()
    calls = {
        "write": lambda: db.tasks.create_task("after close"),
        "read": lambda: db.tasks.get_task(task.id),
        "memory": lambda: db.memory.add_memory("user:a", "k", {}, "semantic", "a", task.id),
        "session": lambda: db.sessions.create_session("s-after-close", "app", "u"),
        "revision": db.current_revision,
        "upgrade": db.initialize,
        "integrity": db.integrity_check,
    }
    for name, call in calls.items():
        try:
            await call()
        except DatabaseClosedError as exc:
            assert "is closed" in str(exc), name
        else:
            pytest.fail(f"{name} ran on a closed database")
    with pytest.raises(DatabaseClosedError, match="closed"):
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
    with pytest.raises(DatabaseClosedError, match="closed"):
        async with db.transaction(write=False) as session:
            await session.execute(text("SELECT 1"))
    await db.close()  # closing twice is harmless


async def test_closing_one_database_leaves_another_on_the_same_file_open(
    make_db: DbFactory,
) -> None:
    first = await make_db()
    await first.initialize()
    second = await make_db(share_with=first)
    task = await first.tasks.create_task("kept")
    await first.close()
    found = await second.tasks.get_task(task.id)
    assert found is not None and found.id == task.id
