"""MemoryService rules: versioning, validation, search, audit, consolidation, retention."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from abathur.errors import (
    AlreadyExistsError,
    ConfigurationError,
    DatabaseError,
    NotFoundError,
    ValidationError,
)
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import SYSTEM_TASK_ID, MemoryService, deep_merge
from abathur.schema.models import AuditEntry, MemoryEntry


async def rows(db: Database, model: type[Any]) -> list[Any]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(model).order_by(model.id))).all())


async def count(db: Database, model: type[Any]) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def add(db: Database, task_id: str, ns: str = "user:alice", key: str = "k", **kw: Any) -> int:
    value = kw.pop("value", {"v": 1})
    memory_type = kw.pop("memory_type", "semantic")
    return await db.memory.add_memory(ns, key, value, memory_type, "alice", task_id, **kw)


# ------------------------------------------------------------------ versioning


async def test_add_get_update_history(db: Database, task_id: str) -> None:
    first = await add(db, task_id, metadata={"source": "chat"})
    got = await db.memory.get_memory("user:alice", "k")
    assert got is not None
    assert got["id"] == first and got["version"] == 1 and got["value"] == {"v": 1}
    assert got["is_deleted"] is False and got["metadata"] == {"source": "chat"}
    assert got["created_at"].tzinfo is not None and got["created_at"].utcoffset() == timedelta(0)

    second = await db.memory.update_memory("user:alice", "k", {"v": 2}, "bob", task_id)
    assert second != first
    latest = await db.memory.get_memory("user:alice", "k")
    assert latest is not None
    assert latest["id"] == second and latest["version"] == 2 and latest["value"] == {"v": 2}
    assert latest["memory_type"] == "semantic"
    assert latest["metadata"] == {"source": "chat"}
    assert latest["created_by"] == "alice" and latest["updated_by"] == "bob"
    v1 = await db.memory.get_memory("user:alice", "k", version=1)
    assert v1 is not None and v1["value"] == {"v": 1}
    history = await db.memory.get_memory_history("user:alice", "k")
    assert [h["version"] for h in history] == [1, 2]
    assert await db.memory.get_memory("user:alice", "k", version=3) is None
    assert await db.memory.get_memory_history("user:alice", "nope") == []
    assert await db.memory.get_memory("user:alice", "nope") is None


async def test_add_of_live_key_already_exists(db: Database, task_id: str) -> None:
    await add(db, task_id)
    with pytest.raises(AlreadyExistsError, match="already exists"):
        await add(db, task_id)
    with pytest.raises(ValueError):  # the spec's contract
        await add(db, task_id)
    assert await count(db, MemoryEntry) == 1


async def test_update_missing_or_deleted_is_not_found(db: Database, task_id: str) -> None:
    with pytest.raises(NotFoundError):
        await db.memory.update_memory("user:alice", "k", {}, "a", task_id)
    await add(db, task_id)
    await db.memory.delete_memory("user:alice", "k", "a", task_id)
    with pytest.raises(NotFoundError):
        await db.memory.update_memory("user:alice", "k", {}, "a", task_id)
    with pytest.raises(NotFoundError):
        await db.memory.delete_memory("user:alice", "k", "a", task_id)
    with pytest.raises(NotFoundError):
        await db.memory.delete_memory("user:alice", "never", "a", task_id)


async def test_delete_is_soft_and_recreate_never_reuses_versions(
    db: Database, task_id: str
) -> None:
    await add(db, task_id)
    await db.memory.update_memory("user:alice", "k", {"v": 2}, "a", task_id)
    await db.memory.delete_memory("user:alice", "k", "a", task_id)
    assert await db.memory.get_memory("user:alice", "k") is None
    history = await db.memory.get_memory_history("user:alice", "k")
    assert [(h["version"], h["is_deleted"]) for h in history] == [(1, True), (2, True)]
    old = await db.memory.get_memory("user:alice", "k", version=2)
    assert old is not None and old["is_deleted"] is True and old["value"] == {"v": 2}
    assert await count(db, MemoryEntry) == 2

    await add(db, task_id, value={"v": 3}, memory_type="episodic")
    again = await db.memory.get_memory("user:alice", "k")
    assert again is not None and again["version"] == 3 and again["memory_type"] == "episodic"


async def test_restore_writes_a_new_version_with_the_old_value(db: Database, task_id: str) -> None:
    await add(db, task_id, value={"v": 1}, metadata={"m": 1})
    await db.memory.update_memory("user:alice", "k", {"v": 2}, "a", task_id)
    restored = await db.memory.restore_memory("user:alice", "k", 1, "carol", task_id)
    current = await db.memory.get_memory("user:alice", "k")
    assert current is not None and current["id"] == restored
    assert current["version"] == 3 and current["value"] == {"v": 1}
    assert current["updated_by"] == "carol" and current["created_by"] == "alice"
    # works on a deleted key too, bringing it back
    await db.memory.delete_memory("user:alice", "k", "a", task_id)
    await db.memory.restore_memory("user:alice", "k", 2, "carol", task_id)
    current = await db.memory.get_memory("user:alice", "k")
    assert current is not None and current["version"] == 4 and current["value"] == {"v": 2}
    with pytest.raises(NotFoundError):
        await db.memory.restore_memory("user:alice", "k", 99, "carol", task_id)
    with pytest.raises(NotFoundError):
        await db.memory.restore_memory("user:alice", "other", 1, "carol", task_id)
    audit = [a for a in await rows(db, AuditEntry) if a.action_type == "memory_restore"]
    assert [(a.memory_operation_type, a.action_data["restored_from_version"]) for a in audit] == [
        ("update", 1),
        ("update", 2),
    ]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "temp:x"}, "temp: data lives only in session state"),
        ({"namespace": "nope:x"}, "must start with one of"),
        ({"namespace": "user"}, "at least one segment"),
        ({"namespace": "user::x"}, "empty segment"),
        ({"namespace": "user:" + "x" * 1100}, "limit"),
        ({"key": ""}, "key"),
        ({"key": "k" * 1100}, "key"),
        ({"value": {"x": math.nan}}, "JSON"),
        ({"value": {"x": math.inf}}, "JSON"),
        ({"value": [1, 2]}, "value"),
        ({"value": "text"}, "value"),
        ({"value": {"x": object()}}, "JSON"),
        ({"value": {"x": {1: "int key"}}}, "round trip"),
        ({"value": {"x": "nul\x00"}}, "NUL"),
        ({"memory_type": "dream"}, "memory_type"),
        ({"created_by": ""}, "created_by"),
        ({"metadata": {"x": math.nan}}, "metadata"),
        ({"metadata": ["x"]}, "metadata"),
    ],
)
async def test_add_rejects_bad_input_and_writes_nothing(
    db: Database, task_id: str, change: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "namespace": "user:alice",
        "key": "k",
        "value": {"v": 1},
        "memory_type": "semantic",
        "created_by": "alice",
        "task_id": task_id,
        **change,
    }
    with pytest.raises(ValidationError, match=message):
        await db.memory.add_memory(**args)
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0


async def test_unknown_task_is_not_found_not_integrity_error(db: Database) -> None:
    with pytest.raises(NotFoundError, match="task 'ghost' not found"):
        await db.memory.add_memory("user:a", "k", {}, "semantic", "a", "ghost")
    assert await count(db, MemoryEntry) == 0


async def test_update_and_get_validate_too(db: Database, task_id: str) -> None:
    await add(db, task_id)
    with pytest.raises(ValidationError, match="JSON"):
        await db.memory.update_memory("user:alice", "k", {"x": math.nan}, "a", task_id)
    with pytest.raises(NotFoundError, match="task"):
        await db.memory.update_memory("user:alice", "k", {"x": 1}, "a", "ghost")
    with pytest.raises(ValidationError, match="temp:"):
        await db.memory.get_memory("temp:x", "k")
    with pytest.raises(ValidationError, match="version"):
        await db.memory.get_memory("user:alice", "k", version=0)
    assert [h["version"] for h in await db.memory.get_memory_history("user:alice", "k")] == [1]


@pytest.mark.parametrize("limit", [0, -1, 1001, 2.5, "10", True])
async def test_search_limit_must_be_a_bounded_positive_integer(db: Database, limit: Any) -> None:
    with pytest.raises(ValidationError, match="limit"):
        await db.memory.search_memories("user:alice", limit=limit)


async def test_search_rejects_bad_type_and_temp(db: Database) -> None:
    with pytest.raises(ValidationError, match="memory_type"):
        await db.memory.search_memories("user:alice", memory_type="dream")
    with pytest.raises(ValidationError, match="temp:"):
        await db.memory.search_memories("temp")


# ------------------------------------------------------------------ search


async def test_search_matches_whole_segments_and_literal_wildcards(
    db: Database, task_id: str
) -> None:
    names = ["user:alice", "user:alice:preferences", "user:alice2", "user:al", "user:a%",
             "user:a_", "user:ab", "user:a\\", "user:a"]  # fmt: skip
    for name in names:
        await add(db, task_id, ns=name)

    async def found(prefix: str) -> set[str]:
        return {r["namespace"] for r in await db.memory.search_memories(prefix)}

    assert await found("user:alice") == {"user:alice", "user:alice:preferences"}
    assert await found("user:al") == {"user:al"}
    assert await found("user:a%") == {"user:a%"}
    assert await found("user:a_") == {"user:a_"}
    assert await found("user:a\\") == {"user:a\\"}
    assert await found("user:a") == {"user:a"}
    assert await found("user") == set(names)
    assert await found("session") == set()


async def test_search_returns_current_live_version_once_newest_first(
    db: Database, task_id: str
) -> None:
    await add(db, task_id, key="one")
    await add(db, task_id, key="two", memory_type="episodic")
    await add(db, task_id, key="gone")
    await db.memory.update_memory("user:alice", "one", {"v": 2}, "a", task_id)
    await db.memory.delete_memory("user:alice", "gone", "a", task_id)
    results = await db.memory.search_memories("user:alice")
    assert [(r["key"], r["version"]) for r in results] == [("one", 2), ("two", 1)]
    assert [r["key"] for r in await db.memory.search_memories("user", "episodic")] == ["two"]
    assert len(await db.memory.search_memories("user:alice", limit=1)) == 1


# ------------------------------------------------------------------ audit


async def test_every_write_has_one_audit_row_in_its_transaction(db: Database, task_id: str) -> None:
    created = await add(db, task_id)
    updated = await db.memory.update_memory("user:alice", "k", {"v": 2}, "bob", task_id)
    await db.memory.delete_memory("user:alice", "k", "carol", task_id)
    audit = await rows(db, AuditEntry)
    assert [(a.action_type, a.memory_operation_type) for a in audit] == [
        ("memory_create", "create"),
        ("memory_update", "update"),
        ("memory_delete", "delete"),
    ]
    assert [a.memory_entry_id for a in audit] == [created, updated, updated]
    assert all(a.task_id == task_id and a.memory_namespace == "user:alice" for a in audit)
    assert [a.action_data for a in audit] == [
        {"key": "k", "version": 1, "created_by": "alice", "memory_type": "semantic"},
        {"key": "k", "version": 2, "updated_by": "bob"},
        {"key": "k", "version": 2, "deleted_by": "carol"},
    ]


AUDIT_DOWN = """
CREATE FUNCTION audit_store_down() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit store down'; END $$;
CREATE TRIGGER audit_store_down BEFORE INSERT ON audit
FOR EACH ROW EXECUTE FUNCTION audit_store_down();
"""


async def break_audit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every audit row fails from now on: in Python (``AuditRepository.append``)
    and, on PostgreSQL, where a memory write writes its audit row inside the
    database (``abathur_write_memory``), by a trigger."""
    from abathur.repositories.audit import AuditRepository

    def broken(self: AuditRepository, entry: Any) -> None:
        raise RuntimeError("audit store down")

    monkeypatch.setattr(AuditRepository, "append", broken)
    if not db.is_sqlite:
        async with db.transaction() as session:
            for statement in AUDIT_DOWN.split(";\n"):
                if statement.strip():
                    await session.execute(text(statement))


async def mend_audit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    if not db.is_sqlite:
        async with db.transaction() as session:
            await session.execute(text("DROP TRIGGER audit_store_down ON audit"))


async def test_failed_audit_rolls_the_memory_change_back(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await break_audit(db, monkeypatch)
    with pytest.raises((RuntimeError, DatabaseError), match="audit store down"):
        await add(db, task_id)
    assert await count(db, MemoryEntry) == 0


async def _stored(db: Database) -> tuple[list[Any], int]:
    """Every memory row, every column, and the number of audit rows."""
    async with db.transaction(write=False) as session:
        entries = list(
            (await session.execute(text("SELECT * FROM memory_entries ORDER BY id"))).all()
        )
        return entries, await count(db, AuditEntry)


@pytest.mark.parametrize(
    "write", ["update", "delete", "restore", "publish", "consolidate", "expire"]
)
async def test_failed_audit_rolls_back_every_kind_of_write(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """Each write and its audit row are one transaction: when the audit row
    cannot be written, the memory tables are exactly as before."""
    m = db.memory
    await add(db, task_id)
    await m.update_memory("user:alice", "k", {"v": 2}, "alice", task_id)
    await add(db, task_id, ns="session:s1", key="draft")
    await add(db, task_id, key="old", memory_type="episodic")
    if write in ("restore", "consolidate"):
        await m.delete_memory("user:alice", "k", "alice", task_id)
        await m.restore_memory("user:alice", "k", 1, "alice", task_id)
    if write == "consolidate":  # a restore then an update: two live versions
        await m.update_memory("user:alice", "k", {"v": 4}, "alice", task_id)
    calls = {
        "update": lambda: m.update_memory("user:alice", "k", {"v": 9}, "bob", task_id),
        "delete": lambda: m.delete_memory("user:alice", "k", "bob", task_id),
        "restore": lambda: m.restore_memory("user:alice", "k", 2, "bob", task_id),
        "publish": lambda: m.publish_memory("session:s1", "user:alice", "draft", "bob", task_id),
        "consolidate": lambda: m.consolidate_memories("user:alice", "latest_wins", task_id=task_id),
        "expire": lambda: m.expire_episodic(timedelta(0), task_id=task_id),
    }
    before = await _stored(db)
    await break_audit(db, monkeypatch)
    with pytest.raises((RuntimeError, DatabaseError), match="audit store down"):
        await calls[write]()
    await mend_audit(db, monkeypatch)
    assert await _stored(db) == before
    await calls[write]()  # and with the audit store back, the write goes through
    assert (await _stored(db))[1] > before[1]


async def test_a_live_key_keeps_its_creator_through_every_kind_of_write(
    db: Database, task_id: str
) -> None:
    """created_by / created_at belong to the key's life: every new version of a
    live key keeps them; a new key, or one brought back after a delete, starts
    them afresh."""
    m = db.memory

    async def creator(ns: str = "user:alice", key: str = "k") -> tuple[str, datetime]:
        got = await m.get_memory(ns, key)
        assert got is not None
        return got["created_by"], got["created_at"]

    await m.add_memory("user:alice", "k", {"v": 1}, "semantic", "ann", task_id)
    born = await creator()
    assert born[0] == "ann"
    await m.update_memory("user:alice", "k", {"v": 2}, "bob", task_id)
    await m.add_memory("session:s", "k", {"v": 3}, "semantic", "cid", task_id)
    await m.publish_memory("session:s", "user:alice", "k", "dan", task_id)  # onto a live key
    assert await creator() == born
    await m.delete_memory("user:alice", "k", "eve", task_id)
    await m.restore_memory("user:alice", "k", 1, "fay", task_id)  # brought back: a new life
    reborn = await creator()
    assert reborn[0] == "fay" and reborn[1] > born[1]
    await m.update_memory("user:alice", "k", {"v": 4}, "gus", task_id)  # two live versions
    assert await m.consolidate_memories("user:alice", "latest_wins", task_id=task_id) == 1
    assert await creator() == reborn
    await m.publish_memory("session:s", "user:new", "k", "hal", task_id)  # onto no key
    assert (await creator("user:new"))[0] == "hal"


# ------------------------------------------------------------------ publish


async def test_publish_copies_a_session_draft(db: Database, task_id: str) -> None:
    await add(db, task_id, ns="session:s1", key="fact", value={"x": 1}, metadata={"m": 1})
    first = await db.memory.publish_memory("session:s1", "user:alice", "fact", "alice", task_id)
    published = await db.memory.get_memory("user:alice", "fact")
    assert published is not None and published["id"] == first and published["version"] == 1
    assert published["value"] == {"x": 1}
    assert published["metadata"]["published_from"]["namespace"] == "session:s1"
    assert await db.memory.get_memory("session:s1", "fact") is not None  # the draft stays
    await db.memory.update_memory("session:s1", "fact", {"x": 2}, "alice", task_id)
    await db.memory.publish_memory("session:s1", "user:alice", "fact", "alice", task_id)
    again = await db.memory.get_memory("user:alice", "fact")
    assert again is not None and again["version"] == 2 and again["value"] == {"x": 2}
    audit = [a for a in await rows(db, AuditEntry) if a.memory_operation_type == "publish"]
    assert [(a.action_type, a.memory_namespace) for a in audit] == [
        ("memory_publish", "user:alice")
    ] * 2
    with pytest.raises(ValidationError, match="session:"):
        await db.memory.publish_memory("user:alice", "user:bob", "fact", "a", task_id)
    with pytest.raises(ValidationError, match="user: or project:"):
        await db.memory.publish_memory("session:s1", "app:x", "fact", "a", task_id)
    with pytest.raises(NotFoundError):
        await db.memory.publish_memory("session:s1", "user:alice", "none", "a", task_id)


# ------------------------------------------------------------------ consolidation


async def _two_live_versions(db: Database, task_id: str, ns: str = "user:alice") -> None:
    await add(db, task_id, ns=ns, value={"a": {"x": 1, "y": 1}, "keep": True})
    await db.memory.update_memory(ns, "k", {"a": {"y": 2}, "new": 1}, "bob", task_id)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("latest_wins", {"a": {"y": 2}, "new": 1}),
        ("merge", {"a": {"x": 1, "y": 2}, "keep": True, "new": 1}),
    ],
)
async def test_consolidation_strategies(
    db: Database, task_id: str, strategy: str, expected: dict[str, Any]
) -> None:
    await _two_live_versions(db, task_id)
    await _two_live_versions(db, task_id, ns="user:alice2")  # outside the subtree
    assert await db.memory.consolidate_memories("user:alice", strategy, task_id=task_id) == 1
    current = await db.memory.get_memory("user:alice", "k")
    assert current is not None and current["version"] == 3 and current["value"] == expected
    assert current["metadata"]["consolidated_from"] == [
        h["id"] for h in (await db.memory.get_memory_history("user:alice", "k"))[:2]
    ]
    assert current["metadata"]["consolidation_strategy"] == strategy
    history = await db.memory.get_memory_history("user:alice", "k")
    assert [h["is_deleted"] for h in history] == [True, True, False]
    assert history[0]["value"] == {"a": {"x": 1, "y": 1}, "keep": True}  # nothing lost
    assert await db.memory.consolidate_memories("user:alice", strategy, task_id=task_id) == 0
    consolidations = [
        a for a in await rows(db, AuditEntry) if a.memory_operation_type == "consolidate"
    ]
    assert len(consolidations) == 1 and consolidations[0].action_type == "memory_consolidate"
    other = await db.memory.get_memory("user:alice2", "k")
    assert other is not None and other["version"] == 2


async def test_llm_based_uses_the_resolver(db: Database, task_id: str) -> None:
    seen: list[list[dict[str, Any]]] = []

    async def resolver(versions: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append(versions)
        return {"summary": [v["version"] for v in versions]}

    await _two_live_versions(db, task_id)
    memory = MemoryService(db, resolver=resolver)
    assert await memory.consolidate_memories("user:alice", "llm_based") == 1
    current = await memory.get_memory("user:alice", "k")
    assert current is not None and current["value"] == {"summary": [1, 2]}
    assert [[v["version"] for v in vs] for vs in seen] == [[1, 2]]
    # without a task the audit row names the system task
    audit = [a for a in await rows(db, AuditEntry) if a.memory_operation_type == "consolidate"]
    assert [a.task_id for a in audit] == [SYSTEM_TASK_ID]
    assert await memory.consolidate_memories("user:alice", "llm_based") == 0


@pytest.mark.parametrize("outcome", ["raise", "list", "nan"])
async def test_failing_resolver_leaves_data_unchanged(
    db: Database, task_id: str, outcome: str
) -> None:
    async def resolver(versions: list[dict[str, Any]]) -> Any:
        if outcome == "raise":
            raise RuntimeError("model unavailable")
        return ["not", "a", "dict"] if outcome == "list" else {"x": math.nan}

    await _two_live_versions(db, task_id)
    before = await db.memory.get_memory_history("user:alice", "k")
    audit_before = await count(db, AuditEntry)
    with pytest.raises((RuntimeError, ValidationError)):
        await MemoryService(db, resolver=resolver).consolidate_memories("user:alice", "llm_based")
    assert await db.memory.get_memory_history("user:alice", "k") == before
    assert await count(db, AuditEntry) == audit_before


async def test_consolidation_configuration_errors(db: Database, task_id: str) -> None:
    await _two_live_versions(db, task_id)
    with pytest.raises(ConfigurationError, match="resolver"):
        await db.memory.consolidate_memories("user:alice")
    with pytest.raises(ValueError, match="unknown consolidation strategy"):
        await db.memory.consolidate_memories("user:alice", "vote")
    assert len(await db.memory.get_memory_history("user:alice", "k")) == 2


def test_deep_merge() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "d": {"e": 1}}) == {
        "a": {"b": 1, "c": [2]},
        "d": {"e": 1},
    }


# ------------------------------------------------------------------ retention


async def _age(db: Database, ns: str, key: str, days: int) -> None:
    moment = datetime.now(UTC) - timedelta(days=days)
    async with db.transaction() as session:
        await session.execute(
            update(MemoryEntry)
            .where(MemoryEntry.namespace == ns, MemoryEntry.key == key)
            .values(updated_at=moment)
        )


async def test_expire_episodic(db: Database, task_id: str) -> None:
    await add(db, task_id, key="old", memory_type="episodic")
    await add(db, task_id, key="fresh", memory_type="episodic")
    await add(db, task_id, key="old_semantic", memory_type="semantic")
    await _age(db, "user:alice", "old", 100)
    await _age(db, "user:alice", "old_semantic", 100)
    assert await db.memory.expire_episodic() == 1
    assert await db.memory.get_memory("user:alice", "old") is None
    assert await db.memory.get_memory("user:alice", "fresh") is not None
    assert await db.memory.get_memory("user:alice", "old_semantic") is not None
    assert await db.memory.expire_episodic() == 0
    assert await db.memory.expire_episodic(timedelta(0), task_id=task_id) == 1
    expired = [a for a in await rows(db, AuditEntry) if a.action_type == "memory_expire"]
    assert [(a.memory_operation_type, a.task_id) for a in expired] == [
        ("delete", SYSTEM_TASK_ID),
        ("delete", task_id),
    ]
    assert await count(db, MemoryEntry) == 3
    with pytest.raises(ValidationError):
        await db.memory.expire_episodic(timedelta(days=-1))


async def test_seed_defaults(db: Database, task_id: str) -> None:
    assert await count(db, MemoryEntry) == 0  # initialize never seeds
    assert await db.memory.seed_defaults(task_id) == 3
    seeded = await db.memory.search_memories("app:abathur")
    assert len(seeded) == 3
    assert {r["memory_type"] for r in seeded} <= {"semantic", "procedural"}
    assert "procedural" in {r["memory_type"] for r in seeded}
    assert await db.memory.seed_defaults() == 0
    with pytest.raises(NotFoundError):
        await db.memory.seed_defaults("ghost")
