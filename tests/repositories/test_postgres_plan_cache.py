"""PostgreSQL keeps a search's plan from the first call to the thousandth.

asyncpg prepares each statement once per connection; after five executions
PostgreSQL may switch a prepared statement to a generic plan, chosen without
the parameter values (for a namespace range that was a backward walk of the
whole ``updated_at`` index: 26 ms instead of 0.3 ms). abathur's connections
set ``plan_cache_mode = force_custom_plan`` (``db/engine.py``): every execution
is planned for its own values. A generic plan shows its parameters (``$1``) in
its conditions; a custom plan shows the values.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from abathur.infrastructure.database import Database
from tests.support.plans import recording

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _literal(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, datetime):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


def _conditions(plan: Any) -> list[str]:
    """Every condition text of a JSON plan, all nodes, but the one-time
    filters of the search's branches: their ``$n`` is the result of an
    InitPlan (which branch runs), not a parameter."""
    found: list[str] = []
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        found += [
            str(v)
            for k, v in node.items()
            if k.endswith(("Cond", "Filter")) and k != "One-Time Filter"
        ]
        nodes += node.get("Plans", [])
    return found


async def _plan_after(db: Database, sql: str, params: Any, executions: int, mode: str) -> Any:
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute(f"SET plan_cache_mode = {mode}")
        try:
            statement = await raw.prepare(sql)
            for _ in range(executions):
                await statement.fetch(*params)
            args = ", ".join(_literal(p) for p in params)
            plan = await raw.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE {statement.get_name()}({args})"
            )
            return json.loads(plan) if isinstance(plan, str) else plan
        finally:
            await raw.execute("RESET plan_cache_mode")


async def test_connections_plan_every_execution_for_its_own_values(db: Database) -> None:
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        mode = (await conn.exec_driver_sql("SHOW plan_cache_mode")).scalar()
        jit = (await conn.exec_driver_sql("SHOW jit")).scalar()
        workers = (await conn.exec_driver_sql("SHOW max_parallel_workers_per_gather")).scalar()
    assert mode == "force_custom_plan"
    # No JIT compilation and no parallel workers: both cost milliseconds, more
    # than any statement here (see db/engine.py).
    assert (jit, workers) == ("off", "0")


async def test_a_search_keeps_its_plan_past_the_generic_plan_switch(
    db: Database, task_id: str
) -> None:
    for i in range(40):
        await db.memory.put_memory(
            "user:big", f"k{i}", {"i": i}, "semantic", by="a", task_id=task_id
        )
    await db.memory.put_memory("user:small", "k", {"i": 0}, "semantic", by="a", task_id=task_id)
    with recording(db) as recorded:
        await db.memory.search_memories("user:small", limit=100)
    ((sql, params),) = [(s, p) for s, p in recorded.items() if "memory_entries" in s]

    first = await _plan_after(db, sql, params, 1, "force_custom_plan")
    later = await _plan_after(db, sql, params, 12, "force_custom_plan")
    assert later == first
    assert not any("$" in c for c in _conditions(later)), _conditions(later)
    # The check can fail: a generic plan shows its parameters.
    generic = await _plan_after(db, sql, params, 12, "force_generic_plan")
    assert any("$" in c for c in _conditions(generic)), _conditions(generic)
