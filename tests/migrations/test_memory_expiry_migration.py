"""Revision 0006: memory_expiry, up, down (expired keys soft-deleted, every
row kept) and up again, with data, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, text

from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.migrations.test_migrations import _run, snapshot
from tests.support.memory_model import controlled_clock

M5 = "0005_byte_order_collations"


async def _rows(db: Database) -> list[tuple[str, int, bool]]:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text("SELECT key, version, is_deleted FROM memory_entries ORDER BY key, version")
        )
        return [(k, v, bool(d)) for k, v, d in result]


async def test_round_trip_through_0006_keeps_rows_and_settles_expired_keys(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.initialize()
    task_id = (await db.tasks.create_task("migration")).id
    memory = db.memory
    with controlled_clock(datetime(2000, 1, 1, tzinfo=UTC)):
        await memory.put_memory("user:m", "gone", {"v": 1}, "semantic", by="a", task_id=task_id)
        await memory.put_memory("user:m", "gone", {"v": 2}, "semantic", by="a", task_id=task_id,
                                ttl=timedelta(hours=1))  # fmt: skip
        await memory.put_memory("user:m", "stays", {"v": 1}, "semantic", by="a",
                                task_id=task_id, ttl=timedelta(days=365 * 200))  # fmt: skip
        await memory.put_memory("user:m", "plain", {"v": 1}, "semantic", by="a", task_id=task_id)
    before = await _rows(db)
    assert [d for _, _, d in before] == [False] * 4

    await db.downgrade(M5)
    assert "memory_expiry" not in await _run(db, lambda c: inspect(c).get_table_names())
    after = await _rows(db)
    # Every row is kept; the key that had already expired (in 2000) is deleted,
    # as a sweep would have left it; the others stay live.
    assert after == [
        ("gone", 1, True),
        ("gone", 2, True),
        ("plain", 1, False),
        ("stays", 1, False),
    ]

    await db.upgrade("head")
    fresh = await make_db("fresh.db")
    await fresh.initialize()
    assert await _run(db, snapshot) == await _run(fresh, snapshot)
    assert await _rows(db) == after
    assert await memory.get_memory("user:m", "gone") is None
    stays = await memory.get_memory("user:m", "stays")
    assert stays is not None and stays["version"] == 1  # no longer expires
    assert await memory.list_namespaces() == ["user:m"]
