"""PostgreSQL keeps a search's plan from the first call to the thousandth.

asyncpg prepares each statement once per connection; after five executions
PostgreSQL may switch a prepared statement to a generic plan, chosen without
the parameter values (for a namespace range that was a backward walk of the
whole ``updated_at`` index: 26 ms instead of 0.3 ms). abathur's connections
set ``plan_cache_mode = force_custom_plan`` (``db/engine.py``): every execution
is planned for its own values. The search is the exception: it runs in
``abathur_search_memories`` (revision 0013_search_function), whose statements
are written to be right under a generic plan and are given one from their
first call (the function's ``SET`` clauses). A generic plan shows its
parameters (``$1``) in its conditions; a custom plan shows the values.
"""

from __future__ import annotations

import os

import pytest

from abathur.infrastructure.database import Database
from tests.support.plans import explained_database, nested_plan_list

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


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


async def test_a_search_keeps_its_plan_past_the_generic_plan_switch(backend: str) -> None:
    """The search's statements run inside ``abathur_search_memories``, whose
    ``SET plan_cache_mode = force_generic_plan`` gives each one generic plan
    from its first call (its conditions show parameters, ``$1``, not values):
    the same plan at the first and the twelfth call, past the switch."""
    assert PG_URL
    notices: list[str] = []
    async with explained_database(PG_URL, notices) as db:
        task_id = (await db.tasks.create_task("plans")).id
        for i in range(40):
            await db.memory.put_memory(
                "user:big", f"k{i}", {"i": i}, "semantic", by="a", task_id=task_id
            )
        await db.memory.put_memory("user:small", "k", {"i": 0}, "semantic", by="a", task_id=task_id)
        calls = []
        for _ in range(12):
            for root in ("user:small", "user:big"):
                notices.clear()
                await db.memory.search_memories(root, limit=10)
                calls.append(nested_plan_list(notices))
        # A filtered search: its statement is prepared by the function
        # once per connection and filter shape, with a generic plan too.
        filtered = []
        for _ in range(12):
            notices.clear()
            await db.memory.search_memories("user:small", limit=10, filter={"i": 0})
            filtered.append([(q, p) for q, p in nested_plan_list(notices) if "$8[" in q])
        # The check can fail: a custom plan (the session's own mode)
        # shows the values, not $1.
        async with db.transaction(write=False) as session:
            conn = await session.connection()
            await conn.exec_driver_sql(
                "PREPARE canary(text) AS SELECT 1 FROM memory_entries WHERE namespace = $1"
            )
            canary = [
                str(row[0])
                for row in await conn.exec_driver_sql("EXPLAIN EXECUTE canary('user:small')")
            ]
            await conn.exec_driver_sql("DEALLOCATE canary")
    first, later = calls[:2], calls[-2:]
    assert later == first
    # the range (user:small, sparse among the newest rows) and the walk (user:big)
    assert [len(plans) for plans in first] == [2, 2], first
    for query, plan in first[0] + first[1]:
        assert "$1" in plan, (query, plan)
    assert len(filtered[0]) == 1 and filtered[-1] == filtered[0], filtered
    assert "$1" in filtered[0][0][1], filtered[0]
    assert "'user:small'" in "\n".join(canary) and "$1" not in "\n".join(canary), canary


async def test_an_append_and_a_create_keep_their_plans_from_the_first_call(backend: str) -> None:
    """``abathur_append_events`` and ``abathur_shared_state`` (revision
    0015_session_plans) plan their statements once per connection, generic
    (``$1``, not the session id or app name), instead of once per call under
    the connections' ``force_custom_plan``."""
    assert PG_URL
    notices: list[str] = []
    async with explained_database(PG_URL, notices) as db:
        await db.sessions.create_session("s", "app", "u")
        calls = []
        creates = []
        for i in range(12):
            notices.clear()
            await db.sessions.append_event("s", {"n": i}, {"k": i}, expected_seq=i)
            calls.append(nested_plan_list(notices))
            notices.clear()
            await db.sessions.create_session(f"c{i}", "app", "u")
            creates.append(nested_plan_list(notices))
    # create_session's read of the shared state (abathur_shared_state)
    assert creates[-1] == creates[0]
    (shared,) = [(q, p) for q, p in creates[0] if "shared_state" in q]
    assert "$1" in shared[1] and "'app'" not in shared[1], shared
    assert calls[-1] == calls[0]
    own = [(q, p) for q, p in calls[0] if "p_session_id" in q]  # not the foreign key check
    assert len(own) == 4, calls[0]
    # Those that look the session up show the parameter, not the id (a custom
    # plan would show 's'); the insert's plan is a scan of the events given.
    looked_up = [(q, p) for q, p in own if "WHERE" in q]
    assert len(looked_up) == 3, own
    for query, plan in looked_up:
        assert "$1" in plan and "'s'" not in plan, (query, plan)
