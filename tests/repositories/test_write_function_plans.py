"""Every statement inside ``abathur_write_memory`` (revisions 0010, 0012),
``abathur_append_events`` (revision 0011), ``abathur_shared_state``
(revision 0015) and ``abathur_session_whole`` (revision 0018) is served by an
index, on PostgreSQL.

The EXPLAIN of the call itself only shows a function scan, so the plans of
the statements the function runs are taken by ``auto_explain`` with nested
statements on, as the server really planned them (``enable_seqscan = off``:
tiny test tables make sequential scans the cheapest plan, and the question
is what the planner uses once a table is large), sent back to the client as
notices. A workload takes every branch of the function: a new key, a live
key, a deleted one, an expired one, an expiry set, changed and cleared, a
version with its embedding (one field, two), and each refusal; appends to an
open session, a stale one, a closed one and none; reads of a session and of none.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from abathur.embeddings import HashingEmbedder
from abathur.errors import AlreadyExistsError, ConflictError, NotFoundError, StaleSessionError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.conftest import pg_schema
from tests.support.memory_model import controlled_clock
from tests.support.plans import AUTO_EXPLAIN, PG_FULL_SCAN, nested_plans

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")

# What the function runs, each at least once in the workload.
INNER = (
    "SELECT 1 FROM tasks",
    "SELECT pg_advisory_xact_lock(p_lock_id)",
    "SELECT m.version",
    "UPDATE memory_entries SET is_deleted",
    "DELETE FROM memory_expiry",
    "UPDATE memory_entries SET is_current",
    "INSERT INTO memory_entries",
    "INSERT INTO memory_embeddings AS stored",  # not the Python path's insert: no alias
    "UPDATE memory_expiry",
    "INSERT INTO memory_expiry",
    "INSERT INTO audit",
    "FROM sessions WHERE sessions.id = p_session_id FOR UPDATE",
    "SELECT max(session_events.seq)",
    "INSERT INTO session_events",
    "UPDATE sessions SET state",
    "jsonb_object_agg(shared_state.key",  # abathur_shared_state (revision 0015)
    "array_agg(session_events.event::text",  # abathur_session_whole (revision 0018)
)


async def _workload(db: Database, task_id: str) -> None:
    m = db.memory
    ttl = timedelta(seconds=10)
    with controlled_clock() as clock:
        await m.add_memory("user:p", "k", {"v": 1}, "semantic", "me", task_id)
        await m.update_memory("user:p", "k", {"v": 2}, "me", task_id, ttl=ttl)  # expiry set
        await m.put_memory("user:p", "k", {"v": 3}, "semantic", by="me", task_id=task_id, ttl=ttl)
        await m.put_memory("user:p", "k", {"v": 4}, "semantic", by="me", task_id=task_id)
        await m.delete_memory("user:p", "k", "me", task_id)
        await m.put_memory("user:p", "k", {"v": 5}, "semantic", by="me", task_id=task_id, ttl=ttl)
        clock.advance(timedelta(seconds=11))
        await m.put_memory("user:p", "k", {"v": 6}, "semantic", by="me", task_id=task_id)
        with pytest.raises(AlreadyExistsError):
            await m.add_memory("user:p", "k", {"v": 7}, "semantic", "me", task_id)
        with pytest.raises(NotFoundError):
            await m.update_memory("user:p", "gone", {"v": 7}, "me", task_id)
        with pytest.raises(NotFoundError):
            await m.add_memory("user:p", "x", {"v": 7}, "semantic", "me", "no such task")
    embedded = MemoryService(db, embedder=HashingEmbedder(dims=8, fields=("a", "b")))
    await embedded.add_memory("user:p", "e", {"a": "one", "b": "two"}, "semantic", "me", task_id)
    await embedded.update_memory("user:p", "e", {"a": "three"}, "me", task_id)
    await embedded.put_memory("user:p", "e", {"v": 1}, "semantic", by="me", task_id=task_id)
    s = db.sessions
    await s.create_session("open", "app", "u")
    await s.append_event("open", {"n": 1}, {"k": 1})
    await s.append_events("open", [{"n": 2}, {"n": 3}], expected_seq=1)
    await s.get_session("open")
    await s.get_session("open", events_as_text=True)
    assert await s.get_session("none") is None
    with pytest.raises(StaleSessionError):
        await s.append_event("open", {"n": 4}, expected_seq=1)
    await s.create_session("closed", "app", "u")
    await s.terminate_session("closed")
    with pytest.raises(ConflictError):
        await s.append_event("closed", {"n": 1})
    with pytest.raises(NotFoundError):
        await s.append_event("none", {"n": 1})


async def test_every_statement_of_the_write_functions_uses_an_index() -> None:
    assert PG_URL
    notices: list[str] = []
    async with pg_schema(migrated=True) as schema:
        settings = {"search_path": schema, **AUTO_EXPLAIN}
        db = Database(PG_URL, connect_args={"server_settings": settings})

        def listen(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection.add_log_listener(
                lambda _conn, message: notices.append(str(message.message))
            )

        event.listen(db.engine.sync_engine, "connect", listen)
        try:
            await db.initialize()
            task_id = (await db.tasks.create_task("plans")).id
            notices.clear()
            await _workload(db, task_id)
        finally:
            await db.close()
    plans = nested_plans(notices)
    for inner in INNER:
        assert any(inner in query for query in plans), (inner, list(plans))
    scans = {
        query: plan
        for query, plan in plans.items()
        if any(PG_FULL_SCAN.search(line.strip()) for line in plan.splitlines())
    }
    assert scans == {}
