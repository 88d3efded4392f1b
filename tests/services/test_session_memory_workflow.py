"""Session -> task -> memory workflows, end to end, on SQLite and PostgreSQL.

One test per bullet of the Milestone 2 spec's integration list (section 5).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from abathur.domain.memory import AccessContext
from abathur.errors import AccessDeniedError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.schema.models import AuditEntry, MemoryEntry


async def _audit_rows(db: Database, namespace: str | None = None) -> list[AuditEntry]:
    async with db.transaction(write=False) as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if namespace is not None:
            query = query.where(AuditEntry.memory_namespace == namespace)
        return list((await session.scalars(query)).all())


async def test_complete_workflow_session_task_memory_audit(db: Database) -> None:
    await db.sessions.create_session("s1", "planner", "alice", project_id="apollo")
    await db.sessions.update_status("s1", "active")
    task = await db.tasks.create_task("plan the launch", session_id="s1")

    await db.sessions.append_event(
        "s1", {"type": "user_message", "text": "plan it"}, state_delta={"session:goal": "launch"}
    )
    await db.sessions.append_event(
        "s1",
        {"type": "tool_call", "tool": "search"},
        state_delta={"temp:scratch": [1, 2], "session:step": 2},
    )
    entry_id = await db.memory.add_memory(
        "user:alice:preferences", "launch_window", {"prefers": "morning"}, "semantic",
        created_by="planner-agent", task_id=task.id,
    )  # fmt: skip

    stored = await db.sessions.get_session("s1")
    assert stored is not None
    assert [e["type"] for e in stored["events"]] == ["user_message", "tool_call"]
    assert all("event_id" in e and "timestamp" in e for e in stored["events"])
    assert stored["state"] == {"session:goal": "launch", "temp:scratch": [1, 2], "session:step": 2}
    assert (await db.tasks.get_task(task.id)).session_id == "s1"  # type: ignore[union-attr]

    memory = await db.memory.get_memory("user:alice:preferences", "launch_window")
    assert memory is not None and memory["id"] == entry_id and memory["version"] == 1
    assert memory["value"] == {"prefers": "morning"} and memory["created_by"] == "planner-agent"

    (audit,) = await _audit_rows(db, "user:alice:preferences")
    assert audit.task_id == task.id
    assert audit.action_type == "memory_create"
    assert audit.memory_operation_type == "create"
    assert audit.memory_entry_id == entry_id
    assert audit.action_data["key"] == "launch_window" and audit.action_data["version"] == 1


async def test_temp_and_session_state_scopes(db: Database) -> None:
    await db.sessions.create_session("s1", "app", "u", initial_state={"session:lang": "en"})
    await db.sessions.update_status("s1", "active")
    await db.sessions.append_event(
        "s1", {"type": "step"}, state_delta={"temp:draft": "x", "session:turns": 1}
    )
    await db.sessions.set_state("s1", "temp:cursor", 7)
    assert await db.sessions.get_state("s1", "temp:draft") == "x"
    assert await db.sessions.get_state("s1", "temp:cursor") == 7

    await db.sessions.terminate_session("s1")
    stored = await db.sessions.get_session("s1")
    assert stored is not None and stored["status"] == "terminated"
    assert stored["terminated_at"] is not None
    assert stored["state"] == {"session:lang": "en", "session:turns": 1}
    assert await db.sessions.get_state("s1", "temp:draft") is None


async def test_memory_versioning_v1_to_v2_both_readable(db: Database, task_id: str) -> None:
    first = await db.memory.add_memory("user:bob", "tz", {"tz": "UTC"}, "semantic", "a", task_id)
    second = await db.memory.update_memory("user:bob", "tz", {"tz": "CET"}, "b", task_id)
    assert second != first

    v1 = await db.memory.get_memory("user:bob", "tz", version=1)
    v2 = await db.memory.get_memory("user:bob", "tz", version=2)
    latest = await db.memory.get_memory("user:bob", "tz")
    assert v1 is not None and v1["value"] == {"tz": "UTC"} and v1["id"] == first
    assert v2 is not None and v2["value"] == {"tz": "CET"} and v2["id"] == second
    assert latest == v2
    assert v2["created_by"] == "a" and v2["updated_by"] == "b"
    history = await db.memory.get_memory_history("user:bob", "tz")
    assert [h["version"] for h in history] == [1, 2]


async def test_namespace_hierarchy_matches_whole_segments(db: Database, task_id: str) -> None:
    namespaces = [
        "user:alice", "user:alice:preferences", "user:alice:preferences:ui",
        "user:alice2", "user:al", "user:alice_", "user:alic%", "app:alice",
    ]  # fmt: skip
    for ns in namespaces:
        await db.memory.add_memory(ns, "k", {"ns": ns}, "semantic", "t", task_id)

    found = {m["namespace"] for m in await db.memory.search_memories("user:alice")}
    assert found == {"user:alice", "user:alice:preferences", "user:alice:preferences:ui"}
    found = {m["namespace"] for m in await db.memory.search_memories("user:alice:preferences")}
    assert found == {"user:alice:preferences", "user:alice:preferences:ui"}
    found = {m["namespace"] for m in await db.memory.search_memories("user:alic%")}
    assert found == {"user:alic%"}  # % is a literal character, not a wildcard


async def test_one_hundred_concurrent_sessions_read_and_write(db: Database, task_id: str) -> None:
    sessions, events_each = 100, 10

    async def agent(i: int) -> None:
        sid = f"s{i}"
        await db.sessions.create_session(sid, "app", f"user{i % 7}")
        await db.sessions.update_status(sid, "active")
        for n in range(events_each):
            await db.sessions.append_event(
                sid, {"type": "step", "n": n}, state_delta={f"session:k{n}": n}
            )
            got = await db.sessions.get_state(sid, f"session:k{n}")
            assert got == n
        await db.memory.add_memory(f"session:{sid}", "summary", {"i": i}, "episodic", sid, task_id)
        assert (await db.memory.get_memory(f"session:{sid}", "summary"))["value"] == {"i": i}  # type: ignore[index]

    await asyncio.gather(*(agent(i) for i in range(sessions)))

    for i in range(sessions):
        stored = await db.sessions.get_session(f"s{i}")
        assert stored is not None
        assert [e["n"] for e in stored["events"]] == list(range(events_each))
        assert stored["state"] == {f"session:k{n}": n for n in range(events_each)}
    assert len(await db.sessions.list_active_sessions()) == sessions
    assert len(await db.memory.search_memories("session", limit=1000)) == sessions


async def test_consolidation_detects_and_resolves_conflicts(db: Database, task_id: str) -> None:
    calls: list[list[dict[str, Any]]] = []

    async def resolver(versions: list[dict[str, Any]]) -> dict[str, Any]:
        """A deterministic stand-in for the LLM: union of every version's facts."""
        calls.append(versions)
        facts: list[str] = []
        for version in versions:
            facts.extend(f for f in version["value"]["facts"] if f not in facts)
        return {"facts": facts}

    memory = MemoryService(db, resolver=resolver)
    await memory.add_memory("user:carol", "bio", {"facts": ["likes tea"]}, "semantic", "a", task_id)
    await memory.update_memory("user:carol", "bio", {"facts": ["lives in Oslo"]}, "b", task_id)
    await memory.add_memory("user:carol", "single", {"facts": []}, "semantic", "a", task_id)

    assert await memory.consolidate_memories("user:carol", "llm_based") == 1
    assert [v["version"] for v in calls[0]] == [1, 2]
    merged = await memory.get_memory("user:carol", "bio")
    assert merged is not None and merged["version"] == 3
    assert merged["value"] == {"facts": ["likes tea", "lives in Oslo"]}
    assert merged["metadata"]["consolidation_strategy"] == "llm_based"
    assert merged["metadata"]["consolidated_from"] == [v["id"] for v in calls[0]]
    history = await memory.get_memory_history("user:carol", "bio")
    assert [(h["version"], h["is_deleted"]) for h in history] == [(1, True), (2, True), (3, False)]
    assert history[0]["value"] == {"facts": ["likes tea"]}  # superseded, still readable

    assert await memory.consolidate_memories("user:carol", "llm_based") == 0
    consolidations = [a for a in await _audit_rows(db) if a.memory_operation_type == "consolidate"]
    assert len(consolidations) == 1 and consolidations[0].action_data["key"] == "bio"


async def test_audit_trail_has_one_row_per_memory_write(db: Database, task_id: str) -> None:
    """Every kind of memory write leaves exactly one audit row, naming the task,
    the version written and the row written."""
    m = db.memory
    written = [
        await m.add_memory("project:x", "a", {"v": 1}, "procedural", "w", task_id),
        await m.update_memory("project:x", "a", {"v": 2}, "w", task_id),
        await m.update_memory("project:x", "a", {"v": 3}, "w", task_id),
    ]
    await m.delete_memory("project:x", "a", "w", task_id)
    written.append(None)  # delete writes no new row; its audit row names the key's newest
    written.append(await m.restore_memory("project:x", "a", 2, "w", task_id))  # v4, live
    written.append(await m.update_memory("project:x", "a", {"v": 5}, "w", task_id))  # v4, v5 live
    assert await m.consolidate_memories("project:x", "latest_wins", task_id=task_id) == 1
    consolidated = await m.get_memory("project:x", "a")
    assert consolidated is not None and consolidated["version"] == 6
    written.append(consolidated["id"])
    await m.add_memory("session:s9", "a", {"v": "draft"}, "procedural", "w", task_id)
    written.append(await m.publish_memory("session:s9", "project:x", "a", "w", task_id))

    rows = await _audit_rows(db, "project:x")
    assert [(r.action_type, r.memory_operation_type) for r in rows] == [
        ("memory_create", "create"),
        ("memory_update", "update"),
        ("memory_update", "update"),
        ("memory_delete", "delete"),
        ("memory_restore", "update"),
        ("memory_update", "update"),
        ("memory_consolidate", "consolidate"),
        ("memory_publish", "publish"),
    ]
    assert all(r.task_id == task_id for r in rows)
    assert [r.action_data["version"] for r in rows] == [1, 2, 3, 3, 4, 5, 6, 7]
    written[3] = written[2]  # the delete's row is version 3's
    assert [r.memory_entry_id for r in rows] == written
    async with db.transaction(write=False) as session:
        versions = await session.scalar(
            select(func.count())
            .select_from(MemoryEntry)
            .where(MemoryEntry.namespace == "project:x")
        )
    assert versions == 7  # every version kept: delete is soft, the rest write new versions


async def test_scoped_access_control(db: Database, task_id: str) -> None:
    await db.memory.add_memory("user:eve", "secret", {"s": 1}, "semantic", "eve", task_id)
    await db.memory.add_memory("user:dave", "note", {"n": 1}, "semantic", "dave", task_id)
    dave = db.memory.scoped(AccessContext(session_id="s1", user_id="dave", app_name="app"))

    assert [m["key"] for m in await dave.search_memories("user:dave")] == ["note"]
    with pytest.raises(AccessDeniedError):
        await dave.search_memories("user")  # would cover other users' subtrees
    assert await dave.get_memory("user:dave", "note") is not None
    with pytest.raises(AccessDeniedError):
        await dave.get_memory("user:eve", "secret")
    with pytest.raises(AccessDeniedError):
        await dave.add_memory("app:app", "k", {}, "semantic", "dave", task_id)
    await dave.add_memory("session:s1", "draft", {"d": 1}, "episodic", "dave", task_id)


async def test_deleting_a_session_keeps_tasks_with_session_id_null(db: Database) -> None:
    await db.sessions.create_session("s1", "app", "u")
    await db.sessions.append_event("s1", {"type": "x"})
    task = await db.tasks.create_task("linked", session_id="s1")
    agent = await db.tasks.create_agent("a", "coder", "m", task.id, session_id="s1")
    await db.tasks.save_checkpoint(task.id, 1, {"s": 1}, session_id="s1")

    await db.sessions.delete_session("s1")

    assert await db.sessions.get_session("s1") is None
    kept_task = await db.tasks.get_task(task.id)
    kept_agent = await db.tasks.get_agent(agent.id)
    checkpoint = await db.tasks.latest_checkpoint(task.id)
    assert kept_task is not None and kept_task.session_id is None
    assert kept_agent is not None and kept_agent.session_id is None
    assert checkpoint is not None and checkpoint.session_id is None
    assert await db.validate_foreign_keys() == []
