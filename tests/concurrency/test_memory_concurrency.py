"""Concurrent writers of one memory key: no gap, no duplicate, no lost write, no error."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry
from tests.conftest import DbFactory
from tests.support.memory_model import controlled_clock
from tests.support.processes import run_all_ok


async def test_fifty_concurrent_updates_make_versions_1_to_51(
    db: Database, task_id: str, make_db: DbFactory
) -> None:
    other = await make_db(share_with=db)  # a second engine: writers race across pools too
    await db.memory.add_memory("user:alice", "counter", {"n": 0}, "semantic", "a", task_id)

    async def bump(i: int) -> int:
        handle = db if i % 2 else other
        return await handle.memory.update_memory(
            "user:alice", "counter", {"n": i}, f"writer{i}", task_id
        )

    ids = await asyncio.gather(*(bump(i) for i in range(1, 51)))
    assert len(set(ids)) == 50
    history = await db.memory.get_memory_history("user:alice", "counter")
    assert [h["version"] for h in history] == list(range(1, 52))
    assert sorted(h["value"]["n"] for h in history) == list(range(51))
    async with db.transaction(write=False) as session:
        audited = await session.scalar(select(func.count()).select_from(AuditEntry))
    assert audited == 51


async def test_concurrent_add_of_one_new_key_has_exactly_one_winner(
    db: Database, task_id: str, make_db: DbFactory
) -> None:
    other = await make_db(share_with=db)

    async def add(i: int) -> int | str:
        handle = db if i % 2 else other
        try:
            return await handle.memory.add_memory(
                "user:alice", "new", {"by": i}, "semantic", f"w{i}", task_id
            )
        except AlreadyExistsError:
            return "exists"

    outcomes = await asyncio.gather(*(add(i) for i in range(20)))
    winners = [o for o in outcomes if o != "exists"]
    assert len(winners) == 1
    assert outcomes.count("exists") == 19
    history = await db.memory.get_memory_history("user:alice", "new")
    assert [(h["id"], h["version"]) for h in history] == [(winners[0], 1)]


async def test_concurrent_delete_and_readd_keep_versions_dense(db: Database, task_id: str) -> None:
    await db.memory.add_memory("user:a", "k", {}, "semantic", "a", task_id)
    written: list[int] = []  # the i of every add or update that succeeded
    deleted: list[int] = []
    refused: list[int] = []

    async def churn(i: int) -> None:
        try:
            if i % 3 == 0:
                await db.memory.delete_memory("user:a", "k", "a", task_id)
                deleted.append(i)
            elif i % 3 == 1:
                await db.memory.add_memory("user:a", "k", {"i": i}, "semantic", "a", task_id)
                written.append(i)
            else:
                await db.memory.update_memory("user:a", "k", {"i": i}, "a", task_id)
                written.append(i)
        except (NotFoundError, AlreadyExistsError):  # depending on the interleaving
            refused.append(i)

    await asyncio.gather(*(churn(i) for i in range(30)))
    assert len(written) + len(deleted) + len(refused) == 30
    assert deleted  # the first delete to run finds the key live
    history = await db.memory.get_memory_history("user:a", "k")
    assert [h["version"] for h in history] == list(range(1, len(history) + 1))
    # One version per successful add or update, each with its own value.
    assert sorted(h["value"]["i"] for h in history[1:]) == sorted(written)
    # a deleted top version means every version is deleted
    if history[-1]["is_deleted"]:
        assert all(h["is_deleted"] for h in history)


WRITER = """
    from pathlib import Path
    from abathur.infrastructure.database import Database

    async def main(path, task_id, name, count):
        db = Database(Path(path))
        try:
            for i in range(int(count)):
                await db.memory.update_memory(
                    "user:shared", "k", {"by": name, "i": i}, name, task_id
                )
        finally:
            await db.close()
    """


@pytest.mark.slow
async def test_several_processes_lose_no_version(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with Database(path) as db:
        task_id = (await db.tasks.create_task("multi-process")).id
        await db.memory.add_memory("user:shared", "k", {"i": -1}, "semantic", "main", task_id)
    processes, per_process = 4, 15
    await run_all_ok(
        tmp_path,
        WRITER,
        [[str(path), task_id, f"p{n}", str(per_process)] for n in range(processes)],
    )
    async with Database(path) as db:
        history = await db.memory.get_memory_history("user:shared", "k")
    assert [h["version"] for h in history] == list(range(1, processes * per_process + 2))
    written = sorted((h["value"].get("by"), h["value"]["i"]) for h in history[1:])
    assert written == sorted((f"p{n}", i) for n in range(processes) for i in range(per_process))


# ------------------------------------------------------------------ issue 11: put_memory


async def test_fifty_concurrent_puts_of_a_new_key_make_versions_1_to_50(
    db: Database, task_id: str, make_db: DbFactory
) -> None:
    other = await make_db(share_with=db)

    async def put(i: int) -> dict[str, Any]:
        handle = db if i % 2 else other
        return await handle.memory.put_memory(
            "user:alice", "upsert", {"n": i}, "semantic", by=f"writer{i}", task_id=task_id
        )

    written = await asyncio.gather(*(put(i) for i in range(50)))
    assert sorted(w["version"] for w in written) == list(range(1, 51))
    history = await db.memory.get_memory_history("user:alice", "upsert")
    assert [h["version"] for h in history] == list(range(1, 51))
    assert sorted(h["value"]["n"] for h in history) == list(range(50))
    assert {w["id"]: w["value"] for w in written} == {h["id"]: h["value"] for h in history}
    assert {h["created_by"] for h in history} == {history[0]["created_by"]}  # carried forward
    async with db.transaction(write=False) as session:
        audited = (
            await session.execute(
                select(AuditEntry.memory_operation_type, func.count())
                .group_by(AuditEntry.memory_operation_type)
                .order_by(AuditEntry.memory_operation_type)
            )
        ).all()
    assert [tuple(r) for r in audited] == [("create", 1), ("update", 49)]


async def test_puts_racing_sweep_expired_lose_nothing(
    db: Database, task_id: str, make_db: DbFactory
) -> None:
    other = await make_db(share_with=db)
    keys = [f"k{i}" for i in range(20)]
    with controlled_clock() as clock:
        for key in keys:
            await db.memory.put_memory("user:ttl", key, {"v": 0}, "semantic", by="a",
                                       task_id=task_id, ttl=timedelta(seconds=5))  # fmt: skip
        clock.advance(timedelta(seconds=6))  # every key has expired; none is swept yet

        async def put(i: int) -> dict[str, Any]:
            handle = db if i % 2 else other
            return await handle.memory.put_memory(
                "user:ttl", keys[i % 20], {"v": i}, "semantic", by="b", task_id=task_id,
                ttl=timedelta(seconds=60) if i % 3 == 0 else None,
            )  # fmt: skip

        async def sweep(i: int) -> int:
            return await (db if i % 2 else other).memory.sweep_expired()

        results = await asyncio.gather(*(put(i) for i in range(40)), *(sweep(i) for i in range(6)))
        swept = sum(r for r in results if isinstance(r, int))
        assert swept <= 20
        for key in keys:
            history = await db.memory.get_memory_history("user:ttl", key)
            # Version 1 expired (swept, or settled by the first put to reach
            # it); both puts of the key follow as versions 2 and 3.
            assert [h["version"] for h in history] == [1, 2, 3]
            assert [h["is_deleted"] for h in history] == [True, False, False]
            assert sorted(h["value"]["v"] for h in history[1:]) == sorted(
                i for i in range(40) if i % 20 == int(key[1:])
            )
            assert await db.memory.get_memory("user:ttl", key) is not None
        assert await db.memory.sweep_expired() == 0
        async with db.transaction(write=False) as session:
            expired = await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action_type == "memory_expire")
            )
        assert expired == swept


PUTTER = """
    from pathlib import Path
    from abathur.infrastructure.database import Database

    async def main(path, task_id, name, count):
        db = Database(Path(path))
        try:
            for i in range(int(count)):
                await db.memory.put_memory(
                    "user:shared", "put", {"by": name, "i": i}, "semantic", by=name,
                    task_id=task_id,
                )
        finally:
            await db.close()
    """


@pytest.mark.slow
async def test_several_processes_putting_one_key_lose_no_version(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with Database(path) as db:
        task_id = (await db.tasks.create_task("multi-process puts")).id
    processes, per_process = 4, 13  # 52 puts of a key that does not exist yet
    await run_all_ok(
        tmp_path,
        PUTTER,
        [[str(path), task_id, f"p{n}", str(per_process)] for n in range(processes)],
    )
    async with Database(path) as db:
        history = await db.memory.get_memory_history("user:shared", "put")
    assert [h["version"] for h in history] == list(range(1, processes * per_process + 1))
    written = sorted((h["value"]["by"], h["value"]["i"]) for h in history)
    assert written == sorted((f"p{n}", i) for n in range(processes) for i in range(per_process))
