"""Every statement inside ``abathur_search_memories`` (revision
0013_search_function) is served by the index it was written for, on
PostgreSQL: the probes and both branches (RANGE, WALK), with and without a
memory type, static (no filter) and dynamic (a filter).

The EXPLAIN of the call shows a function scan only, so the plans are taken by
``auto_explain`` with nested statements on (``tests/support/plans.py``), as
the server planned them. The walk is taken with the thresholds lowered (as in
``test_memory_search_branches.py``), the range with the defaults.
"""

from __future__ import annotations

import os

import pytest

from abathur.infrastructure.database import Database
from abathur.repositories import memory as repository
from tests.conftest import pg_schema
from tests.support.plans import PG_FULL_SCAN, explained, nested_plans

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")

ORDER = "ORDER BY memory_entries.updated_at DESC, memory_entries.id DESC"
LIVE = "memory_entries.is_deleted"
TYPED = f"= p_memory_type {ORDER}"
# For a memory type the generic plan may walk either recency index (the
# type's, or every row testing the type): both stop after the page.
EITHER = ("idx_memory_type_updated", "idx_memory_updated_at")
# Each statement the function runs, by a part of its text, with the index its
# plan must use.
INNER = {
    "subtree probe": ("LIMIT p_cap", "idx_memory_namespace_prefix"),
    "recent probe": (f"{LIVE} {ORDER} LIMIT p_window", "idx_memory_updated_at"),
    "recent probe, typed": (f"{TYPED} LIMIT p_window", EITHER),
    "walk": (
        f"{LIVE} {ORDER} OFFSET 0) AS memory_entries WHERE (memory_entries.namespace = p_root",
        "idx_memory_updated_at",
    ),
    "walk, typed": (f"{TYPED} OFFSET 0", EITHER),
    "walk, filtered": (
        f"{LIVE} {ORDER} OFFSET 0) AS memory_entries WHERE (memory_entries.namespace = $1",
        "idx_memory_updated_at",
    ),
    "walk, typed, filtered": (f"= $4 {ORDER} OFFSET 0", EITHER),
    "range": (
        f"NOT {LIVE} AND (x.expires_at IS NULL OR x.expires_at > p_now)",
        "idx_memory_namespace_prefix",
    ),
    "range, typed": (
        "= p_memory_type AND (x.expires_at IS NULL OR x.expires_at > p_now)",
        "idx_memory_namespace_prefix",
    ),
    "range, filtered": (
        f"NOT {LIVE} AND (x.expires_at IS NULL OR x.expires_at > $7)",
        "idx_memory_namespace_prefix",
    ),
    "range, typed, filtered": (
        "= $4 AND (x.expires_at IS NULL OR x.expires_at > $7)",
        "idx_memory_namespace_prefix",
    ),
}


async def _searches(db: Database) -> None:
    # ``project`` holds one key: never found among the newest rows, a range.
    for root in ("user", "project"):
        for memory_type in (None, "episodic"):
            for filter in (None, {"n": {"$gte": 1}}):
                await db.memory.search_memories(root, memory_type, 5, filter=filter, offset=1)


async def test_every_statement_of_the_search_function_uses_its_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PG_URL
    notices: list[str] = []
    async with pg_schema(migrated=True) as schema:
        db = explained(PG_URL, schema, notices)
        try:
            await db.initialize()
            task_id = (await db.tasks.create_task("plans")).id
            for i in range(12):
                await db.memory.put_memory(
                    f"user:u{i % 3}", f"k{i}", {"n": i % 4}, "episodic" if i % 2 else "semantic",
                    by="me", task_id=task_id,
                )  # fmt: skip
            await db.memory.put_memory(
                "project:p", "k", {"n": 1}, "episodic", by="me", task_id=task_id
            )
            notices.clear()
            await _searches(db)  # the range: the subtree holds fewer than SEARCH_CAP rows
            monkeypatch.setattr(repository, "SEARCH_CAP", 2)
            monkeypatch.setattr(repository, "WALK_WINDOW_MIN", 1)
            monkeypatch.setattr(repository, "WALK_DENSITY", 1000)
            await _searches(db)  # the walk
        finally:
            await db.close()
    plans = nested_plans(notices)
    problems = {}
    for name, (text, index) in INNER.items():
        found = [plan for query, plan in plans.items() if text in query]
        if len(found) != 1:
            problems[name] = ("ran", len(found))
        elif not any(name in found[0] for name in ((index,) if isinstance(index, str) else index)):
            problems[name] = (index, found[0])
    assert problems == {}, list(plans)
    scans = {
        query: plan
        for query, plan in plans.items()
        if any(PG_FULL_SCAN.search(line.strip()) for line in plan.splitlines())
    }
    assert scans == {}
    # The walks read their index in order: no sort.
    walks = [plan for query, plan in plans.items() if "OFFSET 0) AS memory_entries" in query]
    assert len(walks) == 4 and not any("Sort" in plan for plan in walks), walks
