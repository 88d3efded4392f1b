"""What a workload sends to the database, and how the database plans it.

Shared by the query-plan tests: a recorder on the engine's
``before_cursor_execute`` hook (which sees every statement, on the fast path
too), ``explain`` on either backend, and what counts as a full table scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from abathur.infrastructure.database import Database

TABLES = (
    "sessions", "session_events", "memory_entries", "audit", "tasks", "agents",
    "checkpoints", "document_index", "state", "metrics", "memory_expiry",
    "memory_embeddings",
)  # fmt: skip
# A table may appear under an alias (``memory_entries_1`` for a correlated
# subquery of the same table): SQLite and PostgreSQL plans name the alias.
SQLITE_FULL_SCAN = re.compile(rf"^SCAN ({'|'.join(TABLES)})(_\d+)?\b")
PG_FULL_SCAN = re.compile(rf"Seq Scan on ({'|'.join(TABLES)})\b")
PLANNED = ("SELECT", "UPDATE", "DELETE", "WITH")


@contextmanager
def recording(db: Database) -> Iterator[dict[str, Any]]:
    """Every distinct SELECT/UPDATE/DELETE sent while inside, and every INSERT
    whose RETURNING reads another table, with the parameters of its first use
    (the first set of an executemany)."""
    recorded: dict[str, Any] = {}

    def record(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in PLANNED or (verb == "INSERT" and "RETURNING (SELECT" in statement):
            recorded.setdefault(statement, params[0] if many else params)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield recorded
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def explain(db: Database, statement: str, params: Any) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN lines, or PostgreSQL's EXPLAIN with
    sequential scans discouraged: tiny test tables make them the cheapest
    plan, and the question is what the planner uses once a table is large."""
    if db.is_sqlite:
        return await db.explain_query_plan(statement, list(params or ()))
    async with db.transaction(write=False) as session:
        conn = await session.connection()
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        result = await conn.exec_driver_sql("EXPLAIN " + statement, tuple(params or ()))
        return [str(row[0]) for row in result]


def full_scans(db: Database, statement: str, plan: list[str]) -> list[str]:
    """The plan's lines that walk a whole table of ours. On SQLite even
    ``SCAN t USING INDEX`` walks a whole index: only ``SEARCH`` is a range,
    except an index walked in order by a statement with ORDER BY and LIMIT
    ("the newest N"), which stops after N rows."""
    pattern = SQLITE_FULL_SCAN if db.is_sqlite else PG_FULL_SCAN
    return [
        line for line in plan if pattern.search(line.strip()) and not _ordered_walk(statement, line)
    ]


def _ordered_walk(statement: str, plan_line: str) -> bool:
    upper = statement.upper()
    return (
        "USING" in plan_line and "INDEX" in plan_line and "ORDER BY" in upper and " LIMIT " in upper
    )


async def unindexed(db: Database, statements: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Each of ``statements`` (SQL, parameters) whose plan is empty or walks a
    whole table, with its offending lines and its plan: the EXPLAIN tests
    assert this is empty."""
    problems: dict[str, Any] = {}
    for sql, params in statements:
        plan = await explain(db, sql, params)
        scans = full_scans(db, sql, plan)
        if not plan or scans:
            problems[" ".join(sql.split())] = (scans, plan)
    return problems
