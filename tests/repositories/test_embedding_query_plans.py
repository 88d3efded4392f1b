"""Every statement of semantic recall is served by an index (issue 12).

The pattern of ``test_memory_query_plans.py``: a workload with an embedder
runs every write that stores an embedding, query searches (with and without a
memory type, cold and warm vector cache) and ``reindex`` (whole database and
one subtree); each statement it sent to memory_entries or memory_embeddings is
explained with its own parameters and no plan line may be a full scan.
"""

from __future__ import annotations

from abathur.embeddings import HashingEmbedder
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.support.plans import recording, unindexed

TABLES = ("memory_entries", "memory_embeddings")


async def _workload(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=HashingEmbedder(dims=16))
    for i in range(3):
        await memory.add_memory(f"user:u{i}", "k", {"text": f"note {i}"}, "episodic", "me", task_id)
        await memory.update_memory(f"user:u{i}", "k", {"text": f"new note {i}"}, "me", task_id)
    await memory.add_memory(
        "user:u0", "raw", {"text": "later"}, "semantic", "me", task_id, index=False
    )
    await memory.search_memories("user", query="note")
    await memory.search_memories("user:u0", memory_type="episodic", limit=5, query="note")
    await memory.search_memories("user", query="note")  # warm cache
    for _ in range(2):  # every version embedded: PostgreSQL's two-statement warm search
        await memory.search_memories("user:u1", query="note")
    await memory.search_memories("user", query="note", filter={"text": {"$ne": "x"}}, offset=1)
    # List and object operands (SQLite: a json_tree comparison per candidate row).
    await memory.search_memories("user", query="note", filter={"text": {"$ne": ["x", {"y": 1}]}})
    await memory.search_memories("user:u2", query="note", refresh_ttl=True)
    await memory.consolidate_memories("user:u0", "merge", task_id=task_id)
    await memory.restore_memory("user:u1", "k", 1, "me", task_id)
    await memory.add_memory("session:s", "draft", {"d": 1}, "semantic", "me", task_id)
    await memory.publish_memory("session:s", "user:u0", "draft", "me", task_id)
    await memory.reindex("user:u0", batch_size=2)
    other = MemoryService(db, embedder=HashingEmbedder(dims=8))
    await other.reindex(batch_size=2)
    await other.search_memories("user", query="note")


async def test_every_recall_statement_uses_an_index(db: Database, task_id: str) -> None:
    with recording(db) as recorded:
        await _workload(db, task_id)
    statements = [
        (sql, params) for sql, params in recorded.items() if any(t in sql for t in TABLES)
    ]
    ours = [s for s, _ in statements if "memory_embeddings" in s]
    # candidates (two shapes), vectors by id, rows by id, lacking (two shapes)
    assert len([s for s in ours if s.lstrip().upper().startswith("SELECT")]) >= 4, ours
    assert any("JOIN memory_embeddings" in s for s in ours)
    assert any("NOT (EXISTS" in s and "memory_embeddings" in s for s in ours)
    # The unfiltered query search: the subtree's live ids (two index ranges)
    # and the ids of its expired keys.
    assert any("UNION ALL" in s and "memory_embeddings" not in s for s, _ in statements)
    assert any("memory_expiry" in s and "expires_at" in s for s, _ in statements)
    if not db.is_sqlite:  # the warm search's rows of the ranked ids, one bigint array
        assert any("= ANY" in s for s, _ in statements)
    assert not (problems := await unindexed(db, statements)), problems
