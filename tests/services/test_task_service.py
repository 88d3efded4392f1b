"""TaskService and the Milestone 1 repositories: tasks, agents, checkpoints, audit."""

from __future__ import annotations

import uuid
from datetime import UTC

import pytest
from sqlalchemy import text

from abathur.errors import AlreadyExistsError, NotFoundError, ValidationError
from abathur.infrastructure.database import Database


async def _session(db: Database, session_id: str = "s1") -> str:
    async with db.transaction() as session:
        await session.execute(
            text("INSERT INTO sessions (id, app_name, user_id) VALUES (:id, 'app', 'u')"),
            {"id": session_id},
        )
    return session_id


async def test_create_and_get_task(db: Database) -> None:
    created = await db.tasks.create_task("summarise", priority=2, input_data={"doc": "a.md"})
    assert len(created.id) == 32 and created.status == "pending"
    assert created.submitted_at.tzinfo is UTC
    got = await db.tasks.get_task(created.id)
    assert got == created
    assert await db.tasks.get_task("missing") is None


async def test_task_linked_to_session_and_parent(db: Database) -> None:
    sid = await _session(db)
    parent = await db.tasks.create_task("parent", id="p1", session_id=sid)
    child = await db.tasks.create_task("child", parent_task_id=parent.id, session_id=sid)
    assert child.parent_task_id == "p1" and child.session_id == sid
    listed = await db.tasks.list_session_tasks(sid)
    assert {t.id for t in listed} == {"p1", child.id}


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"session_id": "nope"}, NotFoundError, "session 'nope' not found"),
        ({"parent_task_id": "nope"}, NotFoundError, "parent task 'nope' not found"),
        ({"priority": 0}, ValidationError, "priority"),
        ({"status": "done"}, ValidationError, "status"),
        ({"bogus": 1}, ValidationError, "bogus"),
    ],
)
async def test_task_bad_input(
    db: Database, fields: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await db.tasks.create_task("x", **fields)


async def test_duplicate_task_id(db: Database) -> None:
    await db.tasks.create_task("x", id="dup")
    with pytest.raises(AlreadyExistsError, match="already exists"):
        await db.tasks.create_task("y", id="dup")
    kept = await db.tasks.get_task("dup")
    assert kept is not None and kept.prompt == "x"


async def test_agents(db: Database) -> None:
    task = await db.tasks.create_task("x")
    agent = await db.tasks.create_agent("a", "coder", "model-x", task.id, state="working")
    assert (await db.tasks.get_agent(agent.id)) == agent
    assert await db.tasks.get_agent("missing") is None
    with pytest.raises(NotFoundError, match="task"):
        await db.tasks.create_agent("a", "coder", "model-x", "missing")
    with pytest.raises(AlreadyExistsError):
        await db.tasks.create_agent("a", "coder", "model-x", task.id, id=agent.id)


async def test_checkpoints(db: Database) -> None:
    sid = await _session(db)
    task = await db.tasks.create_task("x")
    assert await db.tasks.latest_checkpoint(task.id) is None
    await db.tasks.save_checkpoint(task.id, 1, {"step": 1})
    await db.tasks.save_checkpoint(task.id, 2, {"step": 2}, session_id=sid)
    latest = await db.tasks.latest_checkpoint(task.id)
    assert latest is not None and latest.iteration == 2 and latest.state == {"step": 2}
    with pytest.raises(AlreadyExistsError):
        await db.tasks.save_checkpoint(task.id, 2, {})
    with pytest.raises(NotFoundError):
        await db.tasks.save_checkpoint("missing", 1, {})


async def test_audit_append_and_read(db: Database) -> None:
    task = await db.tasks.create_task("x")
    first = await db.tasks.record_audit(task.id, "task_create", action_data={"a": 1})
    second = await db.tasks.record_audit(
        task.id, "memory_create", memory_operation_type="create", memory_namespace="user:al"
    )
    await db.tasks.record_audit(
        task.id, "memory_create", memory_operation_type="create", memory_namespace="user:alice"
    )
    rows = await db.tasks.audit_for_task(task.id)
    assert [r.action_type for r in rows][-1] == "task_create"
    assert {r.id for r in rows} >= {first.id, second.id}
    tail = await db.tasks.audit_tail("user:al")
    assert [r.memory_namespace for r in tail] == ["user:al"]  # whole segments only
    assert len(await db.tasks.audit_tail(limit=2)) == 2
    with pytest.raises(NotFoundError):
        await db.tasks.record_audit("missing", "x")
    with pytest.raises(ValidationError):
        await db.tasks.record_audit(task.id, "x", memory_operation_type="restore")


async def test_task_ids_given_as_uuid_are_stored_as_their_string_form(db: Database) -> None:
    """The specification's own tests pass ``uuid.uuid4()`` wherever a task id goes."""
    task_uuid, parent_uuid = uuid.uuid4(), uuid.uuid4()
    parent = await db.tasks.create_task("parent", id=parent_uuid)
    assert parent.id == str(parent_uuid)
    task = await db.tasks.create_task(
        "child", id=task_uuid, parent_task_id=parent_uuid, dependencies=[parent_uuid]
    )
    assert (task.id, task.parent_task_id) == (str(task_uuid), str(parent_uuid))
    assert task.dependencies == [str(parent_uuid)]
    assert await db.tasks.get_task(task_uuid) == task  # type: ignore[arg-type]
    agent = await db.tasks.create_agent("a", "s", "m", task_uuid)  # type: ignore[arg-type]
    assert agent.task_id == str(task_uuid)
    checkpoint = await db.tasks.save_checkpoint(task_uuid, 1, {})  # type: ignore[arg-type]
    assert checkpoint.task_id == str(task_uuid)
    assert await db.tasks.latest_checkpoint(task_uuid) == checkpoint  # type: ignore[arg-type]
    await db.tasks.record_audit(task_uuid, "x")  # type: ignore[arg-type]
    row_id = await db.memory.add_memory(
        "user:alice",
        "k",
        {"v": 1},
        "semantic",
        "alice",
        task_uuid,  # type: ignore[arg-type]
    )
    await db.memory.update_memory("user:alice", "k", {"v": 2}, "a", task_uuid)  # type: ignore[arg-type]
    await db.memory.restore_memory("user:alice", "k", 1, "a", task_uuid)  # type: ignore[arg-type]
    await db.memory.delete_memory("user:alice", "k", "a", task_uuid)  # type: ignore[arg-type]
    await db.memory.seed_defaults(task_id=task_uuid)  # type: ignore[arg-type]
    await db.memory.expire_episodic(task_id=task_uuid)  # type: ignore[arg-type]
    await db.memory.consolidate_memories(
        "user:alice",
        "latest_wins",
        task_id=task_uuid,  # type: ignore[arg-type]
    )
    audit = await db.tasks.audit_for_task(task_uuid, limit=100)  # type: ignore[arg-type]
    assert len(audit) == 8 and {a.task_id for a in audit} == {str(task_uuid)}
    assert any(a.memory_entry_id == row_id for a in audit)
