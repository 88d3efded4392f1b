"""Every statement the services send is served by an index: no full table scan.

A representative workload runs through every public method of the session,
memory, task and document services with a hook on the engine that records
each statement actually sent. Each recorded SELECT/UPDATE/DELETE is then
explained on the populated database: on SQLite a plan line ``SCAN <table>``
(a walk over a whole table or a whole index) fails the test, except an
ordered walk of an index by a statement with ORDER BY and LIMIT ("the newest
N"), which stops after N rows; on PostgreSQL,
where tiny tables make sequential scans the cheapest plan, the planner is
told to avoid them and any ``Seq Scan`` that remains fails the test.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from abathur.domain.clock import utcnow
from abathur.domain.memory import AccessContext
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.support.plans import PG_FULL_SCAN, SQLITE_FULL_SCAN, recording, unindexed


def test_full_scan_patterns_catch_aliases_too() -> None:
    assert SQLITE_FULL_SCAN.match("SCAN memory_entries")
    assert SQLITE_FULL_SCAN.match("SCAN memory_entries_1")
    assert not SQLITE_FULL_SCAN.match("SEARCH memory_entries_1 USING INDEX uq (namespace=?)")
    assert PG_FULL_SCAN.search("Seq Scan on memory_entries memory_entries_1  (cost=0.00..1.01)")
    assert not PG_FULL_SCAN.search("Index Scan using uq on memory_entries memory_entries_1")


async def _resolver(versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"merged": [v["version"] for v in versions]}


async def workload(db: Database, docs: Path) -> None:
    """Call every public method at least once, with data in every table."""
    s, t = db.sessions, db.tasks
    memory = MemoryService(db, resolver=_resolver)
    for i in range(30):
        await s.create_session(f"s{i}", f"app{i % 3}", f"u{i % 5}", project_id=f"p{i % 2}")
        await s.update_status(f"s{i}", "active")
        await s.append_event(f"s{i}", {"type": "m", "i": i}, state_delta={"session:i": i})
    task = await t.create_task("work", session_id="s1")
    child = await t.create_task("child", parent_task_id=task.id, session_id="s1")
    await t.get_task(task.id)
    await t.list_session_tasks("s1")
    agent = await t.create_agent("a", "coder", "m", task.id, session_id="s1")
    await t.get_agent(agent.id)
    await t.save_checkpoint(task.id, 1, {"x": 1}, session_id="s1")
    await t.latest_checkpoint(task.id)
    await t.record_audit(task.id, "task_start", agent_id=agent.id)
    await t.audit_for_task(task.id)
    await t.audit_tail()
    await t.audit_tail("user:u1")

    await s.get_session("s1")
    await s.get_session("s1", recent_events=1)
    await s.get_session("s1", after=utcnow() - timedelta(hours=1))
    await s.get_session("s1", events_as_text=True)  # the ADK adapter's reads
    await s.get_session_log("s1")
    await s.get_session("s1", recent_events=1, events_as_text=True)
    await s.get_session("s1", after=utcnow() - timedelta(hours=1), events_as_text=True)
    await s.append_event("s1", {"type": "x"}, expected_seq=1)
    await s.append_events("s1", [{"type": "a"}, {"type": "b"}], state_delta={"temp:x": 1})
    await s.list_events("s1")
    await s.list_events("s1", after_seq=1, limit=2)
    await s.get_state("s1", "session:i")
    await s.set_state("s1", "session:j", 2)
    # Shared state scopes (app:/user: keys in shared_state).
    await s.create_session("sh", "app1", "u1", initial_state={"app:a": 1, "user:u": 2, "k": 3})
    await s.append_event("sh", {"type": "x"}, state_delta={"user:v": 1, "app:b": 2})
    await s.set_state("s1", "user:w", 3)
    await s.get_state("s1", "user:w")
    await s.get_state("s1", "app:a")
    await s.get_shared_state("app1")
    await s.get_shared_state("app1", "u1")
    await s.get_app_shared_state("app1")  # the ADK adapter's listing across users
    # The ADK adapter's listings: one app (all users), one app and user, paged.
    await s.list_sessions(app_name="app1", limit=2)
    await s.list_sessions(app_name="app1", limit=2, before="s1")
    await s.list_sessions(app_name="app1", user_id="u1", limit=2, before="s1")
    await s.list_active_sessions()
    await s.list_active_sessions(user_id="u1")
    await s.list_sessions()
    await s.list_sessions(app_name="app1", user_id="u1", status="active", limit=5)
    await s.list_sessions(project_id="p1")
    page = await s.list_sessions(limit=3)
    await s.list_sessions(limit=3, before=page[-1]["id"])
    await s.update_status("s2", "paused")
    await s.terminate_session("s3")
    await s.update_status("s3", "archived")
    await s.delete_session("s4")

    for i in range(20):
        ns = f"user:u{i % 5}" + (":prefs" if i % 2 else "")
        await memory.add_memory(ns, f"k{i}", {"v": i}, "semantic", "w", task.id)
    await memory.update_memory("user:u1:prefs", "k1", {"v": 100}, "w", child.id)
    await memory.get_memory("user:u1:prefs", "k1")
    await memory.get_memory("user:u1:prefs", "k1", version=1)
    await memory.get_memory_history("user:u1:prefs", "k1")
    await memory.search_memories("user:u1")
    await memory.search_memories("user:u1", memory_type="semantic", limit=5)
    await memory.delete_memory("user:u0", "k0", "w", task.id)
    await memory.restore_memory("user:u0", "k0", 1, "w", task.id)
    await memory.add_memory("session:s1", "draft", {"d": 1}, "episodic", "w", task.id)
    await memory.publish_memory("session:s1", "user:u1", "draft", "w", task.id)
    await memory.update_memory("user:u2", "k2", {"v": 3}, "w", task.id)
    await memory.consolidate_memories("user:u2", "latest_wins", task_id=task.id)
    await memory.update_memory("user:u3:prefs", "k3", {"v": 3}, "w", task.id)
    await memory.consolidate_memories("user:u3", "merge", task_id=task.id)
    await memory.update_memory("user:u4", "k4", {"v": 3}, "w", task.id)
    await memory.consolidate_memories("user:u4", "llm_based", task_id=task.id)
    await memory.expire_episodic(older_than=timedelta(days=90))
    scoped = memory.scoped(AccessContext(session_id="s1", user_id="u1", app_name="app1"))
    await scoped.search_memories("user:u1")
    await scoped.get_memory("user:u1:prefs", "k1")
    await memory.seed_defaults(task_id=task.id)

    for i in range(5):
        (docs / f"d{i}.md").write_text(f"# Doc {i}\n\ntext {i}\n")
    await db.documents.sync_directory(docs)
    (docs / "d0.md").write_text("# Doc 0 changed\n")
    (docs / "d1.md").unlink()
    await db.documents.sync_directory(docs)
    pending = await db.documents.pending_documents(10)
    await db.documents.mark_synced(pending[0].id, "model-x", b"\x00\x01")
    await db.documents.get_document(pending[0].id)
    await db.documents.list_documents(docs)


async def test_every_statement_uses_an_index(db: Database, tmp_path: Path) -> None:
    with recording(db) as recorded:
        await workload(db, tmp_path)
    assert len(recorded) > 30, "the workload should exercise many distinct statements"
    # create_session's INSERT reads the shared state in its RETURNING.
    assert any(s.lstrip().upper().startswith("INSERT") for s in recorded)

    planned = [
        (statement, params)
        for statement, params in recorded.items()
        if not statement.lstrip().upper().startswith("SELECT PG_ADVISORY")
    ]
    assert not (problems := await unindexed(db, planned)), problems
