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
from sqlalchemy import text

from abathur.errors import NotFoundError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.repositories import memory as memory_repository
from abathur.repositories.memory import SEARCH_CAP, SQLITE_CHAIN
from tests.support.memory_model import controlled_clock
from tests.support.plans import (
    PG_FULL_SCAN,
    SEARCH_FUNCTION,
    explain,
    full_scans,
    nested_explain,
    recording,
    unindexed,
)

RANGE_SEARCH = "SEARCH memory_entries USING INDEX idx_memory_namespace_prefix"

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
            {"o.p": {"$ne": [1]}, "o": {"$in": [{"p": 1}, []]}},
            {"o": {"$eq": {"p": 1}}, "s": ["x"]},
            # Past SQLITE_CHAIN terms and options: grouped (_sqlite_chain).
            {
                "n": {"$in": list(range(SQLITE_CHAIN + 6))},
                **{f"f{i}": {"$ne": i} for i in range(SQLITE_CHAIN + 1)},
            },
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
        (sql, params)
        for sql, params in recorded.items()
        if any(t in sql for t in (*MEMORY_TABLES, SEARCH_FUNCTION))
    ]


async def test_every_memory_query_uses_an_index(db: Database, task_id: str) -> None:
    statements = await _captured(db, task_id)
    kinds = {s.split()[0].upper() for s, _ in statements}
    # The workload must really have issued the reads and the soft-delete UPDATEs.
    assert {"SELECT", "UPDATE"} <= kinds
    assert len(statements) >= 8, statements
    assert any("GROUP BY" in s for s, _ in statements)  # the consolidation conflict query
    # The search (its choice CTE and both branches), typed and untyped, with
    # filters and paging. PostgreSQL: one call of abathur_search_memories
    # (the same text for every search), whose statements ``unindexed``
    # explains for the first call; test_search_function_plans.py takes every
    # statement the function runs, typed, filtered, both branches.
    if db.is_sqlite:
        searches = [s for s, _ in statements if s.startswith("WITH choice")]
        typed = ["memory_entries.memory_type = " in s for s in searches]
        assert True in typed and False in typed, searches
        assert any("json_extract" in s for s, _ in statements)
        assert any("OFFSET" in s for s, _ in statements)
    else:
        assert any(SEARCH_FUNCTION in s for s, _ in statements)
    # Issue 11's statements were all issued: the namespace walk, the expiry
    # reads and writes.
    assert any(s.startswith("WITH RECURSIVE") for s, _ in statements)
    expiry = [s.split()[0].upper() for s, _ in statements if "memory_expiry" in s]
    assert {"SELECT", "UPDATE", "DELETE", "WITH"} <= set(expiry), expiry
    # Issue 16: put_memories' read of many keys' current versions.
    assert any("json_each" in s or "unnest" in s for s, _ in statements)

    assert not (problems := await unindexed(db, statements)), problems


async def test_search_is_a_range_scan_of_the_namespace_index(db: Database, task_id: str) -> None:
    memory = MemoryService(db)
    await memory.add_memory("user:alice", "k", {"a": 1}, "semantic", "me", task_id)
    statements = await _captured_search(db)
    (sql, params), *_ = statements
    lines = await explain(db, sql, params)
    plan = "\n".join(lines)
    if db.is_sqlite:
        # The probes and the RANGE branch read the root and its descendants,
        # two ranges of the current-live index, never one range from the root
        # (which also holds siblings such as ``user:alice2``).
        assert f"{RANGE_SEARCH} (namespace=?)" in plan
        assert f"{RANGE_SEARCH} (namespace>? AND namespace<?)" in plan
        # The RANGE branch ranks row ids on the index (no OR of the two
        # ranges, which reads every row); its page of ids is then read by
        # rowid, and whole rows are never sorted (issue 16: their order is
        # the page's, applied by ``search_rows``).
        assert "MULTI-INDEX OR" not in plan, plan
        rows = plan[plan.index("SCAN by_range") :]
        assert "SEARCH memory_entries USING INTEGER PRIMARY KEY (rowid=?)" in rows, plan
        assert "TEMP B-TREE" not in rows, plan
    else:
        # The function's RANGE statement, with its generic plan: the root
        # ($1) and the range of its descendants ($2 to $3).
        ((_, range_plan),) = [
            (query, nested)
            for query, nested in await nested_explain(db, sql, params)
            if "AS x ON true" in query
        ]
        conditions = [line for line in range_plan.splitlines() if "Index Cond" in line]
        assert any("(namespace = ($1)::text)" in line for line in conditions), range_plan
        assert any("(namespace >= ($2)::text)" in line for line in conditions), range_plan
        assert not any("namespace >= ($1)" in line for line in conditions), range_plan
        assert "idx_memory_namespace_prefix" in range_plan


async def _bulk_fill(db: Database, rows: int) -> None:
    """``rows`` current memories in seven namespaces under ``user:``, half of
    them episodic, all with ``{"a": 1}``; then the planner's statistics."""
    if db.is_sqlite:
        fill = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows) "
            "INSERT INTO memory_entries (namespace, key, value, memory_type, version, "
            "is_current, created_at, updated_at) SELECT 'user:u' || (i % 7), 'k' || i, "
            "'{\"a\": 1}', CASE WHEN i % 2 = 0 THEN 'semantic' ELSE 'episodic' END, 1, 1, "
            "'2024-01-01 00:00:00.' || printf('%06d', i), "
            "'2024-01-01 00:00:00.' || printf('%06d', i) FROM n"
        )
    else:
        fill = (
            "INSERT INTO memory_entries (namespace, key, value, memory_type, version, "
            "is_current, created_at, updated_at) SELECT 'user:u' || (i % 7), 'k' || i, "
            "'{\"a\": 1}', CASE WHEN i % 2 = 0 THEN 'semantic' ELSE 'episodic' END, 1, true, "
            "timestamptz '2024-01-01' + i * interval '1 microsecond', "
            "timestamptz '2024-01-01' + i * interval '1 microsecond' "
            "FROM generate_series(1, :rows) AS i"
        )
    async with db.transaction() as session:
        await session.execute(text(fill), {"rows": rows})
    async with db.transaction() as session:
        await session.execute(text("ANALYZE" if db.is_sqlite else "ANALYZE memory_entries"))


@pytest.mark.parametrize("memory_type", [None, "semantic"])
async def test_search_plans_both_branches_on_their_indexes(
    db: Database, memory_type: str | None
) -> None:
    """One statement holds both plans: the RANGE branch (and the subtree-size
    probe) on ``idx_memory_namespace_prefix``; the WALK branch (and the
    recent-share probe) walking ``idx_memory_updated_at``, or
    ``idx_memory_type_updated`` for a memory type, newest first with no sort.
    On a table with statistics, as the planner sees a real store."""
    await _bulk_fill(db, 10 * SEARCH_CAP)
    memory = MemoryService(db)
    with recording(db) as recorded:
        found = await memory.search_memories(
            "user", memory_type, filter={"a": 1}, offset=1, limit=5
        )
    assert [m["key"] for m in found] == (
        ["k9999", "k9998", "k9997", "k9996", "k9995"]
        if memory_type is None
        else ["k9998", "k9996", "k9994", "k9992", "k9990"]
    )
    ((sql, params),) = [
        (s, p) for s, p in recorded.items() if "memory_entries" in s or SEARCH_FUNCTION in s
    ]
    walk_index = "idx_memory_updated_at" if memory_type is None else "idx_memory_type_updated"
    if not db.is_sqlite:
        # The function's statements: the subtree probe on the namespace
        # index, the recent-rows probe and the WALK on the recency index in
        # its order (no sort, never backward), nothing else.
        nested = [(q, p) for q, p in await nested_explain(db, sql, params) if "memory_" in q]
        ((_, probe),) = [(q, p) for q, p in nested if "LIMIT p_cap" in q]
        ((_, recent),) = [(q, p) for q, p in nested if "LIMIT p_window" in q]
        ((_, walk),) = [(q, p) for q, p in nested if "OFFSET 0) AS memory_entries" in q]
        assert len(nested) == 3, nested
        assert "Index Only Scan using idx_memory_namespace_prefix" in probe, probe
        # For a memory type the generic plan may walk either recency index
        # (the type's, or every row testing the type): both stop after the page.
        walk_indexes = {"idx_memory_updated_at", walk_index}
        for plan in (recent, walk):
            assert any(f" using {name} on memory_entries" in plan for name in walk_indexes), plan
            assert "Sort" not in plan and "Backward" not in plan, plan
            assert not PG_FULL_SCAN.search(plan), plan
        return
    lines = await explain(db, sql, params)
    plan = "\n".join(lines)
    assert not full_scans(db, sql, lines), plan
    if db.is_sqlite:
        assert f"{RANGE_SEARCH} (namespace=?)" in plan
        assert f"{RANGE_SEARCH} (namespace>? AND namespace<?)" in plan
        walks = [line for line in lines if f"memory_entries USING INDEX {walk_index}" in line]
        assert len(walks) == 2, plan  # the recent-share probe and the WALK branch
        # Newest first straight from the index: no sort inside the walk, nor
        # of the rows of its page, read by rowid after it (issue 16).
        walk_branch = plan[plan.index(" by_walk") :]
        assert "SCAN by_walk" in walk_branch, plan
        assert "SEARCH memory_entries USING INTEGER PRIMARY KEY (rowid=?)" in walk_branch, plan
        assert "TEMP B-TREE" not in walk_branch, plan
    else:
        probe = plan[plan.index("InitPlan 1") : plan.index("InitPlan 2")]
        assert "Index Only Scan using idx_memory_namespace_prefix" in probe, plan
        # For a memory type the planner may walk either recency index (the
        # type's rows, or every row testing the type), by its statistics.
        walk_indexes = {"idx_memory_updated_at", walk_index}
        ordered = sum(plan.count(f"Index Scan using {name} ") for name in walk_indexes) + sum(
            plan.count(f"Index Only Scan using {name} ") for name in walk_indexes
        )
        assert ordered == 2, plan  # the recent-share probe and the WALK branch
        assert "Backward" not in plan, plan
        assert plan.count("One-Time Filter") == 2, plan  # each branch gated once, not per row


async def _captured_search(db: Database) -> list[tuple[str, Any]]:
    with recording(db) as recorded:
        await MemoryService(db).search_memories("user:alice")
    statements = [
        (sql, params)
        for sql, params in recorded.items()
        if "memory_entries" in sql or SEARCH_FUNCTION in sql
    ]
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


async def test_memory_statements_keep_their_indexes_after_a_bulk_load(db: Database) -> None:
    """A bulk load leaves statistics (``refresh_statistics``): every memory
    statement, the bulk write's own included, keeps an index plan with the
    statistics of a 10,000-row store, as it does without any (the other
    EXPLAIN tests); and the statistics' own catalog lookup walks no table of ours."""
    await _bulk_fill(db, 10 * SEARCH_CAP)
    memory = MemoryService(db)
    task = await db.tasks.create_task("plans with statistics")
    with recording(db) as recorded:
        assert "memory_entries" in await memory.refresh_statistics(10 * SEARCH_CAP)
        items = [
            {
                "namespace": f"user:u{n % 3}",
                "key": f"bulk{n}",
                "value": {"n": n},
                "memory_type": "semantic",
                "by": "w",
                "task_id": task.id,
            }
            for n in range(20)
        ]
        await memory.put_memories([*items, {**items[0], "value": {"n": -1}}])
        await memory.put_memories(items[:5])
        await memory.put_memory("user:u1", "k1", {"a": 2}, "semantic", by="w", task_id=task.id)
        await memory.get_memory("user:u1", "k1")
        await memory.get_memory("user:u1", "k1", version=1)
        await memory.get_memory_history("user:u1", "bulk1")
        await memory.delete_memory("user:u1", "bulk1", "w", task.id)
        await memory.restore_memory("user:u1", "bulk1", 1, "w", task.id)
        await memory.list_namespaces("user")
        await memory.sweep_expired(task_id=task.id)
    planned = [
        (statement, params)
        for statement, params in recorded.items()
        if not statement.lstrip().upper().startswith("SELECT PG_ADVISORY")
    ]
    assert len(planned) > 10
    assert not (problems := await unindexed(db, planned)), problems


async def test_put_memories_index_rebuild_reads_the_catalog_and_the_primary_keys(
    db: Database, task_id: str
) -> None:
    """A load that doubles the tables (SQLite: ``indexes_rebuilt``) reads
    the tables' highest ids by their primary keys, and the indexes' SQL and
    statistics from SQLite's catalog (a few rows, no table of ours)."""
    item = {"namespace": "user:a", "value": {}, "memory_type": "semantic", "by": "me",
            "task_id": task_id}  # fmt: skip
    await db.memory.put_memories([{**item, "key": "first"}])
    with recording(db) as recorded:
        count = memory_repository.INDEX_REBUILD_MIN_ROWS
        await db.memory.put_memories([{**item, "key": f"k{i}"} for i in range(count)])
    statements = list(recorded.items())
    if db.is_sqlite:
        catalog = [s for s, _ in statements if "sqlite_master" in s or "sqlite_stat1" in s]
        assert len(catalog) == 3, catalog  # the statistics' existence, the indexes, their stats
        highest = [s for s, _ in statements if "max(audit.id)" in s]
        assert len(highest) == 1, statements
        for sql, params in recorded.items():
            if "max(audit.id)" in sql:
                plan = await explain(db, sql, params)
                assert plan == ["SEARCH audit"], plan
    else:
        assert not [s for s, _ in statements if "sqlite_" in s or "max(audit.id)" in s]
    assert not (problems := await unindexed(db, statements)), problems
