"""Issue 16: ``put_memories`` racing other ``put_memories`` and ``put_memory``
calls on the same keys loses nothing: every key ends with gapless versions,
one per write, each write's value among them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from abathur.infrastructure.database import Database
from abathur.repositories import memory as memory_repository
from abathur.schema.models import AuditEntry
from tests.conftest import DbFactory
from tests.support.processes import run_all_ok

KEYS = [f"k{i}" for i in range(8)]


def batch(writer: str, task_id: str, rounds: int = 2) -> list[dict[str, Any]]:
    """Every key ``rounds`` times, in an order of the writer's own."""
    order = KEYS if writer.endswith(("0", "2", "4")) else KEYS[::-1]
    return [
        {"namespace": "user:race", "key": key, "value": {"by": writer, "n": n},
         "memory_type": "semantic", "by": writer, "task_id": task_id}
        for n in range(rounds) for key in order
    ]  # fmt: skip


async def check_gapless(db: Database, writes: Counter[str], values: set[tuple[str, str, int]]):
    found = set()
    for key in KEYS:
        history = await db.memory.get_memory_history("user:race", key)
        assert [h["version"] for h in history] == list(range(1, writes[key] + 1)), key
        found |= {(key, h["value"]["by"], h["value"]["n"]) for h in history}
    assert found == values


@pytest.mark.parametrize("key_locks", ["per key", "exclusive"])
async def test_bulk_and_single_puts_of_shared_keys_lose_nothing(
    db: Database, task_id: str, make_db: DbFactory, key_locks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch of up to MAX_KEY_LOCKS keys locks each key, a
    larger one the whole store (``lock_keys``): both lose nothing."""
    if key_locks == "exclusive":
        monkeypatch.setattr(memory_repository, "MAX_KEY_LOCKS", len(KEYS) - 1)
    other = await make_db(share_with=db)
    batches = {f"bulk{i}": batch(f"bulk{i}", task_id) for i in range(4)}

    async def bulk(i: int) -> list[dict[str, Any]]:
        name = f"bulk{i}"
        return await (db if i % 2 else other).memory.put_memories(batches[name])

    async def single(i: int) -> dict[str, Any]:
        return await (other if i % 2 else db).memory.put_memory(
            "user:race", KEYS[i % len(KEYS)], {"by": "single", "n": i}, "semantic",
            by="single", task_id=task_id,
        )  # fmt: skip

    results = await asyncio.gather(*(bulk(i) for i in range(4)), *(single(i) for i in range(24)))
    for written in results[:4]:
        assert isinstance(written, list)
        # Within one call a key's versions are consecutive and in order.
        by_key: dict[str, list[int]] = {}
        for w in written:
            by_key.setdefault(w["key"], []).append(w["version"])
        for versions in by_key.values():
            assert versions == list(range(versions[0], versions[0] + len(versions)))
    writes = Counter(item["key"] for items in batches.values() for item in items)
    writes.update(KEYS[i % len(KEYS)] for i in range(24))
    values = {(item["key"], item["by"], item["value"]["n"]) for b in batches.values() for item in b}
    values |= {(KEYS[i % len(KEYS)], "single", i) for i in range(24)}
    await check_gapless(db, writes, values)
    async with db.transaction(write=False) as session:
        audited = await session.scalar(select(func.count()).select_from(AuditEntry))
    assert audited == sum(writes.values())


BULK_WRITER = """
    from pathlib import Path
    from abathur.infrastructure.database import Database

    KEYS = [f"k{i}" for i in range(8)]

    async def main(path, task_id, name, count):
        db = Database(Path(path))
        try:
            for n in range(int(count)):
                if name == "single":
                    for key in KEYS:
                        await db.memory.put_memory(
                            "user:race", key, {"by": name, "n": n}, "semantic", by=name,
                            task_id=task_id,
                        )
                    continue
                order = KEYS if int(name[-1]) % 2 else KEYS[::-1]
                await db.memory.put_memories([
                    {"namespace": "user:race", "key": key, "value": {"by": name, "n": n},
                     "memory_type": "semantic", "by": name, "task_id": task_id}
                    for key in order
                ])
        finally:
            await db.close()
    """


@pytest.mark.slow
async def test_several_processes_bulk_writing_shared_keys_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with Database(path) as db:
        task_id = (await db.tasks.create_task("multi-process bulk")).id
    names, rounds = ["bulk0", "bulk1", "bulk2", "single"], 6
    await run_all_ok(tmp_path, BULK_WRITER, [[str(path), task_id, n, str(rounds)] for n in names])
    writes = Counter({key: len(names) * rounds for key in KEYS})
    values = {(key, name, n) for key in KEYS for name in names for n in range(rounds)}
    async with Database(path) as db:
        await check_gapless(db, writes, values)
