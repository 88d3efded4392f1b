"""The search's two plans return the same pages (``repositories/memory.py``,
SEARCH_CAP): the WALK of the recency index agrees with the RANGE of the
namespace index for every subtree, memory type, filter, offset and limit,
with updates, deletes, re-creations and expired keys in the store.

The thresholds are lowered so that the small store here takes the walk
whenever the subtree holds at least two keys; the defaults take the range.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from abathur.infrastructure.database import Database
from abathur.repositories import memory as repository
from tests.support.memory_model import controlled_clock

PREFIXES = ("user", "user:a1", "user:b", "project", "user:a", "user:nothing")
TYPES = (None, "episodic")
FILTERS: tuple[dict[str, Any] | None, ...] = (None, {"n": {"$gte": 2}}, {"s": "x"})
PAGES = ((0, 1), (0, 5), (3, 5), (0, 100), (30, 100))


async def _fill(db: Database, task_id: str) -> Any:
    memory = db.memory
    clock_cm = controlled_clock()
    clock = clock_cm.__enter__()
    for i in range(40):
        await memory.put_memory(
            f"user:a{i % 3}", f"k{i}", {"n": i % 5, "s": "x" if i % 2 else "y"},
            "episodic" if i % 4 else "semantic", by="me", task_id=task_id,
            ttl=timedelta(seconds=30) if i % 9 == 0 else None,
        )  # fmt: skip
        clock.advance(timedelta(seconds=1))
    for i in range(0, 40, 7):
        await memory.put_memory(f"user:a{i % 3}", f"k{i}", {"n": 4, "s": "x"}, "semantic",
                                by="me", task_id=task_id)  # fmt: skip
        clock.advance(timedelta(seconds=1))
    for i in range(1, 40, 11):
        await memory.delete_memory(f"user:a{i % 3}", f"k{i}", "me", task_id)
    await memory.add_memory("user:a1", "k12", {"n": 3, "s": "x"}, "episodic", "me", task_id)
    for i in range(3):
        await memory.add_memory("user:b", f"b{i}", {"n": i}, "episodic", "me", task_id)
        await memory.add_memory("project:p", f"p{i}", {"n": i, "s": "x"}, "semantic", "me", task_id)
    clock.advance(timedelta(seconds=5))  # some TTL keys have expired by now
    return clock_cm


async def _pages(db: Database) -> dict[tuple[Any, ...], list[tuple[str, str, int]]]:
    found = {}
    for prefix, memory_type, filter, (offset, limit) in itertools.product(
        PREFIXES, TYPES, FILTERS, PAGES
    ):
        rows = await db.memory.search_memories(
            prefix, memory_type, limit, filter=filter, offset=offset
        )
        found[(prefix, memory_type, str(filter), offset, limit)] = [
            (r["namespace"], r["key"], r["version"]) for r in rows
        ]
    return found


async def test_the_walk_and_the_range_return_the_same_pages(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock_cm = await _fill(db, task_id)
    try:
        by_range = await _pages(db)
        assert by_range[("user", None, "None", 0, 100)], "the store must not look empty"
        monkeypatch.setattr(repository, "SEARCH_CAP", 2)
        monkeypatch.setattr(repository, "WALK_WINDOW_MIN", 1)
        monkeypatch.setattr(repository, "WALK_DENSITY", 1000)
        by_walk = await _pages(db)
    finally:
        clock_cm.__exit__(None, None, None)
    assert by_walk == by_range
