"""Semantic recall (issue 12): embeddings stored with every memory write, query
searches over the current live versions of a subtree, reindex; on both backends."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select

from abathur.embeddings import Embedder, HashingEmbedder
from abathur.errors import (
    AlreadyExistsError,
    ConfigurationError,
    EmbeddingError,
    NotFoundError,
    ValidationError,
)
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.schema.models import AuditEntry, MemoryEmbedding, MemoryEntry
from tests.conftest import DbFactory

ALPHABET = "abcdefgh"


def letter_counts(texts: list[str]) -> list[list[float]]:
    """A tiny exact embedder: how often each of eight letters occurs (plus one,
    so that no vector is all zeros)."""
    return [[float(t.count(c)) for c in ALPHABET[:-1]] + [1.0] for t in texts]


def counts_embedder(model: str = "counts") -> Embedder:
    return Embedder(letter_counts, 8, model=model)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.transaction(write=False) as session:
        versions = await session.scalar(select(func.count()).select_from(MemoryEntry))
        audit = await session.scalar(select(func.count()).select_from(AuditEntry))
        vectors = await session.scalar(select(func.count()).select_from(MemoryEmbedding))
    return int(versions or 0), int(audit or 0), int(vectors or 0)


# ------------------------------------------------------------------ configuration


async def test_query_without_an_embedder_is_a_configuration_error(db: Database) -> None:
    with pytest.raises(ConfigurationError, match="embedder"):
        await db.memory.search_memories("user:alice", query="review")
    with pytest.raises(ConfigurationError, match="embedder"):
        await db.memory.reindex()


async def test_bad_query_arguments_are_validation_errors(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=HashingEmbedder())
    for query in ("", "   "):
        with pytest.raises(ValidationError, match="query"):
            await memory.search_memories("user:alice", query=query)
    with pytest.raises(ValidationError, match="query"):
        await memory.search_memories("user:alice", query=3)  # type: ignore[arg-type]
    # Text no embedder can be sent: named, not an EmbeddingError ("all zeros")
    # from the hashing embedder or a failed request from a model server.
    for query, problem in (("review \ud800", "not valid text"), ("a\x00b", "NUL")):
        with pytest.raises(ValidationError, match=f"query.*{problem}"):
            await memory.search_memories("user:alice", query=query)
    with pytest.raises(ValidationError):
        await memory.search_memories("temp:x", query="x")
    with pytest.raises(ValidationError, match="index"):
        await memory.add_memory("user:a", "k", {}, "semantic", "me", task_id, index=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="batch_size"):
        await memory.reindex(batch_size=0)
    with pytest.raises(ValidationError):
        MemoryService(db, embedder=letter_counts)  # type: ignore[arg-type]


async def test_database_passes_its_embedder_to_memory(make_db: DbFactory) -> None:
    embedder = HashingEmbedder(dims=32)
    db = await make_db("with_embedder.db", embedder=embedder)
    await db.initialize()
    task = (await db.tasks.create_task("t")).id
    assert db.memory.embedder is embedder
    await db.memory.add_memory("user:alice", "k", {"text": "hello world"}, "semantic", "me", task)
    found = await db.memory.search_memories("user:alice", query="hello")
    assert [r["key"] for r in found] == ["k"]


# ------------------------------------------------------------------ recall


async def test_recall_by_meaning_finds_the_review_preference(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=HashingEmbedder())
    facts = {
        ("user:alice:preferences", "review_style"): "Alice prefers small pull requests and "
        "wants code review comments within a day",
        ("user:alice:preferences", "editor"): "vim with a dark colour theme",
        ("user:alice:food", "lunch"): "sushi on fridays",
        ("user:bob:preferences", "review_style"): "bob likes long review threads",
    }
    for (ns, key), text in facts.items():
        await memory.add_memory(ns, key, {"text": text}, "semantic", "me", task_id)
    found = await memory.search_memories(
        "user:alice", query="what does alice prefer about code review"
    )
    assert (found[0]["namespace"], found[0]["key"]) == ("user:alice:preferences", "review_style")
    assert all(r["namespace"].startswith("user:alice") for r in found)  # bob is outside
    assert len(found) == 3
    scores = [r["score"] for r in found]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    # A search without a query is unchanged: no score.
    plain = await memory.search_memories("user:alice")
    assert len(plain) == 3 and all("score" not in r for r in plain)


async def test_scores_are_the_cosine_similarity_and_ties_go_newest_first(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db, embedder=counts_embedder())
    values = {"k1": "aab", "k2": "aab", "k3": "ccc", "k4": "abab"}
    ids = {}
    for key, text in values.items():
        ids[key] = await memory.add_memory("user:u", key, {"t": text}, "semantic", "me", task_id)
    found = await memory.search_memories("user:u", query="ab")
    (query_vector,) = letter_counts(["ab"])
    expected = {
        key: cosine(letter_counts([json.dumps({"t": t}, separators=(",", ":"))])[0], query_vector)
        for key, t in values.items()
    }
    assert {r["key"]: r["score"] for r in found} == pytest.approx(expected, abs=1e-6)
    order = [r["key"] for r in found]
    # k1 and k2 hold the same text: equal scores, the later written (higher id) first.
    assert order.index("k2") == order.index("k1") - 1
    assert ids["k2"] > ids["k1"]
    assert order[-1] == "k3"


async def test_memory_type_and_limit_apply_to_query_searches(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=counts_embedder())
    for i, memory_type in enumerate(["semantic", "episodic", "semantic", "procedural"]):
        await memory.add_memory("user:u", f"k{i}", {"t": "a" * i}, memory_type, "me", task_id)
    typed = await memory.search_memories("user:u", "semantic", query="a")
    assert sorted(r["key"] for r in typed) == ["k0", "k2"]
    everything = await memory.search_memories("user:u", query="a", limit=1000)
    assert len(everything) == 4
    assert await memory.search_memories("user:u", query="a", limit=2) == everything[:2]


async def test_fields_embed_parts_and_a_version_matches_through_its_best_field(
    db: Database, task_id: str
) -> None:
    embedder = Embedder(letter_counts, 8, fields=("title", "body.text"), model="counts")
    memory = MemoryService(db, embedder=embedder)
    await memory.add_memory(
        "user:u", "both", {"title": "hhh", "body": {"text": "aaa"}}, "semantic", "me", task_id
    )
    await memory.add_memory("user:u", "title_only", {"title": "ddd"}, "semantic", "me", task_id)
    await memory.add_memory("user:u", "neither", {"other": "aaa"}, "semantic", "me", task_id)
    found = await memory.search_memories("user:u", query="aaa")
    # "both" matches through body.text (a string is embedded as it is: cosine 1 with "aaa").
    assert [r["key"] for r in found] == ["both", "title_only"]
    assert found[0]["score"] == pytest.approx(
        cosine([3, 0, 0, 0, 0, 0, 0, 1], [3, 0, 0, 0, 0, 0, 0, 1])
    )
    _, _, vectors = await _counts(db)
    assert vectors == 3  # two fields of "both", one of "title_only", none of "neither"


async def test_every_write_stores_its_vectors_as_computed(db: Database, task_id: str) -> None:
    """add, update and put (a new key, a live one) store each embedded field's
    vector, model and dims with the version written: on PostgreSQL inside the
    write function's one statement (revision 0012), on SQLite in the unit."""
    embedder = Embedder(letter_counts, 8, fields=("title", "body"), model="counts")
    memory = MemoryService(db, embedder=embedder)
    ids = [
        await memory.add_memory(
            "user:v", "k", {"title": "ab", "body": "cc"}, "semantic", "me", task_id
        ),
        await memory.update_memory("user:v", "k", {"title": "ddd"}, "me", task_id),
        (
            await memory.put_memory(
                "user:v", "p", {"body": "he"}, "semantic", by="me", task_id=task_id
            )
        )["id"],
        (
            await memory.put_memory(
                "user:v", "p", {"other": 1}, "semantic", by="me", task_id=task_id
            )
        )["id"],
    ]
    async with db.transaction(write=False) as session:
        stored = (
            await session.execute(
                select(
                    MemoryEmbedding.memory_entry_id,
                    MemoryEmbedding.model,
                    MemoryEmbedding.dims,
                    MemoryEmbedding.field,
                    MemoryEmbedding.vector,
                ).order_by(MemoryEmbedding.memory_entry_id, MemoryEmbedding.field)
            )
        ).all()
    expected = [
        (ids[0], "body", "cc"), (ids[0], "title", "ab"), (ids[1], "title", "ddd"),
        (ids[2], "body", "he"),
    ]  # fmt: skip
    assert [tuple(row) for row in stored] == [
        (entry_id, "counts", 8, field, struct.pack("<8f", *letter_counts([text])[0]))
        for entry_id, field, text in expected
    ]


# ------------------------------------------------------------------ liveness


async def test_delete_update_and_consolidate_change_query_results_at_once(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db, embedder=counts_embedder())
    await memory.add_memory("user:u", "x", {"t": "aaaa"}, "semantic", "me", task_id)
    await memory.add_memory("user:u", "y", {"t": "bbbb"}, "semantic", "me", task_id)
    assert {r["key"] for r in await memory.search_memories("user:u", query="a")} == {"x", "y"}

    await memory.delete_memory("user:u", "x", "me", task_id)
    assert [r["key"] for r in await memory.search_memories("user:u", query="a")] == ["y"]

    await memory.restore_memory("user:u", "x", 1, "me", task_id)
    found = await memory.search_memories("user:u", query="a")
    assert [(r["key"], r["version"]) for r in found] == [("x", 2), ("y", 1)]

    await memory.update_memory("user:u", "x", {"t": "bbbb"}, "me", task_id)
    found = await memory.search_memories("user:u", query="b")
    assert {(r["key"], r["version"]) for r in found} == {("x", 3), ("y", 1)}
    assert all(r["score"] == pytest.approx(found[0]["score"]) for r in found)

    # x and z have two live versions each: consolidation leaves one of each,
    # found through its new embedding.
    await memory.add_memory("user:u", "z", {"t": "cc"}, "semantic", "me", task_id)
    await memory.delete_memory("user:u", "z", "me", task_id)
    assert "z" not in {r["key"] for r in await memory.search_memories("user:u", query="c")}
    await memory.restore_memory("user:u", "z", 1, "me", task_id)
    await memory.update_memory("user:u", "z", {"t": "dd", "u": "ddd"}, "me", task_id)
    assert await memory.consolidate_memories("user:u", "merge", task_id=task_id) == 2
    found = {r["key"]: r for r in await memory.search_memories("user:u", query="d")}
    assert {k: r["version"] for k, r in found.items()} == {"x": 4, "y": 1, "z": 4}
    assert found["x"]["value"] == {"t": "bbbb"}
    assert found["z"]["value"] == {"t": "dd", "u": "ddd"}
    (query_vector,) = letter_counts(["d"])
    text = json.dumps({"t": "dd", "u": "ddd"}, sort_keys=True, separators=(",", ":"))
    assert found["z"]["score"] == pytest.approx(cosine(letter_counts([text])[0], query_vector))


async def test_publish_and_seed_store_embeddings(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=HashingEmbedder())
    await memory.add_memory(
        "session:s1", "fact", {"text": "alice likes tea"}, "semantic", "me", task_id
    )
    await memory.publish_memory("session:s1", "user:alice", "fact", "me", task_id)
    found = await memory.search_memories("user:alice", query="tea")
    assert [(r["namespace"], r["key"]) for r in found] == [("user:alice", "fact")]
    assert await memory.seed_defaults(task_id) == 3
    found = await memory.search_memories("app:abathur", query="consolidate keys")
    assert found[0]["key"] == "memory_hygiene"


async def test_index_false_skips_a_version_and_reindex_embeds_it(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db, embedder=counts_embedder())
    await memory.add_memory("user:u", "a", {"t": "a"}, "semantic", "me", task_id, index=False)
    await memory.add_memory("user:u", "b", {"t": "a"}, "semantic", "me", task_id)
    assert [r["key"] for r in await memory.search_memories("user:u", query="a")] == ["b"]
    await memory.update_memory("user:u", "b", {"t": "b"}, "me", task_id, index=False)
    assert await memory.search_memories("user:u", query="a") == []  # b's current version has none
    seen: list[int] = []
    assert await memory.reindex("user:u", progress=seen.append) == 2
    assert seen == [2]
    assert {r["key"] for r in await memory.search_memories("user:u", query="a")} == {"a", "b"}
    assert await memory.reindex() == 0  # nothing left to embed


async def test_reindex_after_a_model_change(db: Database, task_id: str) -> None:
    old = MemoryService(db, embedder=counts_embedder("counts-v1"))
    for i in range(7):
        await old.add_memory(f"user:u{i % 3}", f"k{i}", {"t": "ab" * i}, "semantic", "me", task_id)
    await old.add_memory("project:p", "elsewhere", {"t": "a"}, "semantic", "me", task_id)
    new = MemoryService(db, embedder=HashingEmbedder(dims=64))
    # Vectors of another model are never compared: nothing is found until reindex.
    assert await new.search_memories("user", query="abab") == []
    progress: list[int] = []
    assert await new.reindex("user", batch_size=3, progress=progress.append) == 7
    assert progress == [3, 6, 7]
    assert len(await new.search_memories("user", query="abab", limit=100)) == 7
    assert await new.search_memories("project", query="t") == []
    assert await new.reindex() == 1  # the project memory
    assert await new.reindex() == 0
    # The old model's vectors are still there and still served to the old model.
    assert len(await old.search_memories("user", query="ab", limit=100)) == 7
    _, _, vectors = await _counts(db)
    assert vectors == 16


async def test_reindex_embeds_only_current_live_versions(db: Database, task_id: str) -> None:
    plain = MemoryService(db)
    await plain.add_memory("user:u", "a", {"t": "a"}, "semantic", "me", task_id)
    await plain.update_memory("user:u", "a", {"t": "aa"}, "me", task_id)
    await plain.add_memory("user:u", "gone", {"t": "a"}, "semantic", "me", task_id)
    await plain.delete_memory("user:u", "gone", "me", task_id)
    memory = MemoryService(db, embedder=counts_embedder())
    assert await memory.reindex() == 1
    async with db.transaction(write=False) as session:
        embedded = (await session.scalars(select(MemoryEmbedding.memory_entry_id))).all()
    current = await memory.get_memory("user:u", "a")
    assert current is not None and list(embedded) == [current["id"]]


async def test_a_small_vector_cache_gives_the_same_ranking(db: Database, task_id: str) -> None:
    roomy = MemoryService(db, embedder=counts_embedder())
    tiny = MemoryService(db, embedder=counts_embedder(), vector_cache_size=2)
    none = MemoryService(db, embedder=counts_embedder(), vector_cache_size=0)
    for i in range(12):
        text = "abcdefg"[i % 7] * (1 + i % 3) + "a"
        await roomy.add_memory("user:u", f"k{i}", {"t": text}, "semantic", "me", task_id)
    for query in ("a", "bb", "cg", "a"):
        expected = await roomy.search_memories("user:u", query=query, limit=100)
        assert await tiny.search_memories("user:u", query=query, limit=100) == expected
        assert await none.search_memories("user:u", query=query, limit=100) == expected
    assert len(tiny._vectors) <= 2
    assert len(none._vectors) == 0
    assert len(roomy._vectors) == 12


# ------------------------------------------------------------------ failures


class FailOn:
    """Embeds like letter_counts, but fails (in one of several ways) on a marked text."""

    def __init__(self, how: str):
        self.how = how
        self.calls = 0

    def __call__(self, texts: list[str]) -> Any:
        self.calls += 1
        vectors = letter_counts(texts)
        if any("FAIL" in t for t in texts):
            if self.how == "raise":
                raise RuntimeError("model server fell over")
            if self.how == "nan":
                vectors[0][0] = float("nan")
            elif self.how == "dims":
                vectors[0] = vectors[0][:5]
            elif self.how == "count":
                vectors = vectors[:-1]
            elif self.how == "zero":
                vectors[0] = [0.0] * 8
            elif self.how == "inf":
                vectors[0][1] = 1e300
        return vectors


@pytest.mark.parametrize("how", ["raise", "nan", "dims", "count", "zero", "inf"])
async def test_an_embedding_failure_writes_nothing(db: Database, task_id: str, how: str) -> None:
    memory = MemoryService(db, embedder=Embedder(FailOn(how), 8, model="counts"))
    await memory.add_memory("user:u", "k", {"t": "ok"}, "semantic", "me", task_id)
    await memory.add_memory(
        "session:s", "draft", {"t": "FAIL"}, "semantic", "me", task_id, index=False
    )
    # Two keys with two live versions each; the second key's merge fails to embed.
    for key, second in (("m1", {"u": "fine"}), ("m2", {"u": "FAIL"})):
        await memory.add_memory("user:c", key, {"t": "x"}, "semantic", "me", task_id)
        await memory.delete_memory("user:c", key, "me", task_id)
        await memory.restore_memory("user:c", key, 1, "me", task_id)
        await memory.update_memory("user:c", key, second, "me", task_id, index=False)
    before = await _counts(db)

    with pytest.raises(EmbeddingError):
        await memory.add_memory("user:u", "new", {"t": "FAIL"}, "semantic", "me", task_id)
    with pytest.raises(EmbeddingError):
        await memory.update_memory("user:u", "k", {"t": "FAIL"}, "me", task_id)
    with pytest.raises(EmbeddingError):
        await memory.publish_memory("session:s", "user:u", "draft", "me", task_id)
    with pytest.raises(EmbeddingError):
        await memory.consolidate_memories("user:c", "merge", task_id=task_id)
    await memory.update_memory("user:u", "k", {"t": "FAIL again"}, "me", task_id, index=False)
    middle = await _counts(db)
    assert middle == (before[0] + 1, before[1] + 1, before[2])
    with pytest.raises(EmbeddingError):
        await memory.restore_memory("user:u", "k", 2, "me", task_id)

    assert await _counts(db) == middle
    assert await memory.get_memory("user:u", "new") is None
    assert [h["version"] for h in await memory.get_memory_history("user:c", "m1")] == [1, 2, 3]
    # The same calls work once the embedder is left out of them.
    await memory.add_memory("user:u", "new", {"t": "FAIL"}, "semantic", "me", task_id, index=False)
    assert await memory.consolidate_memories("user:c", "merge", task_id=task_id, index=False) == 2


async def test_failed_lookups_still_raise_their_own_errors(db: Database, task_id: str) -> None:
    memory = MemoryService(db, embedder=counts_embedder())
    with pytest.raises(NotFoundError):
        await memory.update_memory("user:u", "missing", {"t": "a"}, "me", task_id)
    with pytest.raises(NotFoundError):
        await memory.restore_memory("user:u", "missing", 1, "me", task_id)
    with pytest.raises(NotFoundError):
        await memory.publish_memory("session:s", "user:u", "missing", "me", task_id)
    await memory.add_memory("user:u", "k", {"t": "a"}, "semantic", "me", task_id)
    with pytest.raises(AlreadyExistsError):
        await memory.add_memory("user:u", "k", {"t": "a"}, "semantic", "me", task_id)
    assert await _counts(db) == (1, 1, 1)


async def test_embeddings_are_computed_outside_the_write_lock(db: Database, task_id: str) -> None:
    """SQLite: the writer lock is free while the embedder runs. PostgreSQL: no
    connection is running a unit (so no transaction, no advisory lock is open)."""
    held: list[bool] = []

    async def embed(texts: list[str]) -> list[list[float]]:
        if db.is_sqlite:
            assert db._writer is not None
            held.append(db._writer.locked())
        else:
            # Connections the Storage keeps idle between units are checked
            # out of the pool but run nothing.
            idle = len(db._idle_autocommit) + sum(len(kept) for kept in db._idle.values())
            held.append(db.engine.pool.checkedout() - idle > 0)  # type: ignore[attr-defined]
        return letter_counts(texts)

    memory = MemoryService(db, embedder=Embedder(embed, 8, model="counts"))
    await memory.add_memory("user:u", "k", {"t": "a"}, "semantic", "me", task_id)
    await memory.update_memory("user:u", "k", {"t": "b"}, "me", task_id)
    await memory.restore_memory("user:u", "k", 1, "me", task_id)
    await memory.add_memory("session:s", "d", {"t": "c"}, "semantic", "me", task_id)
    await memory.publish_memory("session:s", "user:u", "d", "me", task_id)
    await memory.consolidate_memories("user:u", "latest_wins", task_id=task_id)
    await memory.search_memories("user:u", query="a")
    assert len(held) == 7 and not any(held)


async def test_publish_embeds_the_draft_it_copies_even_when_it_changes(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db)
    await memory.add_memory("session:s", "d", {"t": "aaa"}, "semantic", "me", task_id)
    changed = False

    async def embed(texts: list[str]) -> list[list[float]]:
        nonlocal changed
        if not changed:  # the draft changes after its first embedding, before the write
            changed = True
            await memory.update_memory("session:s", "d", {"t": "bbb"}, "me", task_id)
        return letter_counts(texts)

    embedding = MemoryService(db, embedder=Embedder(embed, 8, model="counts"))
    await embedding.publish_memory("session:s", "user:u", "d", "me", task_id)
    published = await embedding.get_memory("user:u", "d")
    assert published is not None and published["value"] == {"t": "bbb"}
    found = await embedding.search_memories("user:u", query="bbb")
    (q,) = letter_counts(["bbb"])
    (v,) = letter_counts([json.dumps({"t": "bbb"}, separators=(",", ":"))])
    assert found[0]["score"] == pytest.approx(cosine(v, q))


# ------------------------------------------------------------------ concurrency


async def test_concurrent_writers_with_an_embedder_lose_nothing(db: Database, task_id: str) -> None:
    async def slow(texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return letter_counts(texts)

    memory = MemoryService(db, embedder=Embedder(slow, 8, model="counts"))
    await memory.add_memory("user:shared", "k", {"t": "start"}, "semantic", "me", task_id)

    async def new_key(i: int) -> None:
        await memory.add_memory("user:many", f"k{i}", {"t": "a" * i}, "semantic", "me", task_id)

    async def update(i: int) -> None:
        await memory.update_memory("user:shared", "k", {"t": "b" * i}, "me", task_id)

    await asyncio.gather(*(new_key(i) for i in range(20)), *(update(i) for i in range(1, 21)))
    history = await memory.get_memory_history("user:shared", "k")
    assert [h["version"] for h in history] == list(range(1, 22))
    versions, _, vectors = await _counts(db)
    assert versions == 41 and vectors == 41  # every version has its embedding
    found = await memory.search_memories("user:many", query="a", limit=100)
    assert sorted(r["key"] for r in found) == sorted(f"k{i}" for i in range(20))
    shared = await memory.search_memories("user:shared", query="b")
    assert [r["version"] for r in shared] == [21]
    async with db.transaction(write=False) as session:
        pairs = (
            await session.execute(
                select(MemoryEntry.value, MemoryEmbedding.vector).join(
                    MemoryEmbedding, MemoryEmbedding.memory_entry_id == MemoryEntry.id
                )
            )
        ).all()
    import numpy as np

    for value, blob in pairs:  # each vector belongs to its own version's value
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        assert np.frombuffer(blob, dtype="<f4").tolist() == letter_counts([text])[0]


async def test_a_model_server_embedder_end_to_end(db: Database, task_id: str) -> None:
    from abathur.embeddings import OpenAICompatibleEmbedder
    from tests.embeddings.test_embedders import FakeServer

    server = FakeServer()
    try:
        memory = MemoryService(db, embedder=OpenAICompatibleEmbedder(server.url, "fake-model"))
        await memory.add_memory("user:u", "short", {"t": "a"}, "semantic", "me", task_id)
        await memory.add_memory("user:u", "spaced", {"t": "a b c d e f"}, "semantic", "me", task_id)
        found = await memory.search_memories("user:u", query="x y z w v u")
        assert [r["key"] for r in found] == ["spaced", "short"]
        assert [r["body"]["model"] for r in server.requests] == ["fake-model"] * 3
    finally:
        server.close()


async def test_same_model_at_another_dimension_is_reindexed_not_mixed(
    db: Database, task_id: str
) -> None:
    wide = MemoryService(db, embedder=HashingEmbedder(dims=64))
    narrow = MemoryService(db, embedder=HashingEmbedder(dims=16))
    for key, text in (("tea", "green tea"), ("code", "code review rules")):
        await wide.add_memory("user:u", key, {"text": text}, "semantic", "me", task_id)
    before = [r["key"] for r in await wide.search_memories("user:u", query="tea")]
    assert await narrow.search_memories("user:u", query="tea") == []
    assert await narrow.reindex() == 2
    assert (await narrow.search_memories("user:u", query="tea"))[0]["key"] == "tea"
    assert [r["key"] for r in await wide.search_memories("user:u", query="tea")] == before
    # One service's cache serves both dimensions without mixing them up.
    both = MemoryService(db, embedder=HashingEmbedder(dims=64))
    await both.search_memories("user:u", query="tea")
    both.embedder = HashingEmbedder(dims=16)
    found = await both.search_memories("user:u", query="tea")
    assert found == await narrow.search_memories("user:u", query="tea")


async def test_stacked_vectors_are_reused_only_while_the_subtree_is_unchanged(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db, embedder=counts_embedder(), vector_cache_size=50)
    for i in range(6):
        await memory.add_memory(f"user:u{i}", "k", {"t": "a" * (i + 1)}, "semantic", "me", task_id)
    first = await memory.search_memories("user", query="ab")
    stacked = memory._stacked[("counts", 8, "user", None)]
    assert await memory.search_memories("user", query="ab") == first
    assert memory._stacked[("counts", 8, "user", None)] is stacked  # reused
    await memory.update_memory("user:u0", "k", {"t": "bbbbbbbb"}, "me", task_id)
    second = await memory.search_memories("user", query="ab")
    assert memory._stacked[("counts", 8, "user", None)] is not stacked  # rebuilt
    assert ("user:u0", 2) in {(r["namespace"], r["version"]) for r in second}
    assert [r["score"] for r in second] != [r["score"] for r in first]
    for i in range(6):  # at most four subtrees are kept
        await memory.search_memories(f"user:u{i}", query="a")
    assert len(memory._stacked) == 4
    none = MemoryService(db, embedder=counts_embedder(), vector_cache_size=0)
    assert await none.search_memories("user", query="ab") == second
    assert none._stacked == {}


async def test_candidates_take_further_conditions(db: Database, task_id: str) -> None:
    """The hook for the plain search's other read rules (a filter, expiry)."""
    from sqlalchemy import bindparam

    from abathur.repositories.embeddings import EmbeddingRepository

    memory = MemoryService(db, embedder=counts_embedder())
    ids = {}
    for who in ("alice", "bob", "carol"):
        ids[who] = await memory.add_memory("user:u", who, {"t": who}, "semantic", who, task_id)

    async def read(conditions: Any, params: Any) -> list[tuple[int, str]]:
        return await db.read(
            lambda conn: EmbeddingRepository(conn).candidates(
                "user", None, "counts", 8, conditions=conditions, params=params
            )
        )

    everything = await read((), None)
    assert sorted(everything) == sorted((i, "$") for i in ids.values())
    narrowed = await read((MemoryEntry.created_by != bindparam("who"),), {"who": "bob"})
    assert sorted(narrowed) == sorted((ids[w], "$") for w in ("alice", "carol"))


# ------------------------------------------------------------------ with the retrieval rules


@pytest.fixture
def clock() -> Any:
    from tests.support.memory_model import controlled_clock

    with controlled_clock() as c:
        yield c


async def test_query_search_applies_filter_offset_and_expiry(
    db: Database, task_id: str, clock: Any
) -> None:
    """The query path selects its candidates by the plain search's read rules
    (value filter, expiry) and pages the ranked list with offset."""
    from datetime import timedelta

    memory = MemoryService(db, embedder=counts_embedder())
    texts = {"k1": "aaaa", "k2": "aaab", "k3": "aabb", "k4": "abbb", "k5": "bbbb"}
    for i, (key, text) in enumerate(texts.items()):
        await memory.put_memory(
            "user:alice", key, {"text": text, "n": i}, "semantic", by="a", task_id=task_id
        )
    everything = await memory.search_memories("user:alice", limit=10, query="aaaa")
    assert [r["key"] for r in everything] == ["k1", "k2", "k3", "k4", "k5"]

    filtered = await memory.search_memories(
        "user:alice", limit=10, query="aaaa", filter={"n": {"$gte": 2}}
    )
    assert [r["key"] for r in filtered] == ["k3", "k4", "k5"]
    paged = await memory.search_memories(
        "user:alice", limit=2, query="aaaa", filter={"n": {"$gte": 2}}, offset=1
    )
    assert paged == filtered[1:3]

    await memory.put_memory(
        "user:alice", "k2", {"text": "aaab", "n": 1}, "semantic", by="a", task_id=task_id,
        ttl=timedelta(seconds=30),
    )  # fmt: skip
    assert [r["key"] for r in await memory.search_memories("user:alice", query="aaaa")][:2] == [
        "k1",
        "k2",
    ]
    clock.advance(timedelta(seconds=20))
    refreshed = await memory.search_memories("user:alice", limit=2, query="aaaa", refresh_ttl=True)
    assert [r["key"] for r in refreshed] == ["k1", "k2"]
    clock.advance(timedelta(seconds=20))  # 40 s after the write, 20 s after the refresh
    assert "k2" in [r["key"] for r in await memory.search_memories("user:alice", query="aaaa")]
    clock.advance(timedelta(seconds=15))  # past the refreshed expiry
    assert [r["key"] for r in await memory.search_memories("user:alice", query="aaaa")] == [
        "k1",
        "k3",
        "k4",
        "k5",
    ]


# ------------------------------------------------------------------ the warm path's caches


async def test_a_version_embedded_after_a_query_search_is_found_by_the_next(
    db: Database, task_id: str
) -> None:
    """Which ids have an embedding is cached only when they have one: a version
    without one (``index=False``), searched over with a warm cache, appears as
    soon as ``reindex`` embeds it."""
    memory = MemoryService(db, embedder=counts_embedder())
    await memory.add_memory("user:u", "a", {"t": "aaaa"}, "semantic", "me", task_id)
    raw_id = await memory.add_memory(
        "user:u", "b", {"t": "aaab"}, "semantic", "me", task_id, index=False
    )
    for _ in range(2):  # cold, then warm
        found = await memory.search_memories("user:u", query="aaab")
        assert [r["key"] for r in found] == ["a"]
    assert await memory.reindex("user:u") == 1
    found = await memory.search_memories("user:u", query="aaab")
    assert (found[0]["key"], found[0]["id"]) == ("b", raw_id)
    assert [r["key"] for r in found] == ["b", "a"]
    assert found[0]["score"] == pytest.approx(1.0)


async def test_an_expired_key_leaves_warm_query_results_at_once(
    db: Database, task_id: str, clock: Any
) -> None:
    """The unfiltered path reuses the subtree's stacked vectors, yet a key whose
    expiry passes is gone from the very next search, and a deleted one too."""
    from datetime import timedelta

    memory = MemoryService(db, embedder=counts_embedder())
    put = partial(memory.put_memory, memory_type="semantic", by="me", task_id=task_id)
    await put("user:u", "a", {"t": "aaaa"})
    await put("user:u:x", "b", {"t": "aaab"}, ttl=timedelta(seconds=30))
    await put("user:u", "c", {"t": "bbbb"})
    for _ in range(3):  # warm
        found = await memory.search_memories("user:u", query="aaab")
        assert [r["key"] for r in found] == ["b", "a", "c"]
    clock.advance(timedelta(seconds=31))
    assert [r["key"] for r in await memory.search_memories("user:u", query="aaab")] == ["a", "c"]
    await memory.delete_memory("user:u", "c", "me", task_id)
    assert [r["key"] for r in await memory.search_memories("user:u", query="aaab")] == ["a"]
