"""Revision 0009: ``memory_entries.is_current``, up (backfilled: the highest
version of each key, deleted or not), down (every row kept) and up again, with
data, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from abathur.errors import AlreadyExistsError
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.migrations.test_migrations import _run, snapshot

M8 = "0008_shared_state_scopes"


async def _rows(db: Database, *, flag: bool = True) -> list[tuple[object, ...]]:
    column = ", is_current" if flag else ""
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text(
                f"SELECT namespace, key, version, is_deleted{column} FROM memory_entries "
                "ORDER BY namespace, key, version"
            )
        )
        return [tuple(bool(v) if i >= 3 else v for i, v in enumerate(r)) for r in result]


async def _write(db: Database, task_id: str) -> None:
    memory = db.memory
    await memory.put_memory("user:m", "three", {"v": 1}, "semantic", by="a", task_id=task_id)
    await memory.put_memory("user:m", "three", {"v": 2}, "semantic", by="a", task_id=task_id)
    await memory.put_memory("user:m", "three", {"v": 3}, "semantic", by="a", task_id=task_id)
    await memory.put_memory("user:m", "gone", {"v": 1}, "semantic", by="a", task_id=task_id)
    await memory.delete_memory("user:m", "gone", "a", task_id)
    await memory.add_memory("user:n", "one", {"v": 1}, "episodic", "a", task_id)


EXPECTED = [
    ("user:m", "gone", 1, True, True),
    ("user:m", "three", 1, False, False),
    ("user:m", "three", 2, False, False),
    ("user:m", "three", 3, False, True),
    ("user:n", "one", 1, False, True),
]


async def test_round_trip_through_0009_backfills_the_flag_and_keeps_rows(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.initialize()
    task_id = (await db.tasks.create_task("migration")).id
    await _write(db, task_id)
    assert await _rows(db) == EXPECTED  # the write path keeps the flag exact

    await db.downgrade(M8)
    columns = await _run(
        db, lambda c: {col["name"] for col in inspect(c).get_columns("memory_entries")}
    )
    assert "is_current" not in columns
    assert await _rows(db, flag=False) == [r[:4] for r in EXPECTED]
    # A version written below 0009 (no flag there) is flagged by the upgrade.
    async with db.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO memory_entries (namespace, key, value, memory_type, version) "
                """VALUES ('user:n', 'one', '{"v": 2}', 'episodic', 2)"""
            )
        )

    await db.upgrade("head")
    fresh = await make_db("fresh.db")
    await fresh.initialize()
    assert await _run(db, snapshot) == await _run(fresh, snapshot)
    assert await _rows(db) == [
        *EXPECTED[:4],
        ("user:n", "one", 1, False, False),
        ("user:n", "one", 2, False, True),
    ]
    found = await db.memory.search_memories("user")
    assert sorted((m["key"], m["version"]) for m in found) == [("one", 2), ("three", 3)]


async def test_one_current_row_per_key_is_a_constraint(db: Database, task_id: str) -> None:
    await db.memory.put_memory("user:m", "k", {"v": 1}, "semantic", by="a", task_id=task_id)
    true = "true" if not db.is_sqlite else "1"
    with pytest.raises(AlreadyExistsError, match="duplicate key"):
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO memory_entries (namespace, key, value, memory_type, version, "
                    f"is_current) VALUES ('user:m', 'k', '{{}}', 'semantic', 2, {true})"
                )
            )
