"""AbathurStore beyond LangGraph's own suite (tests/conformance/langgraph): the
namespace mapping, what is stored (versions, audit rows, the store task),
timestamps, TTL and the sweeper, loops and threads, and index configs, on
both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, PutOp
from sqlalchemy import select

from abathur.embeddings.hashing import HashingEmbedder
from abathur.errors import ValidationError
from abathur.infrastructure.database import Database
from abathur.integrations.langgraph import (
    AbathurStore,
    abathur_namespace,
    decode_label,
    encode_label,
    index_fields,
    langgraph_namespace,
)
from abathur.schema.models import AuditEntry
from tests.support.memory_model import controlled_clock

AWKWARD = ["plain", "a:b", "100%", "%3A", "line\n", "tab\t", "é ✓", "*", "x%y:z", "\ud800"]


def test_namespace_mapping_round_trips_awkward_labels() -> None:
    seen = set()
    for first in AWKWARD:
        for second in AWKWARD:
            ns = abathur_namespace((first, second))
            assert ns.startswith("app:langgraph:")
            assert langgraph_namespace(ns) == (first, second)
            assert len(ns.split(":")) == 4  # one segment per label
            seen.add(ns)
    assert len(seen) == len(AWKWARD) ** 2
    assert encode_label("a:b%c\n") == "a%3Ab%25c%0A"
    assert decode_label("a%3Ab%25c%0A") == "a:b%c\n"
    assert abathur_namespace(("x",), "user:alice") == "user:alice:x"
    assert langgraph_namespace("app:langgraph") == ()
    with pytest.raises(ValidationError, match="root"):
        langgraph_namespace("app:other:x")
    assert index_fields(["$", "a.b"]) == ["$", "a.b"]
    with pytest.raises(ValidationError, match="array paths"):
        index_fields(["a[*].b"])


async def audit_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(AuditEntry.action_type, AuditEntry.task_id, AuditEntry.memory_namespace)
            .where(AuditEntry.memory_namespace.is_not(None))
            .order_by(AuditEntry.id)
        )
        return [tuple(r) for r in rows]


async def test_writes_keep_every_version_and_audit_row(db: Database) -> None:
    store = AbathurStore(db)
    await store.asetup()
    task = await db.tasks.get_task("langgraph-store")
    assert task is not None and task.status == "completed"
    ns = ("users", "a:b")
    await store.aput(ns, "k", {"v": 1})
    first = await store.aget(ns, "k")
    await store.aput(ns, "k", {"v": 2})
    second = await store.aget(ns, "k")
    assert first is not None and second is not None
    assert second.value == {"v": 2} and second.namespace == ns
    assert second.created_at == first.created_at  # the key's first version
    assert second.updated_at >= first.updated_at
    await store.adelete(ns, "k")
    await store.adelete(ns, "k")  # missing: a no-op, nothing written
    await store.adelete(("users", "never"), "k")
    assert await store.aget(ns, "k") is None
    history = await db.memory.get_memory_history("app:langgraph:users:a%3Ab", "k")
    assert [(h["version"], h["value"], h["is_deleted"]) for h in history] == [
        (1, {"v": 1}, True),
        (2, {"v": 2}, True),
    ]
    assert {h["memory_type"] for h in history} == {"semantic"}
    assert await audit_rows(db) == [
        ("memory_create", "langgraph-store", "app:langgraph:users:a%3Ab"),
        ("memory_update", "langgraph-store", "app:langgraph:users:a%3Ab"),
        ("memory_delete", "langgraph-store", "app:langgraph:users:a%3Ab"),
    ]
    # Deleting revives as a new life: created_at starts afresh.
    await store.aput(ns, "k", {"v": 3})
    revived = await store.aget(ns, "k")
    assert revived is not None and revived.created_at > first.created_at


async def test_options_root_type_task_and_actor(db: Database) -> None:
    await db.tasks.create_task("mine", id="t-own")
    store = AbathurStore(
        db, root="user:alice", memory_type="episodic", task_id="t-own", actor="bot"
    )
    await store.aput(("notes",), "k", {"v": 1})
    row = await db.memory.get_memory("user:alice:notes", "k")
    assert row is not None
    assert (row["memory_type"], row["created_by"]) == ("episodic", "bot")
    assert (await audit_rows(db))[-1] == ("memory_create", "t-own", "user:alice:notes")
    assert await store.alist_namespaces() == [("notes",)]
    with pytest.raises(ValidationError, match="root"):
        AbathurStore(db, root="app:*")


async def test_each_store_writes_under_its_own_root(db: Database) -> None:
    """Two stores on one database keep their tuples under their own roots,
    and a namespace given as a list (an op built by hand) lands where the
    tuple does."""
    first, second = AbathurStore(db), AbathurStore(db, root="user:bob")
    labels = [("a:b",), ("c",), ("d", "e%"), ("a:b",)]
    for n, namespace in enumerate(labels):
        await first.aput(namespace, "k", {"n": n})
        await second.aput(namespace, "k", {"n": n})
    await first.abatch([PutOp(["c"], "list", {"n": 9})])  # type: ignore[arg-type]
    for root in ("app:langgraph", "user:bob"):
        for namespace in labels:
            assert await db.memory.get_memory(abathur_namespace(namespace, root), "k")
    assert (await first.aget(("c",), "list")) is not None
    assert (await first.aget(("a:b",), "k")).value == {"n": 3}  # type: ignore[union-attr]
    assert (await second.aget(("d", "e%"), "k")).value == {"n": 2}  # type: ignore[union-attr]


async def test_root_is_fixed_when_the_store_is_made(db: Database) -> None:
    """``list_namespaces`` counts depths from the root the store was made
    with, so a root set later would answer with the wrong depths: it is
    read-only."""
    store = AbathurStore(db)
    await store.aput(("a",), "k", {"n": 1})
    with pytest.raises(AttributeError):
        store.root = "user:bob"  # type: ignore[misc]
    await store.aput(("a",), "k", {"n": 2})
    assert store.root == "app:langgraph"
    assert (await store.aget(("a",), "k")).value == {"n": 2}  # type: ignore[union-attr]
    assert await db.memory.search_memories("user:bob") == []


async def test_list_namespaces_never_matches_into_the_root(db: Database) -> None:
    store = AbathurStore(db)
    for ns in [("public",), ("x", "public"), ("langgraph2", "public")]:
        await store.aput(ns, "k", {})
    # "*" must match a label, never the root's own segments.
    assert await store.alist_namespaces(suffix=("*", "public")) == [
        ("langgraph2", "public"),
        ("x", "public"),
    ]
    assert await store.alist_namespaces(suffix=("langgraph", "public")) == []
    assert await store.alist_namespaces(max_depth=1) == [("langgraph2",), ("public",), ("x",)]


async def test_invalid_batches_change_nothing(db: Database) -> None:
    store = AbathurStore(db)
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp(("ok",), "k", {"v": 1}), PutOp((), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp(("ok",), "k", {"v": 1}), GetOp(("a.b",), "k")])
    assert await store.aget(("ok",), "k") is None


async def test_ttl_refresh_and_sweep_on_a_controlled_clock(db: Database) -> None:
    with controlled_clock() as clock:
        store = AbathurStore(db, ttl={"default_ttl": 10, "refresh_on_read": True})
        await store.aput(("t",), "a", {"v": 1})
        await store.aput(("t",), "b", {"v": 1}, ttl=None)
        clock.advance(timedelta(minutes=8))
        assert await store.aget(("t",), "a") is not None  # refreshed: now + 10 min
        clock.advance(timedelta(minutes=8))
        assert await store.aget(("t",), "a", refresh_ttl=False) is not None
        clock.advance(timedelta(minutes=3))
        assert await store.aget(("t",), "a") is None  # invisible at once
        assert await store.asweep_ttl() == 1
        assert await store.aget(("t",), "b") is not None
        actions = [a for a, _, _ in await audit_rows(db)]
        assert actions[-1] == "memory_expire"

    plain = AbathurStore(db)  # no TTL config: reads never refresh
    with controlled_clock() as clock:
        await plain.aput(("p",), "k", {"v": 1}, ttl=1)
        clock.advance(timedelta(seconds=50))
        assert await plain.aget(("p",), "k") is not None
        clock.advance(timedelta(seconds=20))
        assert await plain.aget(("p",), "k") is None


async def test_sweeper_task_starts_and_stops(db: Database) -> None:
    store = AbathurStore(db, ttl={"default_ttl": 1 / 600, "sweep_interval_minutes": 1 / 600})
    await store.aput(("s",), "k", {"v": 1})
    task = await store.astart_ttl_sweeper()
    assert await store.astart_ttl_sweeper() is task  # one sweeper per store
    for _ in range(200):
        if (
            await db.memory.get_memory_history("app:langgraph:s", "k")
            and ((await db.memory.get_memory_history("app:langgraph:s", "k"))[0]["is_deleted"])
        ):
            break
        await asyncio.sleep(0.05)
    assert (await db.memory.get_memory_history("app:langgraph:s", "k"))[0]["is_deleted"]
    assert await store.astop_ttl_sweeper() is True
    assert task.done()
    assert await store.astop_ttl_sweeper() is True  # stopping twice is fine
    with pytest.raises(ValidationError, match="positive"):
        await store.astart_ttl_sweeper(0)


async def test_sync_methods_from_threads_and_async_methods_from_other_loops(
    db: Database,
) -> None:
    store = AbathurStore(db)
    await asyncio.to_thread(store.put, ("th",), "k", {"v": 1})
    assert (await asyncio.to_thread(store.get, ("th",), "k")).value == {"v": 1}  # type: ignore[union-attr]
    with pytest.raises(asyncio.InvalidStateError):
        store.get(("th",), "k")

    def other_loop() -> Any:
        return asyncio.run(store.aget(("th",), "k"))

    item = await asyncio.to_thread(other_loop)
    assert item is not None and item.value == {"v": 1}
    many = await asyncio.gather(*(store.aput(("th",), f"k{i}", {"i": i}) for i in range(40)))
    assert len(many) == 40
    assert len(await store.asearch(("th",), limit=100)) == 41


def test_plain_sync_use_owns_its_database(tmp_path: Path) -> None:
    path = tmp_path / "lg.db"
    with AbathurStore(path) as store:
        store.setup()
        store.put(("a",), "k", {"v": 1})
        assert store.get(("a",), "k") is not None
        assert store.sweep_ttl() == 0
        sweeper = store.start_ttl_sweeper(60)
        assert store.stop_ttl_sweeper(timeout=5) is True
        assert sweeper.result(timeout=5) is None
    with AbathurStore(str(path)) as again:
        item = again.get(("a",), "k")
        assert item is not None and item.value == {"v": 1}


async def test_index_config_ranks_by_meaning(db: Database) -> None:
    hashing = HashingEmbedder(dims=64)

    def embed(texts: list[str]) -> list[list[float]]:
        return [hashing.vector(t) for t in texts]

    store = AbathurStore(db, index={"dims": 64, "embed": embed, "fields": ["text"]})
    assert db.embedder is not None and db.embedder.fields == ("text",)
    await store.aput(("d",), "cats", {"text": "cats purr and sleep"})
    await store.aput(("d",), "cars", {"text": "cars need fuel and tyres"})
    await store.aput(("d",), "skip", {"text": "cats purr and sleep"}, index=False)
    await store.aput(("d",), "other", {"note": "cats purr"}, index=["note"])
    found = await store.asearch(("d",), query="cats purr and sleep", limit=10)
    assert found[0].key == "cats" and found[0].score is not None
    assert "skip" not in [f.key for f in found]
    assert "other" in [f.key for f in found]
    plain = await store.asearch(("d",), query="", limit=10)
    assert {f.key for f in plain} == {"cats", "cars", "skip", "other"}
    assert all(f.score is None for f in plain)
    with pytest.raises(ValidationError, match="already has an embedder"):
        AbathurStore(db, index={"dims": 64, "embed": embed})
    with pytest.raises(ValidationError, match="array paths"):
        AbathurStore(db, index={"dims": 64, "embed": embed, "fields": ["a[*]"]})
    with pytest.raises(ValidationError, match="IndexConfig"):
        AbathurStore(db, index={"dims": 64})  # type: ignore[typeddict-item]


async def test_a_given_database_stays_open_unless_asked(make_db: Any) -> None:
    db = await make_db("kept.db")
    await db.initialize()
    async with AbathurStore(db) as store:
        await store.aput(("a",), "k", {"v": 1})
    assert await db.memory.get_memory("app:langgraph:a", "k") is not None  # still open
    assert not db.closed
    closing = await make_db("closed.db")
    await closing.initialize()
    async with AbathurStore(closing, close_database=True) as store:
        await store.aput(("a",), "k", {"v": 1})
    assert closing.closed
    with pytest.raises(ValidationError, match="close_database"):
        AbathurStore(db, close_database=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="engine options"):
        AbathurStore(db, echo=True)
