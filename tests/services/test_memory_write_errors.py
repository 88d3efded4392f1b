"""The refusals of add_memory, update_memory and put_memory: the same
exception and message on both backends, and nothing written.

On PostgreSQL these writes are one call of ``abathur_write_memory`` (revisions
0010 and 0012), whose refusals are SQLSTATEs of class AB; on SQLite they are
raised in Python. Each mapping is exercised here, with and without an
embedding to store (revision 0012 stores it in the same call), and the
rollback of everything the refused call had done before its refusal (an
expired key's soft delete)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from abathur.embeddings import HashingEmbedder
from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.support.memory_model import controlled_clock


@pytest.fixture(params=["plain", "embedded"])
def memory(request: pytest.FixtureRequest, db: Database) -> MemoryService:
    """The service writing: without an embedder, or storing an embedding per write."""
    if request.param == "plain":
        return db.memory
    return MemoryService(db, embedder=HashingEmbedder(dims=8))


async def _stored(db: Database) -> tuple[list[Any], list[Any], int, list[Any]]:
    async with db.transaction(write=False) as session:
        entries = (await session.execute(text("SELECT * FROM memory_entries ORDER BY id"))).all()
        expiry = (await session.execute(text("SELECT * FROM memory_expiry ORDER BY key"))).all()
        audit = await session.scalar(text("SELECT count(*) FROM audit"))
        embeddings = await session.execute(
            text("SELECT memory_entry_id, model, dims, field FROM memory_embeddings ORDER BY 1, 4")
        )
    return list(entries), list(expiry), int(audit or 0), list(embeddings.all())


async def test_a_missing_task(db: Database, memory: MemoryService) -> None:
    before = await _stored(db)
    message = "task 'nope' not found"
    with pytest.raises(NotFoundError, match=f"^{re.escape(message)}$"):
        await memory.add_memory("user:a", "k", {"v": 1}, "semantic", "me", "nope")
    with pytest.raises(NotFoundError, match=f"^{re.escape(message)}$"):
        await memory.update_memory("user:a", "k", {"v": 1}, "me", "nope")
    with pytest.raises(NotFoundError, match=f"^{re.escape(message)}$"):
        await memory.put_memory("user:a", "k", {"v": 1}, "semantic", by="me", task_id="nope")
    assert await _stored(db) == before


async def test_updating_a_key_that_is_not_live(
    db: Database, memory: MemoryService, task_id: str
) -> None:
    message = "memory 'user:a'/'k' not found"
    with pytest.raises(NotFoundError, match=f"^{re.escape(message)}$"):
        await memory.update_memory("user:a", "k", {"v": 1}, "me", task_id)
    await memory.add_memory("user:a", "k", {"v": 1}, "semantic", "me", task_id)
    await memory.delete_memory("user:a", "k", "me", task_id)
    before = await _stored(db)
    with pytest.raises(NotFoundError, match=f"^{re.escape(message)}$"):
        await memory.update_memory("user:a", "k", {"v": 2}, "me", task_id)
    assert await _stored(db) == before


async def test_adding_a_live_key(db: Database, memory: MemoryService, task_id: str) -> None:
    await memory.add_memory("user:a", "k", {"v": 1}, "semantic", "me", task_id)
    await memory.update_memory("user:a", "k", {"v": 2}, "me", task_id)
    before = await _stored(db)
    message = "memory 'user:a'/'k' already exists (version 2); use update_memory"
    with pytest.raises(AlreadyExistsError, match=f"^{re.escape(message)}$"):
        await memory.add_memory("user:a", "k", {"v": 3}, "semantic", "me", task_id)
    assert await _stored(db) == before


async def test_a_refused_write_of_an_expired_key_leaves_it_as_it_was(
    db: Database, memory: MemoryService, task_id: str
) -> None:
    """The write that finds a key expired soft-deletes it first; when that
    write is then refused, the soft delete is rolled back with it."""
    with controlled_clock() as clock:
        await memory.add_memory(
            "user:a", "k", {"v": 1}, "semantic", "me", task_id, ttl=timedelta(seconds=5)
        )
        clock.advance(timedelta(seconds=6))
        before = await _stored(db)
        with pytest.raises(NotFoundError, match=r"^memory 'user:a'/'k' not found$"):
            await memory.update_memory("user:a", "k", {"v": 2}, "me", task_id)
        assert await _stored(db) == before
        with pytest.raises(NotFoundError, match=r"^task 'nope' not found$"):
            await memory.add_memory("user:a", "k", {"v": 2}, "semantic", "me", "nope")
        assert await _stored(db) == before
        # and an accepted write sees it deleted: max + 1, no expiry, a create
        again = await memory.add_memory("user:a", "k", {"v": 3}, "semantic", "me", task_id)
        written = await memory.get_memory("user:a", "k")
        assert written is not None and written["id"] == again and written["version"] == 2
        _entries, expiry, audit, embeddings = await _stored(db)
        assert expiry == [] and audit == before[2] + 1
        stored = [] if memory.embedder is None else [(again, HashingEmbedder.MODEL, 8, "$")]
        assert embeddings == [*before[3], *stored]
