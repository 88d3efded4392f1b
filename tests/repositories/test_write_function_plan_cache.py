"""PostgreSQL plans the statements of ``abathur_write_memory`` once per
connection (revision 0014_memory_write_lean).

abathur's connections plan every execution for its own values
(``plan_cache_mode = force_custom_plan``, ``db/engine.py``), and a function's
statements inherit that: every memory write planned each statement of the
function, and the foreign-key checks of its rows, again (about 0.2 ms of its
server time; docs/design_decisions.md, "PostgreSQL memory write: where the
server time goes"). The function's own settings give each statement one
generic plan from its first call on: a generic plan shows its parameters
(``$1``) in its conditions, a custom plan the values.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest

from abathur.embeddings import HashingEmbedder
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.support.plans import explained_database, nested_plan_list

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")

INNER = re.compile(r"\bp_[a-z_]+\b|SELECT 1 FROM ONLY ")
NAMESPACE = "user:plancache"
COSTS = re.compile(r"  \(cost=[^)]*\)")
VALUES = ("'user:plancache'", "'k0'", "'k1'", "'e0'", "'e1'")


async def _writes(db: Database, task_id: str, n: int, notices: list[str]) -> list[str]:
    """The plans of the statements the function ran in the ``n``-th round of
    writes: a new key, an update with a TTL, a put of a new key with an
    embedding (its rows checked against their memory entry)."""
    m = db.memory
    embedded = MemoryService(db, embedder=HashingEmbedder(dims=8))
    notices.clear()
    await m.add_memory(NAMESPACE, f"k{n}", {"v": 1}, "semantic", "me", task_id)
    await m.update_memory(NAMESPACE, f"k{n}", {"v": 2}, "me", task_id, ttl=timedelta(hours=1))
    await embedded.put_memory(NAMESPACE, f"e{n}", {"v": 3}, "semantic", by="me", task_id=task_id)
    # The function's statements name its arguments (p_...); the foreign-key
    # checks read ``FROM ONLY`` the referenced table. (The notices also carry
    # the plans of the client's own statements.)
    return [plan for query, plan in nested_plan_list(notices) if INNER.search(query)]


async def test_the_write_function_keeps_one_generic_plan_per_statement() -> None:
    assert PG_URL
    notices: list[str] = []
    async with explained_database(PG_URL, notices) as db:
        task_id = (await db.tasks.create_task("plans")).id
        first = await _writes(db, task_id, 0, notices)
        later = await _writes(db, task_id, 1, notices)
    conditions = [plan for plan in first + later if "Cond:" in plan or "Filter:" in plan]
    # the task check, the latest read, the flip, the expiry, the foreign-key
    # checks (audit -> tasks, audit and embeddings -> memory_entries)
    assert len(conditions) >= 12, first
    for plan in conditions:
        assert "$" in plan, plan
        assert not any(value in plan for value in VALUES), plan
    # The same plans (same parameters) in the second round as in the first.
    # Their cost figures may differ: a round may run on another pooled
    # connection, which plans (once) for the table as it has grown.
    assert [_shape(plan) for plan in later] == [_shape(plan) for plan in first]


def _shape(plan: str) -> str:
    """A plan without its estimates (``(cost=... rows=... width=...)``)."""
    return COSTS.sub("", plan)
