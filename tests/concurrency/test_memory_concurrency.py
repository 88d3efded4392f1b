"""Concurrent writers of one memory key: no gap, no duplicate, no lost write, no error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry
from tests.conftest import DbFactory
from tests.support.processes import run_together


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
    outcomes = await asyncio.to_thread(
        run_together,
        tmp_path,
        WRITER,
        [[str(path), task_id, f"p{n}", str(per_process)] for n in range(processes)],
    )
    for returncode, err in outcomes:
        assert returncode == 0, err
    async with Database(path) as db:
        history = await db.memory.get_memory_history("user:shared", "k")
    assert [h["version"] for h in history] == list(range(1, processes * per_process + 2))
    written = sorted((h["value"].get("by"), h["value"]["i"]) for h in history[1:])
    assert written == sorted((f"p{n}", i) for n in range(processes) for i in range(per_process))
