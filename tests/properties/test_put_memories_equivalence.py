"""``put_memories(items)`` leaves a database exactly as ``put_memory`` called
for each item in order leaves another: the same versions, expiries and audit
rows, and the same results returned, whatever the keys held before (live,
deleted, with a TTL, expired), on both backends."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from abathur.infrastructure import memory_service
from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry, MemoryEntry, MemoryExpiry
from tests.conftest import DbFactory
from tests.support.memory_model import controlled_clock

NAMES = [("a", "x"), ("a", "y"), ("b", "x")]  # (namespace segment, key)
TTLS = st.sampled_from([None, None, timedelta(seconds=5), timedelta(seconds=50)])
METADATA = st.none() | st.dictionaries(st.sampled_from("mn"), st.integers(0, 3), max_size=2)
TYPES = st.sampled_from(["semantic", "episodic", "procedural"])


@st.composite
def puts(draw: st.DrawFn) -> dict[str, Any]:
    segment, key = draw(st.sampled_from(NAMES))
    found: dict[str, Any] = {
        "segment": segment,
        "key": key,
        "value": {"v": draw(st.integers(0, 9))},
        "memory_type": draw(TYPES),
        "by": draw(st.sampled_from(["p", "q"])),
    }
    if (metadata := draw(METADATA)) is not None:
        found["metadata"] = metadata
    if (ttl := draw(TTLS)) is not None:
        found["ttl"] = ttl
    return found


DELETES = st.sampled_from(NAMES).map(lambda name: {"delete": name})
BEFORE = st.lists(st.one_of(puts(), DELETES), max_size=6)


def as_item(put: dict[str, Any], root: str, task_id: str) -> dict[str, Any]:
    item = {k: v for k, v in put.items() if k != "segment"}
    return {**item, "namespace": f"{root}:{put['segment']}", "task_id": task_id}


async def apply_before(db: Database, root: str, task_id: str, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        if "delete" in op:
            segment, key = op["delete"]
            await db.memory.delete_memory(f"{root}:{segment}", key, "d", task_id, missing_ok=True)
        else:
            await db.memory.put_memory(**as_item(op, root, task_id))


async def state(db: Database, root: str) -> tuple[Any, ...]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(MemoryEntry).where(MemoryEntry.namespace.startswith(root))
                .order_by(MemoryEntry.id)
            )
        ).scalars().all()  # fmt: skip
        ids = {row.id: (row.namespace, row.key, row.version) for row in rows}
        expiries = (
            await session.execute(
                select(MemoryExpiry.namespace, MemoryExpiry.key, MemoryExpiry.ttl_seconds)
                .where(MemoryExpiry.namespace.startswith(root))
                .order_by(MemoryExpiry.namespace, MemoryExpiry.key)
            )
        ).all()  # fmt: skip
        audits = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.memory_namespace.startswith(root))
                .order_by(AuditEntry.id)
            )
        ).scalars().all()  # fmt: skip
    versions = [
        (r.namespace, r.key, r.version, r.value, r.memory_type, r.is_deleted, r.metadata_,
         r.created_by, r.updated_by, r.created_at, r.updated_at, r.is_current)
        for r in rows
    ]  # fmt: skip
    trail = [
        (a.action_type, a.action_data, a.result, a.memory_operation_type, a.memory_namespace,
         ids.get(a.memory_entry_id))
        for a in audits
    ]  # fmt: skip
    return versions, [tuple(e) for e in expiries], trail


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=BEFORE,
    expire=st.booleans(),
    batch=st.lists(puts(), min_size=1, max_size=10),
    chunk=st.sampled_from([memory_service.WRITE_CHUNK, 1, 3]),
)
async def test_put_memories_equals_put_memory_in_order(
    db: Database,
    task_id: str,
    make_db: DbFactory,
    before: list[dict[str, Any]],
    expire: bool,
    batch: list[dict[str, Any]],
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Also when the batch is written in several chunks (``WRITE_CHUNK``):
    a key's versions and state carry from one chunk to the next."""
    monkeypatch.setattr(memory_service, "WRITE_CHUNK", chunk)  # each example sets its own
    root = f"user:{uuid.uuid4().hex}"  # the databases serve every example
    bulk = db
    single = await _twin(make_db, task_id)
    with controlled_clock() as clock:
        for handle in (bulk, single):
            await apply_before(handle, root, task_id, before)
        if expire:
            clock.advance(timedelta(seconds=10))  # 5-second TTLs have passed
        written = await bulk.memory.put_memories([as_item(p, root, task_id) for p in batch])
        expected = [await single.memory.put_memory(**as_item(p, root, task_id)) for p in batch]
        # Both databases saw the same writes, so even row ids agree; the
        # clock stands still, so the timestamps do too.
        assert written == expected
        assert await state(bulk, root) == await state(single, root)
        for segment, key in NAMES:
            namespace = f"{root}:{segment}"
            assert await bulk.memory.get_memory(namespace, key) == (
                await single.memory.get_memory(namespace, key)
            )


_TWINS: dict[int, Database] = {}


async def _twin(make_db: DbFactory, task_id: str) -> Database:
    """The second database, made once per test (hypothesis runs many examples)."""
    key = id(make_db)
    if key not in _TWINS:
        twin = await make_db("twin.db")
        await twin.initialize()
        await twin.tasks.create_task("twin", id=task_id)
        _TWINS.clear()
        _TWINS[key] = twin
    return _TWINS[key]
