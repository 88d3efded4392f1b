"""Issue 16: on SQLite a ``put_memories`` load that at least doubles a table
drops that table's non-unique secondary indexes and creates them again before
its transaction ends (``repositories.memory.indexes_rebuilt``). The schema and
the indexes' statistics are as they were after it; a failure inside rolls the
drop back with the rest; a conflict is the same ConflictError; a reader on
another connection sees the old state or the whole new one. PostgreSQL has no
such mode (its path is unchanged), so these tests run on SQLite only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from abathur.errors import ConflictError
from abathur.infrastructure import memory_service
from abathur.infrastructure.database import Database
from abathur.repositories import memory as memory_repository
from tests.conftest import DbFactory
from tests.support.bulk import bulk_items

REBUILT = sorted(name for names in memory_repository._REBUILT_TABLES.values() for name in names)


@pytest.fixture(params=["sqlite", "sqlite-stock"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def catalog(conn: Connection) -> dict[str, Any]:
    """The schema as SQLite keeps it, and the planner's statistics."""
    schema = conn.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).all()
    stats = conn.exec_driver_sql(
        "SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx"
        if any(row.name == "sqlite_stat1" for row in schema)
        else "SELECT 1 WHERE 0"
    ).all()
    return {"schema": [tuple(r) for r in schema], "stats": [tuple(r) for r in stats]}


def rows(conn: Connection) -> tuple[int, int]:
    memories = conn.exec_driver_sql("SELECT count(*) FROM memory_entries").scalar()
    audits = conn.exec_driver_sql("SELECT count(*) FROM audit").scalar()
    return int(memories or 0), int(audits or 0)


@contextmanager
def dropped_indexes(db: Database) -> Iterator[list[str]]:
    """The names of the indexes dropped while inside."""
    dropped: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("DROP INDEX"):
            dropped.append(statement.split('"')[1])

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield dropped
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_a_load_that_doubles_the_tables_rebuilds_their_indexes_as_they_were(
    db: Database, task_id: str
) -> None:
    await db.memory.put_memories(bulk_items(task_id, 50))
    await db.write(lambda conn: conn.exec_driver_sql("ANALYZE"))
    before = await db.read(catalog)
    assert before["stats"], "ANALYZE left statistics to keep"
    memories, audits = await db.read(rows)
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    with dropped_indexes(db) as dropped:
        written = await db.memory.put_memories(bulk_items(task_id, count, start=50), analyze=False)
    assert sorted(dropped) == REBUILT
    assert await db.read(catalog) == before
    assert await db.read(rows) == (memories + count, audits + count)
    assert (await db.read(lambda c: c.exec_driver_sql("PRAGMA integrity_check").all())) == [("ok",)]
    # The indexes hold the new rows: reads through them find them.
    found = await db.memory.search_memories("user:u3", limit=1000)
    assert len(found) == len([w for w in written if w["namespace"] == "user:u3"]) + len(
        [i for i in range(50) if i % 7 == 3]
    )
    assert await db.memory.get_memory("user:u3", "k1046") is not None


async def test_the_rebuild_is_decided_on_the_whole_load_not_per_chunk(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load written in several chunks (``WRITE_CHUNK``), each smaller than
    ``INDEX_REBUILD_MIN_ROWS``: its indexes are dropped once, for all of
    them, and are there again after it."""
    monkeypatch.setattr(memory_service, "WRITE_CHUNK", 300)
    before = await db.read(catalog)
    memories, audits = await db.read(rows)
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    with dropped_indexes(db) as dropped:
        await db.memory.put_memories(bulk_items(task_id, count), analyze=False)
    assert sorted(dropped) == REBUILT
    assert await db.read(catalog) == before
    assert await db.read(rows) == (memories + count, audits + count)


async def test_a_load_smaller_than_its_table_keeps_the_indexes(db: Database, task_id: str) -> None:
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    await db.memory.put_memories(bulk_items(task_id, count + 10))
    with dropped_indexes(db) as dropped:
        await db.memory.put_memories(bulk_items(task_id, count, start=count + 10))
        await db.memory.put_memories(bulk_items(task_id, count - 1, start=10 * count))
    assert dropped == []


async def test_only_the_table_the_load_doubles_is_rebuilt(db: Database, task_id: str) -> None:
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    await db.write(
        lambda conn: conn.exec_driver_sql(
            "INSERT INTO audit (timestamp, task_id, action_type) VALUES (?, ?, ?)",
            [("2026-01-01 00:00:00.000000", task_id, "other")] * (count + 1),
        )
    )  # audit rows, no memory
    with dropped_indexes(db) as dropped:
        await db.memory.put_memories(bulk_items(task_id, count))
    assert sorted(dropped) == memory_repository._REBUILT_TABLES["memory_entries"]


async def test_a_failure_after_the_drop_rolls_it_back(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db.memory.put_memories(bulk_items(task_id, 10))
    before = await db.read(catalog), await db.read(rows)

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(memory_service.AuditRepository, "append_many", fail)
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    with dropped_indexes(db) as dropped, pytest.raises(RuntimeError, match="disk on fire"):
        await db.memory.put_memories(bulk_items(task_id, count, start=10))
    assert sorted(dropped) == REBUILT
    assert (await db.read(catalog), await db.read(rows)) == before
    monkeypatch.undo()
    await db.memory.put_memories(bulk_items(task_id, count, start=10), analyze=False)
    assert await db.read(catalog) == before[0]


async def test_a_conflict_is_the_same_error_with_the_indexes_dropped(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version written concurrently (here: the key's current version hidden
    from the load's read) violates a unique index, which the load keeps."""
    count = memory_repository.INDEX_REBUILD_MIN_ROWS
    await db.memory.put_memories(bulk_items(task_id, 1))
    before = await db.read(catalog), await db.read(rows)
    monkeypatch.setattr(memory_service, "latest_of_keys", lambda _conn, _keys: {})
    errors = []
    for load in (
        bulk_items(task_id, count),
        bulk_items(task_id, 2),
    ):  # with and without the rebuild
        with dropped_indexes(db) as dropped, pytest.raises(ConflictError) as raised:
            await db.memory.put_memories(load)
        errors.append((bool(dropped), str(raised.value)))
    assert errors == [
        (True, "a version of one of the keys was written concurrently"),
        (False, "a version of one of the keys was written concurrently"),
    ]
    assert (await db.read(catalog), await db.read(rows)) == before


async def test_a_reader_sees_the_old_state_or_the_whole_new_one(
    db: Database, task_id: str, make_db: DbFactory
) -> None:
    await db.memory.put_memories(bulk_items(task_id, 100))
    reader = await make_db(share_with=db)
    await reader.initialize()
    before = await reader.read(rows)
    count = 4 * memory_repository.INDEX_REBUILD_MIN_ROWS
    load = asyncio.create_task(db.memory.put_memories(bulk_items(task_id, count, start=100)))
    seen = []
    while not load.done():
        seen.append(await reader.read(rows))
        found = await reader.memory.search_memories("user:u1", limit=5)
        assert found, "the indexes the search reads are there throughout"
        await asyncio.sleep(0)
    await load
    assert len(seen) > 1, "some reads ran while the load was in progress"
    seen.append(await reader.read(rows))
    after = (before[0] + count, before[1] + count)
    assert set(seen) <= {before, after} and seen[-1] == after
    assert await reader.read(catalog) == await db.read(catalog)
