"""Scoped memory views: what an AccessContext may read and write."""

from __future__ import annotations

import pytest

from abathur.domain.memory import AccessContext
from abathur.errors import AccessDeniedError, ValidationError
from abathur.infrastructure.database import Database

CTX = AccessContext(session_id="s1", user_id="alice", app_name="shop", project_id="p1")


async def seed(db: Database, task_id: str) -> None:
    for ns in [
        "session:s1", "session:s2", "user:alice", "user:alice:prefs", "user:alice2",
        "user:bob", "app:shop", "app:other", "project:p1", "project:p2",
    ]:  # fmt: skip
        await db.memory.add_memory(ns, "k", {"ns": ns}, "semantic", "seed", task_id)


@pytest.mark.parametrize(
    ("namespace", "readable"),
    [
        ("session:s1", True),
        ("session:s2", False),
        ("user:alice", True),
        ("user:alice:prefs", True),
        ("user:alice2", False),
        ("user:bob", False),
        ("app:shop", True),
        ("app:other", False),
        ("project:p1", True),
        ("project:p2", False),
    ],
)
async def test_reads(db: Database, task_id: str, namespace: str, readable: bool) -> None:
    await seed(db, task_id)
    view = db.memory.scoped(CTX)
    if readable:
        got = await view.get_memory(namespace, "k")
        assert got is not None and got["namespace"] == namespace
        assert len(await view.get_memory_history(namespace, "k")) == 1
    else:
        with pytest.raises(AccessDeniedError, match="access denied"):
            await view.get_memory(namespace, "k")
        with pytest.raises(PermissionError):
            await view.get_memory_history(namespace, "k")


@pytest.mark.parametrize(
    ("context", "namespace", "rule"),
    [
        (CTX, "session:s1", None),
        (CTX, "user:alice:notes", None),
        (CTX, "session:s2", "own session"),
        (CTX, "user:bob", "own user"),
        (CTX, "app:shop", "can_write_app"),
        (CTX.model_copy(update={"can_write_app": True}), "app:shop", None),
        (CTX.model_copy(update={"can_write_app": True}), "app:other", "own application"),
        (CTX, "project:p1", "can_write_project"),
        (CTX.model_copy(update={"can_write_project": True}), "project:p1", None),
        (CTX.model_copy(update={"can_write_project": True}), "project:p2", "own project"),
        (CTX.model_copy(update={"project_id": None, "can_write_project": True}), "project:p1",
         "no project"),
    ],
)  # fmt: skip
async def test_writes(
    db: Database, task_id: str, context: AccessContext, namespace: str, rule: str | None
) -> None:
    view = db.memory.scoped(context)
    if rule is None:
        await view.add_memory(namespace, "w", {"x": 1}, "semantic", "alice", task_id)
        await view.update_memory(namespace, "w", {"x": 2}, "alice", task_id)
        await view.restore_memory(namespace, "w", 1, "alice", task_id)
        await view.delete_memory(namespace, "w", "alice", task_id)
        assert len(await db.memory.get_memory_history(namespace, "w")) == 3
        return
    with pytest.raises(AccessDeniedError, match=rule):
        await view.add_memory(namespace, "w", {"x": 1}, "semantic", "alice", task_id)
    await db.memory.add_memory(namespace, "w", {"x": 1}, "semantic", "admin", task_id)
    for attempt in (
        view.update_memory(namespace, "w", {"x": 2}, "alice", task_id),
        view.delete_memory(namespace, "w", "alice", task_id),
        view.restore_memory(namespace, "w", 1, "alice", task_id),
        view.consolidate_memories(namespace, "latest_wins", task_id=task_id),
    ):
        with pytest.raises(AccessDeniedError, match=rule):
            await attempt
    assert len(await db.memory.get_memory_history(namespace, "w")) == 1


async def test_scoped_search_never_leaves_the_scope(db: Database, task_id: str) -> None:
    await seed(db, task_id)
    view = db.memory.scoped(CTX)
    found = {r["namespace"] for r in await view.search_memories("user:alice")}
    assert found == {"user:alice", "user:alice:prefs"}
    for prefix in ("user", "user:al", "session", "app", "project:p2", "user:bob"):
        with pytest.raises(AccessDeniedError):
            await view.search_memories(prefix)


async def test_publish_needs_read_of_source_and_write_of_target(db: Database, task_id: str) -> None:
    await seed(db, task_id)
    view = db.memory.scoped(CTX)
    await view.publish_memory("session:s1", "user:alice", "k", "alice", task_id)
    with pytest.raises(AccessDeniedError, match="own session"):
        await view.publish_memory("session:s2", "user:alice", "k", "alice", task_id)
    with pytest.raises(AccessDeniedError, match="can_write_project"):
        await view.publish_memory("session:s1", "project:p1", "k", "alice", task_id)
    writer = db.memory.scoped(CTX.model_copy(update={"can_write_project": True}))
    await writer.publish_memory("session:s1", "project:p1", "k", "alice", task_id)
    current = await db.memory.get_memory("project:p1", "k")
    assert current is not None and current["value"] == {"ns": "session:s1"}


@pytest.mark.parametrize(
    "fields",
    [
        {"user_id": "alice:admin"},
        {"user_id": ""},
        {"session_id": "s\n1"},
        {"app_name": "a:b"},
        {"project_id": "p:1"},
    ],
)
def test_context_ids_cannot_name_part_of_another_scope(fields: dict[str, str]) -> None:
    base = {"session_id": "s1", "user_id": "alice", "app_name": "shop"}
    with pytest.raises(ValueError):
        AccessContext(**{**base, **fields})


async def test_scoped_requires_an_access_context(db: Database) -> None:
    with pytest.raises(ValidationError):
        db.memory.scoped({"session_id": "s1"})  # type: ignore[arg-type]
