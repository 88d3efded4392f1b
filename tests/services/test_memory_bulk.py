"""Issue 16: ``put_memories`` writes many memories in one transaction by
``put_memory``'s rules: versions in order, one audit row each, all or nothing,
TTL, embeddings and the scoped view's permission rule. The equivalence with a
sequence of ``put_memory`` calls is a property test
(``tests/properties/test_put_memories_equivalence.py``)."""

from __future__ import annotations

import gc
import sys
import uuid
from datetime import timedelta
from types import FrameType
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from abathur.db.sqlite.worker import worker_connection
from abathur.domain.memory import AccessContext, bulk_puts
from abathur.embeddings import Embedder
from abathur.errors import AccessDeniedError, NotFoundError, ValidationError
from abathur.infrastructure import memory_service
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.repositories import memory as memory_repository
from abathur.repositories.embeddings import from_blob
from abathur.schema.models import AuditEntry, MemoryEmbedding, MemoryEntry, MemoryExpiry
from tests.support.memory_model import controlled_clock


async def count(db: Database, model: type[Any]) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def item(key: str, value: dict[str, Any], task_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "namespace": extra.pop("namespace", "user:bulk"),
        "key": key,
        "value": value,
        "memory_type": extra.pop("memory_type", "semantic"),
        "by": extra.pop("by", "loader"),
        "task_id": task_id,
        **extra,
    }


async def test_versions_in_order_with_one_audit_row_each(db: Database, task_id: str) -> None:
    memory = db.memory
    await memory.put_memory("user:bulk", "old", {"v": 0}, "episodic", by="first",
                            task_id=task_id, metadata={"m": 1})  # fmt: skip
    written = await memory.put_memories(
        [
            item("a", {"v": 1}, task_id),
            item("old", {"v": 2}, task_id, memory_type="procedural"),  # type carries forward
            item("a", {"v": 3}, task_id, by="second", metadata={"m": 2}),
            item("b", {"v": 4}, task_id, namespace="user:other", metadata={"x": [1]}),
            item("a", {"v": 5}, task_id),
        ]
    )
    assert [(w["namespace"], w["key"], w["version"]) for w in written] == [
        ("user:bulk", "a", 1),
        ("user:bulk", "old", 2),
        ("user:bulk", "a", 2),
        ("user:other", "b", 1),
        ("user:bulk", "a", 3),
    ]
    assert [w["value"]["v"] for w in written] == [1, 2, 3, 4, 5]
    assert written[1]["memory_type"] == "episodic"
    assert written[1]["metadata"] == {"m": 1}  # kept when not given
    assert written[1]["created_by"] == "first"
    assert written[2]["metadata"] == {"m": 2}
    assert written[4]["metadata"] == {"m": 2}  # carried from the batch's own write
    assert written[4]["created_by"] == "loader" and written[4]["updated_by"] == "loader"
    assert written[2]["updated_by"] == "second"
    # What is returned is what get_memory reads back.
    for w in written:
        assert await memory.get_memory(w["namespace"], w["key"], w["version"]) == w
    assert len({w["id"] for w in written}) == 5
    async with db.transaction(write=False) as session:
        audits = (
            await session.execute(
                select(
                    AuditEntry.memory_operation_type,
                    AuditEntry.action_type,
                    AuditEntry.action_data,
                    AuditEntry.memory_entry_id,
                    AuditEntry.memory_namespace,
                    AuditEntry.task_id,
                ).order_by(AuditEntry.id)
            )
        ).all()
    assert [tuple(a) for a in audits[1:]] == [
        ("create", "memory_create",
         {"key": "a", "version": 1, "created_by": "loader", "memory_type": "semantic"},
         written[0]["id"], "user:bulk", task_id),
        ("update", "memory_update", {"key": "old", "version": 2, "updated_by": "loader"},
         written[1]["id"], "user:bulk", task_id),
        ("update", "memory_update", {"key": "a", "version": 2, "updated_by": "second"},
         written[2]["id"], "user:bulk", task_id),
        ("create", "memory_create",
         {"key": "b", "version": 1, "created_by": "loader", "memory_type": "semantic"},
         written[3]["id"], "user:other", task_id),
        ("update", "memory_update", {"key": "a", "version": 3, "updated_by": "loader"},
         written[4]["id"], "user:bulk", task_id),
    ]  # fmt: skip


async def test_empty_batch_writes_nothing(db: Database, task_id: str) -> None:
    assert await db.memory.put_memories([]) == []
    assert await count(db, AuditEntry) == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"namespace": "temp:x"}, "item 2: .*temp"),
        ({"namespace": "nowhere:x"}, "item 2: .*namespace"),
        ({"key": ""}, "item 2: .*key"),
        ({"value": [1]}, "item 2: .*value"),
        ({"value": {"x": float("nan")}}, "item 2: .*value"),
        ({"memory_type": "other"}, "item 2: .*memory_type"),
        ({"by": ""}, "item 2: .*by"),
        ({"by": "x" * 300}, "item 2: .*by"),
        ({"metadata": "m"}, "item 2: .*metadata"),
        ({"ttl": 5}, "item 2: .*ttl"),
        ({"ttl": timedelta(0)}, "item 2: .*ttl"),
        ({"index": "title"}, "item 2: .*index"),
        ({"extra": 1}, "item 2: unknown field.*'extra'"),
        ({"task_id": None}, "item 2: .*task_id"),
    ],
)
async def test_any_bad_item_writes_nothing(
    db: Database, task_id: str, bad: dict[str, Any], message: str
) -> None:
    items = [item(f"k{i}", {"i": i}, task_id) for i in range(4)]
    items[2] = {**items[2], **bad}
    with pytest.raises(ValidationError, match=message):
        await db.memory.put_memories(items)
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"namespace": "user:a\x00b"},
        {"key": "a\x00b"},
        {"value": {"text": "a\x00b"}},
        {"value": {"a\x00b": 1}},
        {"value": {"nested": ["a\x00b"]}},
        {"by": "me\x00"},
        {"task_id": "t\x00"},
        {"metadata": {"m": "a\x00b"}},
    ],
)
async def test_a_nul_in_any_text_of_an_item_is_refused_naming_it(
    db: Database, task_id: str, bad: dict[str, Any]
) -> None:
    """put_memories' versions and audit rows skip the engine's NUL scan
    (``NulChecked``): every text in them was validated, and the validation
    refuses NUL, naming the item."""
    items = [item(f"k{i}", {"i": i}, task_id) for i in range(3)]
    items[1] = {**items[1], **bad}
    with pytest.raises(ValidationError, match=r"^item 1: .*(NUL|control character)"):
        await db.memory.put_memories(items)
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0


async def test_a_nul_in_a_stored_text_the_new_version_keeps_is_refused(
    db: Database, task_id: str
) -> None:
    """A new version of a live key keeps its creator and type: texts read
    from the store, not validated by the load, checked for NUL as the
    engine's guard would (SQLite can hold one written past abathur)."""
    if not db.is_sqlite:
        pytest.skip("PostgreSQL cannot hold a NUL in text at all")
    await db.memory.put_memories([item("k", {"v": 1}, task_id)])

    def corrupt(conn: Connection) -> None:
        # On the driver's connection: past the engine's listeners.
        raw = worker_connection() or conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        cursor.execute("UPDATE memory_entries SET created_by = 'a' || char(0) || 'b'")
        cursor.close()

    await db.write(corrupt)
    with pytest.raises(ValidationError, match="NUL character"):
        await db.memory.put_memories([item("other", {}, task_id), item("k", {"v": 2}, task_id)])
    assert await count(db, MemoryEntry) == 1
    assert await count(db, AuditEntry) == 1


async def test_malformed_batches_are_refused(db: Database, task_id: str) -> None:
    missing = item("k", {}, task_id)
    del missing["by"]
    for items, message in (
        ([missing], "item 0: missing by"),
        (["not a dict"], "item 0: must be a dict"),
        (item("k", {}, task_id), "items must be a list"),
        ("abc", "items must be a list"),
        (None, "items must be a list"),
    ):
        with pytest.raises(ValidationError, match=message):
            await db.memory.put_memories(items)  # type: ignore[arg-type]
    assert await count(db, MemoryEntry) == 0


async def test_the_errors_are_put_memorys_own(db: Database, task_id: str) -> None:
    """An item's message is the one put_memory gives for the same arguments."""
    bad = item("k", {"a": (1, 2)}, task_id, namespace="user:x")
    with pytest.raises(ValidationError) as single:
        await db.memory.put_memory(**bad)
    with pytest.raises(ValidationError) as bulk:
        await db.memory.put_memories([bad])
    assert str(bulk.value) == f"item 0: {single.value}"


async def test_a_missing_task_is_put_memorys_error(db: Database, task_id: str) -> None:
    items = [item("a", {}, task_id), item("b", {}, "no-such-task")]
    with pytest.raises(NotFoundError) as bulk:
        await db.memory.put_memories(items)
    with pytest.raises(NotFoundError) as single:
        await db.memory.put_memory(**items[1])
    assert str(bulk.value) == str(single.value)
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0


async def test_uuid_task_ids_and_str_subclasses_are_accepted(db: Database) -> None:
    task = await db.tasks.create_task("uuid", id=str(uuid.uuid4()))

    class Name(str):
        pass

    written = await db.memory.put_memories(
        [item("k", {"v": 1}, uuid.UUID(task.id)), item(Name("n"), {}, task.id)]  # type: ignore[arg-type]
    )
    assert [w["version"] for w in written] == [1, 1]
    assert await db.memory.get_memory("user:bulk", "n") is not None


async def test_ttl_as_put_memory(db: Database, task_id: str) -> None:
    memory = db.memory
    ttl, long = timedelta(seconds=10), timedelta(seconds=100)
    with controlled_clock() as clock:
        await memory.put_memory("user:t", "expired", {"v": 0}, "semantic", by="a",
                                task_id=task_id, ttl=ttl)  # fmt: skip
        await memory.put_memory("user:t", "kept", {"v": 0}, "semantic", by="a",
                                task_id=task_id, ttl=long)  # fmt: skip
        clock.advance(timedelta(seconds=11))
        written = await memory.put_memories(
            [
                item("expired", {"v": 1}, task_id, namespace="user:t", ttl=ttl),  # revived
                item("kept", {"v": 1}, task_id, namespace="user:t"),  # clears the expiry
                item("new", {"v": 1}, task_id, namespace="user:t"),
                item("new", {"v": 2}, task_id, namespace="user:t", ttl=ttl),  # the last decides
                item("set", {"v": 1}, task_id, namespace="user:t", ttl=long),
                item("set", {"v": 2}, task_id, namespace="user:t"),
            ]
        )
        assert [w["version"] for w in written] == [2, 2, 1, 2, 1, 2]
        history = await memory.get_memory_history("user:t", "expired")
        assert [h["is_deleted"] for h in history] == [True, False]
        assert written[0]["created_at"] == written[0]["updated_at"]  # a revived key starts afresh
        async with db.transaction(write=False) as session:
            expiries = (
                await session.execute(
                    select(MemoryExpiry.key, MemoryExpiry.ttl_seconds).order_by(MemoryExpiry.key)
                )
            ).all()
        assert [tuple(e) for e in expiries] == [("expired", 10.0), ("new", 10.0)]
        clock.advance(timedelta(seconds=11))
        assert await memory.get_memory("user:t", "expired") is None
        assert await memory.get_memory("user:t", "new") is None
        assert (await memory.get_memory("user:t", "kept"))["value"] == {"v": 1}  # type: ignore[index]
        assert (await memory.get_memory("user:t", "set"))["value"] == {"v": 2}  # type: ignore[index]


async def test_an_expiry_past_the_year_9999_names_the_item(db: Database, task_id: str) -> None:
    items = [item("a", {}, task_id), item("b", {}, task_id, ttl=timedelta(days=3_000_000))]
    with pytest.raises(ValidationError, match=r"item 1: .*9999"):
        await db.memory.put_memories(items)
    assert await count(db, MemoryEntry) == 0


def letter_counts(texts: list[str]) -> list[list[float]]:
    """How often each of seven letters occurs, plus one (never all zeros)."""
    return [[float(t.count(c)) for c in "abcdefg"] + [1.0] for t in texts]


async def test_embeddings_in_one_call_before_the_transaction(db: Database, task_id: str) -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return letter_counts(texts)

    memory = MemoryService(db, embedder=Embedder(embed, 8, fields=("title",)))
    written = await memory.put_memories(
        [
            item("own", {"title": "aaa", "body": "ggg"}, task_id),
            item("body", {"title": "aaa", "body": "ggg"}, task_id, index=["body"]),
            item("off", {"title": "ggg"}, task_id, index=False),
            item("none", {"body": "ggg"}, task_id),  # no title: no embedding
            item("own", {"title": "ggg"}, task_id),  # a second version of the same key
        ]
    )
    assert calls == [3]
    assert await count(db, MemoryEmbedding) == 3
    found = await memory.search_memories("user:bulk", query="ggg")
    # Both match exactly; equal scores rank the newer row first.
    assert [(r["key"], r["version"]) for r in found] == [("own", 2), ("body", 1)]
    assert [r["score"] for r in found] == [pytest.approx(1.0)] * 2
    async with db.transaction(write=False) as session:
        embedded = set(await session.scalars(select(MemoryEmbedding.memory_entry_id)))
    assert embedded == {written[0]["id"], written[1]["id"], written[4]["id"]}
    assert calls == [3, 1]  # the query's
    with pytest.raises(ValidationError, match=r"item 1: .*index"):
        await memory.put_memories(
            [item("x", {"title": "a"}, task_id), item("y", {}, task_id, index=[])]
        )
    assert calls == [3, 1]


async def test_the_scoped_view_needs_every_namespace_writable(db: Database, task_id: str) -> None:
    scope = db.memory.scoped(AccessContext(session_id="s1", user_id="alice", app_name="app"))
    items = [
        item("a", {}, task_id, namespace="user:alice"),
        item("b", {}, task_id, namespace="session:s1:notes"),
        item("c", {}, task_id, namespace="app:app"),  # readable, not writable
    ]
    with pytest.raises(AccessDeniedError, match=r"item 2: .*cannot write 'app:app'"):
        await scope.put_memories(items)
    with pytest.raises(AccessDeniedError, match=r"item 0: .*user:bob"):
        await scope.put_memories([item("a", {}, task_id, namespace="user:bob")])
    assert await count(db, MemoryEntry) == 0
    written = await scope.put_memories(items[:2])
    assert [w["key"] for w in written] == ["a", "b"]
    with pytest.raises(ValidationError, match="items must be a list"):
        await scope.put_memories("x")  # type: ignore[arg-type]


async def test_chunks_stay_in_one_transaction(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_repository, "BULK_CHUNK", 3)
    await db.memory.put_memories([item(f"k{i}", {"i": 0}, task_id) for i in range(0, 10, 2)])
    items = [item(f"k{i}", {"i": 1}, task_id) for i in range(10)]
    written = await db.memory.put_memories(items)
    assert [w["version"] for w in written] == [2 if i % 2 == 0 else 1 for i in range(10)]
    items[9]["task_id"] = "missing"
    with pytest.raises(NotFoundError):
        await db.memory.put_memories(items)
    assert await count(db, MemoryEntry) == 15


async def test_written_in_chunks_in_one_transaction(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WRITE_CHUNK`` items at a time: ids, versions, audit rows and
    embeddings in item order across chunks (each vector its own item's, a
    chunk without any between), and an item refused in a later chunk (an
    expiry past 9999, known only when its row is built) leaves nothing of
    the earlier chunks."""
    monkeypatch.setattr(memory_service, "WRITE_CHUNK", 2)
    memory = MemoryService(db, embedder=Embedder(letter_counts, 8, fields=("title",)))
    items = [item(f"k{i % 3}", {"title": "ab"[i % 2] * (i + 1)}, task_id) for i in range(7)]
    for i in (2, 3):  # the second chunk: no embedding
        items[i]["index"] = False
    written = await memory.put_memories(items)
    assert [(w["key"], w["version"]) for w in written] == [
        ("k0", 1), ("k1", 1), ("k2", 1), ("k0", 2), ("k1", 2), ("k2", 2), ("k0", 3)
    ]  # fmt: skip
    ids = [w["id"] for w in written]
    assert ids == sorted(ids)
    for w in written:
        assert await memory.get_memory(w["namespace"], w["key"], w["version"]) == w
    async with db.transaction(write=False) as session:
        audited = list(await session.scalars(select(AuditEntry.memory_entry_id)
                                             .where(AuditEntry.memory_entry_id.is_not(None))
                                             .order_by(AuditEntry.id)))  # fmt: skip
        vectors = select(MemoryEmbedding.memory_entry_id, MemoryEmbedding.vector)
        embedded = {row_id: blob for row_id, blob in await session.execute(vectors)}
        current = set(await session.scalars(select(MemoryEntry.id)
                                             .where(MemoryEntry.is_current)))  # fmt: skip
    assert audited == ids
    wanted = {row_id: letter_counts([items[i]["value"]["title"]])[0]
              for i, row_id in enumerate(ids) if i not in (2, 3)}  # fmt: skip
    assert embedded.keys() == wanted.keys()
    for row_id, vector in wanted.items():
        assert from_blob(embedded[row_id]).tolist() == vector, row_id
    assert current == set(ids[-3:])
    late = [item(f"n{i}", {}, task_id) for i in range(5)]
    late[4]["ttl"] = timedelta(days=3_000_000)
    with pytest.raises(ValidationError, match=r"item 4: .*9999"):
        await memory.put_memories(late)
    assert await count(db, MemoryEntry) == 7 and await count(db, AuditEntry) == 7


async def test_more_keys_than_the_lock_table_holds(db: Database, task_id: str) -> None:
    """PostgreSQL's lock table holds max_locks_per_transaction (64) times
    max_connections (100) locks by default: a batch of more keys than that
    takes one exclusive lock instead of one per key."""
    count = 7_000
    written = await db.memory.put_memories(
        [item(f"k{i}", {"i": i}, task_id, namespace=f"user:many:{i % 7}") for i in range(count)]
    )
    assert len(written) == count and {w["version"] for w in written} == {1}
    assert await count_rows(db) == count


async def count_rows(db: Database) -> int:
    return await count(db, MemoryEntry)


async def test_no_collection_starts_while_the_rows_are_built(db: Database, task_id: str) -> None:
    """The collector stays paused through the validation (``bulk_puts``) and
    the unit of work (``_write_many``): a load that allocates many times the
    first generation's threshold of containers starts no collection inside
    either (each would otherwise run dozens, and walk the batch's survivors).
    Which function a collection interrupted is read from its thread's stack."""
    paused = {bulk_puts.__code__, memory_service._write_many.__code__}
    started_inside: list[bool] = []

    def started(phase: str, _info: dict[str, Any]) -> None:
        if phase != "start":
            return
        frame: FrameType | None = sys._getframe(1)
        codes = set()
        while frame is not None:
            codes.add(frame.f_code)
            frame = frame.f_back
        started_inside.append(bool(codes & paused))

    items = [item(f"k{i}", {"i": i}, task_id) for i in range(3_000)]
    assert gc.isenabled()
    threshold = gc.get_threshold()
    gc.set_threshold(700, *threshold[1:])
    gc.callbacks.append(started)
    try:
        await db.memory.put_memories(items)
    finally:
        gc.callbacks.remove(started)
        gc.set_threshold(*threshold)
    assert started_inside.count(True) == 0


async def test_the_collector_and_page_cache_are_restored(db: Database, task_id: str) -> None:
    """``put_memories`` pauses Python's cyclic collector and (SQLite) enlarges
    the page cache for its own unit only: both are back as they were after a
    write, and after a write that failed inside the unit."""

    def cache_size(conn: Connection) -> Any:
        return conn.exec_driver_sql("PRAGMA cache_size").scalar() if db.is_sqlite else None

    before = await db.write(cache_size)
    assert gc.isenabled()
    await db.memory.put_memories([item("a", {"n": 1}, task_id)])
    assert gc.isenabled()
    assert await db.write(cache_size) == before
    with pytest.raises(NotFoundError):
        await db.memory.put_memories([item("b", {"n": 2}, "no-such-task")])
    assert gc.isenabled()
    assert await db.write(cache_size) == before
