"""Every query MemoryService issues on memory_entries and audit is served by an index.

The statements are captured as the driver receives them (an engine
``before_cursor_execute`` hook) while a workload exercises every repository
method, then explained with their own parameters. SQLite: no plan line may be
a ``SCAN`` of memory_entries or audit (each must be a ``SEARCH``). PostgreSQL picks sequential scans
for tiny tables whatever the indexes, so the plan is taken with
``enable_seqscan = off``: a remaining ``Seq Scan`` means no index can serve it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from abathur.errors import NotFoundError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.support.memory_model import controlled_clock
from tests.support.plans import explain, full_scans, recording

MEMORY_TABLES = ("memory_entries", "audit", "memory_expiry")


async def _workload(db: Database, task_id: str) -> None:
    async def resolver(versions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(versions)}

    memory = MemoryService(db, resolver=resolver)
    for i in range(3):
        await memory.add_memory(f"user:u{i}", "k_%", {"i": i}, "episodic", "me", task_id)
        await memory.update_memory(f"user:u{i}", "k_%", {"j": i}, "me", task_id)
    await memory.get_memory("user:u0", "k_%")
    await memory.get_memory("user:u0", "k_%", version=1)
    await memory.get_memory_history("user:u0", "k_%")
    await memory.search_memories("user:u0")
    await memory.search_memories("user", memory_type="episodic", limit=10)
    await memory.consolidate_memories("user:u0", "merge", task_id=task_id)
    await memory.consolidate_memories("user:u1", "llm_based", task_id=task_id)
    await memory.delete_memory("user:u2", "k_%", "me", task_id)
    await memory.restore_memory("user:u2", "k_%", 1, "me", task_id)
    await memory.add_memory("session:s", "draft", {"d": 1}, "semantic", "me", task_id)
    await memory.publish_memory("session:s", "user:u0", "draft", "me", task_id)
    await memory.expire_episodic(timedelta(0), task_id=task_id)
    await memory.seed_defaults(task_id)
    await _retrieval_workload(memory, task_id)


async def _retrieval_workload(memory: MemoryService, task_id: str) -> None:
    """Issue 11: put, TTL (set, changed, cleared, refreshed, expired, swept),
    filtered and paged search, list_namespaces in every form."""
    ttl = timedelta(seconds=10)
    with controlled_clock() as clock:
        for i in range(3):
            await memory.put_memory(f"user:t{i}", "k", {"n": i, "s": "x", "o": {"p": i}},
                                    "semantic", by="me", task_id=task_id, ttl=ttl)  # fmt: skip
            await memory.put_memory(f"user:t{i}", "k", {"n": i + 1}, "semantic", by="me",
                                    task_id=task_id, ttl=ttl)  # fmt: skip
        await memory.add_memory("user:t3", "k", {"n": 1}, "semantic", "me", task_id, ttl=ttl)
        await memory.update_memory("user:t3", "k", {"n": 2}, "me", task_id)  # clears
        await memory.update_memory("user:t3", "k", {"n": 3}, "me", task_id, ttl=ttl)
        await memory.get_memory("user:t0", "k", refresh_ttl=True)
        await memory.search_memories("user", refresh_ttl=True)
        everything: dict[str, Any] = {"n": {"$gte": 1, "$lt": 9, "$ne": 5, "$in": [1, 2]}}
        for filter in (
            {"s": "x", "o.p": {"$gt": 0}},
            {"s": {"$lte": "y", "$gt": "a"}, "n": None, "b": True},
            everything,
        ):
            await memory.search_memories("user", filter=filter, offset=1)
            await memory.search_memories("user:t1", "semantic", filter=filter, limit=5)
        await memory.search_memories("user", offset=2, limit=2)
        await memory.list_namespaces()
        await memory.list_namespaces("user:t1")
        await memory.list_namespaces("user", suffix="t2", max_depth=2, limit=2, offset=1)
        clock.advance(timedelta(seconds=11))
        with pytest.raises(NotFoundError):  # expired: as if deleted
            await memory.delete_memory("user:t3", "k", "me", task_id)
        await memory.put_memory("user:t2", "k", {}, "semantic", by="me", task_id=task_id)
        await memory.sweep_expired(task_id=task_id)
        await _bulk_workload(memory, task_id, clock)


async def _bulk_workload(memory: MemoryService, task_id: str, clock: Any) -> None:
    """Issue 16: put_memories over new, live, deleted and expired keys, with
    TTLs set, changed and cleared."""

    def item(ns: str, key: str, **extra: Any) -> dict[str, Any]:
        return {"namespace": ns, "key": key, "value": {"n": 1}, "memory_type": "semantic",
                "by": "me", "task_id": task_id, **extra}  # fmt: skip

    ttl = timedelta(seconds=10)
    await memory.put_memories(
        [item("user:b", "new", ttl=ttl), item("user:u0", "k_%"), item("user:b", "new"),
         item("user:b", "x", ttl=ttl), item("user:u2", "k_%", ttl=ttl)]
    )  # fmt: skip
    await memory.put_memories([item("user:b", "x", ttl=ttl), item("user:b", "y", ttl=ttl)])
    clock.advance(timedelta(seconds=11))
    await memory.put_memories([item("user:b", "x"), item("user:b", "new")])


async def _captured(db: Database, task_id: str) -> list[tuple[str, Any]]:
    with recording(db) as recorded:
        await _workload(db, task_id)
    return [
        (sql, params) for sql, params in recorded.items() if any(t in sql for t in MEMORY_TABLES)
    ]


async def test_every_memory_query_uses_an_index(db: Database, task_id: str) -> None:
    statements = await _captured(db, task_id)
    kinds = {s.split()[0].upper() for s, _ in statements}
    # The workload must really have issued the reads and the soft-delete UPDATEs.
    assert {"SELECT", "UPDATE"} <= kinds
    assert len(statements) >= 8, statements
    assert any("GROUP BY" in s for s, _ in statements)  # the consolidation conflict query
    assert any("EXISTS" in s and "ORDER BY" in s and "updated_at" in s for s, _ in statements)
    # Issue 11's statements were all issued: the namespace walk, filters,
    # paging, the expiry reads and writes.
    assert any(s.startswith("WITH RECURSIVE") for s, _ in statements)
    assert any("json_extract" in s or "jsonb_typeof" in s for s, _ in statements)
    assert any("OFFSET" in s for s, _ in statements)
    expiry = [s.split()[0].upper() for s, _ in statements if "memory_expiry" in s]
    assert {"SELECT", "UPDATE", "DELETE", "WITH"} <= set(expiry), expiry
    # Issue 16: put_memories' read of many keys' current versions.
    assert any("json_each" in s or "unnest" in s for s, _ in statements)

    problems = {}
    for sql, params in statements:
        plan = await explain(db, sql, params)
        assert plan, sql
        if bad := full_scans(db, sql, plan):
            problems[sql] = (bad, plan)
    assert not problems, problems


async def test_search_is_a_range_scan_of_the_namespace_index(db: Database, task_id: str) -> None:
    memory = MemoryService(db)
    await memory.add_memory("user:alice", "k", {"a": 1}, "semantic", "me", task_id)
    statements = await _captured_search(db)
    (sql, params), *_ = statements
    lines = await explain(db, sql, params)
    plan = "\n".join(lines)
    if db.is_sqlite:
        assert "SEARCH memory_entries USING INDEX idx_memory_namespace_prefix (namespace>?" in plan
    else:
        # Either live-rows index leading with the namespace serves the range.
        assert any(
            "Index Cond" in line and "namespace >= 'user:alice:'" in line for line in lines
        ), plan


async def _captured_search(db: Database) -> list[tuple[str, Any]]:
    with recording(db) as recorded:
        await MemoryService(db).search_memories("user:alice")
    statements = [(sql, params) for sql, params in recorded.items() if "memory_entries" in sql]
    assert len(statements) == 1
    return statements


async def test_put_memories_reads_current_versions_by_the_current_key_index(
    db: Database, task_id: str
) -> None:
    """One probe of ``idx_memory_current_key`` per key given, never a range."""
    item = {"namespace": "user:a", "key": "k", "value": {}, "memory_type": "semantic",
            "by": "me", "task_id": task_id}  # fmt: skip
    await db.memory.put_memories([item])
    with recording(db) as recorded:
        await db.memory.put_memories([item, {**item, "key": "other"}])
    (sql, params), *_ = [
        (s, p)
        for s, p in recorded.items()
        if ("json_each" in s or "unnest" in s) and "memory_entries" in s
    ]
    plan = "\n".join(await explain(db, sql, params))
    if db.is_sqlite:
        probe = "SEARCH memory_entries USING INDEX idx_memory_current_key (namespace=? AND key=?)"
        assert probe in plan
    else:
        assert "idx_memory_current_key" in plan, plan
