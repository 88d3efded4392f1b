"""Writers with an embedder in several processes lose nothing (issue 12): every
version written gets exactly its own embedding, on one SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from abathur.embeddings import HashingEmbedder
from abathur.infrastructure.database import Database
from abathur.schema.models import MemoryEmbedding, MemoryEntry
from tests.support.processes import run_all_ok

WRITER = """
    from pathlib import Path
    from abathur.embeddings import HashingEmbedder
    from abathur.infrastructure.database import Database

    async def main(path, task_id, name, count):
        db = Database(Path(path), embedder=HashingEmbedder(dims=32))
        try:
            for i in range(int(count)):
                await db.memory.update_memory(
                    "user:shared", "k", {"text": f"{name} note {i}"}, name, task_id
                )
                await db.memory.add_memory(
                    f"user:{name}", f"k{i}", {"text": f"{name} fact {i}"}, "semantic", name, task_id
                )
        finally:
            await db.close()
    """


@pytest.mark.slow
async def test_several_processes_with_an_embedder_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    embedder = HashingEmbedder(dims=32)
    async with Database(path, embedder=embedder) as db:
        task_id = (await db.tasks.create_task("multi-process")).id
        await db.memory.add_memory("user:shared", "k", {"text": "start"}, "semantic", "m", task_id)
    processes, per_process = 4, 10
    await run_all_ok(
        tmp_path,
        WRITER,
        [[str(path), task_id, f"p{n}", str(per_process)] for n in range(processes)],
    )
    async with Database(path, embedder=embedder) as db:
        history = await db.memory.get_memory_history("user:shared", "k")
        assert [h["version"] for h in history] == list(range(1, processes * per_process + 2))
        async with db.transaction(write=False) as session:
            versions = (await session.execute(select(MemoryEntry.id, MemoryEntry.value))).all()
            vectors = (
                await session.execute(
                    select(MemoryEmbedding.memory_entry_id, MemoryEmbedding.vector)
                )
            ).all()
        assert len(versions) == 1 + 2 * processes * per_process
        by_id = dict(vectors)
        assert set(by_id) == {row_id for row_id, _ in versions}  # one each, none missing
        for row_id, value in versions:  # and each is its own value's
            text = json.dumps(value, sort_keys=True, separators=(",", ":"))
            expected = np.asarray(embedder.vector(text), dtype="<f4")
            assert np.frombuffer(by_id[row_id], dtype="<f4").tolist() == expected.tolist()
        for n in range(processes):
            found = await db.memory.search_memories(f"user:p{n}", query=f"p{n} fact", limit=100)
            assert len(found) == per_process
        shared = await db.memory.search_memories("user:shared", query="note")
        assert [r["version"] for r in shared] == [processes * per_process + 1]
