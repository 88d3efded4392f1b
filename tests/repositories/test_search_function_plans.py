"""Every statement inside ``abathur_search_memories`` (revisions
0013_search_function, 0016_search_range_ids) is served by the index it was
written for, on PostgreSQL: the probes and both branches (RANGE, WALK), with
and without a memory type, static (no filter) and dynamic (a filter). RANGE
ranks ids by index-only scans of both arms, merged in order, and reads the
rows of the page alone, by primary key (a subtree of 1,000 rows, a page of
10 after 5: about 15 rows read, not 1,000).

The EXPLAIN of the call shows a function scan only, so the plans are taken by
``auto_explain`` with nested statements on (``tests/support/plans.py``), as
the server planned them. The walk is taken with the thresholds lowered (as in
``test_memory_search_branches.py``), the range with the defaults.
"""

from __future__ import annotations

import os
import re

import pytest

from abathur.infrastructure.database import Database
from abathur.repositories import memory as repository
from tests.support.plans import PG_FULL_SCAN, explained_database, nested_plan_list, nested_plans

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")

ORDER = "ORDER BY memory_entries.updated_at DESC, memory_entries.id DESC"
LIVE = "memory_entries.is_deleted"
TYPED = f"= p_memory_type {ORDER}"
# For a memory type the generic plan may walk either recency index (the
# type's, or every row testing the type): both stop after the page.
EITHER = ("idx_memory_type_updated", "idx_memory_updated_at")
# RANGE tests the memory type on the row it reads by id, on its text.
RANGE_TYPE = "memory_entries.memory_type || ''"
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
    "range": ("memory_entries.id = ids.id LIMIT 1", "idx_memory_namespace_prefix"),
    "range, typed": (
        f"memory_entries.id = ids.id AND {RANGE_TYPE} = p_memory_type LIMIT 1",
        "idx_memory_namespace_prefix",
    ),
    "range, filtered": ("memory_entries.id = ids.id AND (", "idx_memory_namespace_prefix"),
    "range, typed, filtered": (
        f"memory_entries.id = ids.id AND {RANGE_TYPE} = $4 AND (",
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
    async with explained_database(PG_URL, notices) as db:
        task_id = (await db.tasks.create_task("plans")).id
        for i in range(12):
            await db.memory.put_memory(
                f"user:u{i % 3}", f"k{i}", {"n": i % 4}, "episodic" if i % 2 else "semantic",
                by="me", task_id=task_id,
            )  # fmt: skip
        await db.memory.put_memory("project:p", "k", {"n": 1}, "episodic", by="me", task_id=task_id)
        notices.clear()
        await _searches(db)  # the range: the subtree holds fewer than SEARCH_CAP rows
        monkeypatch.setattr(repository, "SEARCH_CAP", 2)
        monkeypatch.setattr(repository, "WALK_WINDOW_MIN", 1)
        monkeypatch.setattr(repository, "WALK_DENSITY", 1000)
        await _searches(db)  # the walk
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
    # The ranges rank ids on the index alone (both arms index-only, merged in
    # rank order), then read each row by its id (a probe per id).
    ranges = [plan for query, plan in plans.items() if ") AS ids CROSS JOIN LATERAL" in query]
    assert len(ranges) == 4, list(plans)
    for plan in ranges:
        assert plan.count("Index Only Scan using idx_memory_namespace_prefix") >= 2, plan
        assert "Merge Append" in plan and "Index Scan using pk_memory_entries" in plan, plan
        # A type or a filter: 0013's read of the subtree only behind a
        # one-time filter (it runs when the ranked ids did not fill the page).
        assert "Bitmap Heap Scan" not in plan or "One-Time Filter" in plan, plan


# A plan node that reads rows of memory_entries (not an index-only scan), with
# its actual rows and loops (auto_explain with ANALYZE).
ROWS_READ = re.compile(
    r"(?<!Only )Scan\b[^\n]* on memory_entries\b[^\n]*actual time=\S+ rows=(\d+) loops=(\d+)"
)


def _branch_plans(notices: list[str]) -> list[str]:
    """The plans of the branch statements that ran (not the probes)."""
    ends = ("LIMIT p_limit OFFSET p_offset", "LIMIT $5 OFFSET $6")
    return [
        plan
        for query, plan in nested_plan_list(notices)
        if query.endswith(ends) or query.endswith(tuple(end + ")" for end in ends))
    ]


def _rows_read(plan: str) -> int:
    return sum(int(rows) * int(loops) for rows, loops in ROWS_READ.findall(plan))


async def test_the_range_reads_the_rows_of_the_page_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subtree of 1,000 current live rows (500 at the root, 500 below it),
    a page of 10 after 5: each RANGE statement (typed or not, filtered or
    not) reads 15 rows of memory_entries, where 0013's read all 1,000 (a
    bitmap heap scan of the subtree, then a sort)."""
    assert PG_URL
    notices: list[str] = []
    async with explained_database(PG_URL, notices, analyze=True) as db:
        task_id = (await db.tasks.create_task("plans")).id
        item = {"memory_type": "semantic", "by": "me", "task_id": task_id}
        await db.memory.put_memories([
            {"namespace": "user:big" if i % 2 else f"user:big:n{i % 10}", "key": f"k{i}",
             "value": {"n": i}, **item}
            for i in range(1000)
        ])  # fmt: skip
        # Newer rows elsewhere: the subtree is rare among the newest, a range.
        await db.memory.put_memories(
            [{"namespace": "project:p", "key": f"k{i}", "value": {"n": i}, **item}
             for i in range(20)]
        )  # fmt: skip
        monkeypatch.setattr(repository, "WALK_WINDOW_MIN", 1)
        monkeypatch.setattr(repository, "WALK_DENSITY", 1)
        notices.clear()
        pages = []
        for memory_type in (None, "semantic"):
            for filter in (None, {"n": {"$gte": 0}}):
                found = await db.memory.search_memories(
                    "user:big", memory_type, 10, filter=filter, offset=5
                )
                pages.append([m["key"] for m in found])
    # Newest first: one load, one timestamp, so by id: k994 ... k985.
    assert pages == [[f"k{i}" for i in range(994, 984, -1)]] * 4
    # The branch statements (not the probes): each search ran a range.
    ranges = _branch_plans(notices)
    assert len(ranges) == 4, [query for query, _ in nested_plan_list(notices)]
    assert [_rows_read(plan) for plan in ranges] == [15] * 4, "\n\n".join(ranges)


async def test_a_type_or_filter_few_rows_match_falls_back_to_reading_the_subtree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A typed or filtered RANGE probes at most K ranked ids (1,000 for a small
    page); when they do not fill the page and the subtree holds more, 0013's
    read of the whole subtree gives the page instead, in the same statement:
    the same rows, whether the matches are among the first K ids, beyond
    them, or both."""
    assert PG_URL
    notices: list[str] = []
    async with explained_database(PG_URL, notices, analyze=True) as db:
        task_id = (await db.tasks.create_task("plans")).id
        rare = {0, 1, 1098, 1099}  # the two oldest and the two newest keys
        await db.memory.put_memories([
            {"namespace": "user:big" if i % 2 else f"user:big:n{i % 10}", "key": f"k{i}",
             "value": {"n": 0 if i in rare else 1},
             "memory_type": "episodic" if i in rare else "semantic", "by": "me",
             "task_id": task_id}
            for i in range(1100)
        ])  # fmt: skip
        # Newer matches elsewhere: the subtree is rare among the newest, a range.
        await db.memory.put_memories([
            {"namespace": "project:p", "key": f"k{i}", "value": {"n": 0},
             "memory_type": "episodic", "by": "me", "task_id": task_id}
            for i in range(20)
        ])  # fmt: skip
        monkeypatch.setattr(repository, "WALK_WINDOW_MIN", 1)
        monkeypatch.setattr(repository, "WALK_DENSITY", 1)
        pages = {}
        searches = (("episodic", None), (None, {"n": 0}), ("episodic", {"n": 0}))
        for memory_type, filter in searches:
            for offset, limit in ((0, 2), (0, 3), (1, 10), (3, 10)):
                notices.clear()
                found = await db.memory.search_memories(
                    "user:big", memory_type, limit, filter=filter, offset=offset
                )
                pages[(memory_type is None, filter is None, offset, limit)] = [
                    m["key"] for m in found
                ]
                plans = _branch_plans(notices)
                assert len(plans) == 1, [query for query, _ in nested_plan_list(notices)]
                # 0013's read ran exactly when the first K ids fell short.
                read_all = re.search(r"Bitmap Heap Scan[^\n]*actual time", plans[0])
                assert bool(read_all) == (offset + limit > 2), plans[0]
    newest_first = ["k1099", "k1098", "k1", "k0"]
    for (_untyped, _unfiltered, offset, limit), keys in pages.items():
        assert keys == newest_first[offset : offset + limit], (offset, limit, keys)
