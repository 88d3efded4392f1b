"""What a workload sends to the database, and how the database plans it.

Shared by the query-plan tests: a recorder on the engine's
``before_cursor_execute`` hook (which sees every statement, on the fast path
too), ``explain`` on either backend, and what counts as a full table scan.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import event

from abathur.infrastructure.database import Database
from tests.conftest import pg_schema

TABLES = (
    "sessions", "session_events", "memory_entries", "audit", "tasks", "agents",
    "checkpoints", "document_index", "state", "metrics", "memory_expiry",
    "memory_embeddings", "shared_state",
)  # fmt: skip
# A table may appear under an alias (``memory_entries_1`` for a correlated
# subquery of the same table): SQLite and PostgreSQL plans name the alias.
SQLITE_FULL_SCAN = re.compile(rf"^SCAN ({'|'.join(TABLES)})(_\d+)?\b")
PG_FULL_SCAN = re.compile(rf"Seq Scan on ({'|'.join(TABLES)})\b")
PLANNED = ("SELECT", "UPDATE", "DELETE", "WITH")
# PostgreSQL's search runs its statements in this function (revision 0012).
SEARCH_FUNCTION = "abathur_search_memories("


@contextmanager
def recording(db: Database) -> Iterator[dict[str, Any]]:
    """Every distinct SELECT/UPDATE/DELETE sent while inside, and every INSERT
    whose RETURNING reads another table (a subquery, or on PostgreSQL
    ``abathur_shared_state``, whose own statement ``test_write_function_plans``
    explains), with the parameters of its first use (the first set of an
    executemany)."""
    recorded: dict[str, Any] = {}

    def record(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        returning = statement.partition(" RETURNING ")[2]
        reads = returning.startswith(("(SELECT", "abathur_shared_state("))
        if verb in PLANNED or (verb == "INSERT" and reads):
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
        if not db.is_sqlite and SEARCH_FUNCTION in sql:
            # The call's plan is a function scan: check what the function ran.
            for query, nested in await nested_explain(db, sql, params):
                lines = nested.splitlines()
                scans = [line for line in lines if PG_FULL_SCAN.search(line.strip())]
                if scans:
                    problems[query] = (scans, lines)
            continue
        plan = await explain(db, sql, params)
        scans = full_scans(db, sql, plan)
        if not plan or scans:
            problems[" ".join(sql.split())] = (scans, plan)
    return problems


# Server settings that make PostgreSQL send the plan of every statement a
# PL/pgSQL function runs back to the client as a notice (``nested_plans``),
# as the server really planned it; sequential scans discouraged, as ``explain``
# does.
AUTO_EXPLAIN = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_level": "notice",
    "enable_seqscan": "off",
}


def nested_plan_list(notices: list[str]) -> list[tuple[str, str]]:
    """Each nested statement's text and plan, from auto_explain's notices, in
    the order they ran (the calls of ``abathur_`` functions themselves, a
    function scan each, left out; a statement the search function prepared
    comes as its ``PREPARE``)."""
    found: list[tuple[str, str]] = []
    for notice in notices:
        # The query's text may span lines; the plan starts at its first node
        # (``Limit  (cost=...``).
        match = re.search(r"Query Text:(.*?)\n(\S[^\n]*?  \(cost=.*)", notice, re.S)
        if match is None:
            continue
        query = " ".join(match.group(1).split())
        if not re.search(r"abathur_\w+\(", query):
            found.append((query, match.group(2)))
    return found


def nested_plans(notices: list[str]) -> dict[str, str]:
    """Each nested statement's text and its first plan (``nested_plan_list``)."""
    found: dict[str, str] = {}
    for query, plan in nested_plan_list(notices):
        found.setdefault(query, plan)
    return found


def explained(url: str, schema: str, notices: list[str], *, analyze: bool = False) -> Database:
    """A Database on ``schema`` whose connections send the plans of nested
    statements (``AUTO_EXPLAIN``) to ``notices``; with ``analyze``, as
    EXPLAIN ANALYZE shows them (actual rows and loops of each node)."""
    settings = {"search_path": schema, **AUTO_EXPLAIN}
    if analyze:
        settings["auto_explain.log_analyze"] = "on"
    db = Database(url, connect_args={"server_settings": settings})

    def listen(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_log_listener(
            lambda _conn, message: notices.append(str(message.message))
        )

    event.listen(db.engine.sync_engine, "connect", listen)
    return db


@asynccontextmanager
async def explained_database(
    url: str, notices: list[str], *, analyze: bool = False
) -> AsyncIterator[Database]:
    """An ``explained`` Database, initialized, on a fresh copy of the migrated
    schema (``pg_schema``); closed, and the schema dropped, afterwards."""
    async with pg_schema(migrated=True) as schema:
        db = explained(url, schema, notices, analyze=analyze)
        try:
            await db.initialize()
            yield db
        finally:
            await db.close()


async def nested_explain(db: Database, statement: str, params: Any) -> list[tuple[str, str]]:
    """PostgreSQL: run ``statement`` (a call of a read-only function) with
    ``auto_explain`` on for this transaction alone, and return the text and
    plan of every statement the function ran (``nested_plan_list``)."""
    notices: list[str] = []

    def listen(_conn: Any, message: Any) -> None:
        notices.append(str(message.message))

    async with db.transaction(write=False) as session:
        conn = await session.connection()
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        raw.add_log_listener(listen)
        try:
            await conn.exec_driver_sql("LOAD 'auto_explain'")
            for name, value in AUTO_EXPLAIN.items():
                if name.startswith("auto_explain."):
                    await conn.exec_driver_sql(f"SET LOCAL {name} = '{value}'")
            await conn.exec_driver_sql(statement, tuple(params or ()))
            for _ in range(3):  # notices are delivered by the event loop
                await asyncio.sleep(0)
        finally:
            raw.remove_log_listener(listen)
    return nested_plan_list(notices)
