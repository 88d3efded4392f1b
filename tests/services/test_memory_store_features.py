"""Issue 13 (LangGraph store): the core features AbathurStore builds on, on
both backends: filter operands no stored value can equal (NaN, infinities,
NUL strings, integers beyond 64 bits), ``list_namespaces`` wildcards and
``min_depth``, ``delete_memory(missing_ok=True)`` and ``put_memory(index=[fields])``."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import func, select

from abathur.domain.memory import parse_filter
from abathur.embeddings import Embedder
from abathur.errors import NotFoundError, ValidationError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.schema.models import AuditEntry, MemoryEntry


async def count(db: Database, model: type[Any]) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def keys(db: Database, filter: dict[str, Any]) -> list[str]:
    rows = await db.memory.search_memories("user:f", filter=filter, limit=100)
    return sorted(r["key"] for r in rows)


async def test_unmatchable_operands_compare_as_such(db: Database, task_id: str) -> None:
    for key, value in {
        "i": {"n": 10},
        "neg": {"n": -10},
        "big": {"n": 1e300},
        "s": {"n": "10"},
        "none": {},
    }.items():
        await db.memory.put_memory("user:f", key, value, "semantic", by="a", task_id=task_id)
    numbers = ["big", "i", "neg"]
    assert await keys(db, {"n": {"$lt": math.inf}}) == numbers
    assert await keys(db, {"n": {"$lte": math.inf}}) == numbers
    assert await keys(db, {"n": {"$gt": -math.inf}}) == numbers
    assert await keys(db, {"n": {"$gte": -math.inf}}) == numbers
    assert await keys(db, {"n": {"$gt": math.inf}}) == []
    assert await keys(db, {"n": {"$lt": -math.inf}}) == []
    for operator in ("$eq", "$gt", "$gte", "$lt", "$lte"):
        assert await keys(db, {"n": {operator: math.nan}}) == []
    assert await keys(db, {"n": math.inf}) == []
    everything = ["big", "i", "neg", "none", "s"]
    assert await keys(db, {"n": {"$ne": math.nan}}) == everything
    assert await keys(db, {"n": {"$ne": "1\x00"}}) == everything
    assert await keys(db, {"n": "10\x00"}) == []
    assert await keys(db, {"n": {"$in": [10, math.nan, "x\x00"]}}) == ["i"]
    # beyond 64 bits: the nearest float
    assert await keys(db, {"n": {"$lt": 10**100}}) == ["i", "neg"]
    assert await keys(db, {"n": {"$gt": 10**400}}) == []
    assert await keys(db, {"n": {"$gt": -(10**400)}}) == numbers


def test_unmatchable_operands_reduce_to_plain_terms() -> None:
    never = parse_filter({"a": math.nan})
    assert [(t.operator, t.operand) for t in never] == [("$in", ())]
    assert parse_filter({"a": {"$ne": math.inf}}) == ()
    (number,) = parse_filter({"a": {"$lt": math.inf}})
    assert number.operator == "$gte" and number.operand < -1e300
    with pytest.raises(ValidationError, match="filter"):
        parse_filter({"a": {"$gt": "x\x00"}})


async def test_list_namespaces_wildcard_and_min_depth(db: Database, task_id: str) -> None:
    for ns in (
        "app:lg:uid:users:alice",
        "app:lg:uid:users:malice",
        "app:lg:uid:a:b:alice",
        "app:lg:star*",
        "app:lg:public",
        "app:lg:x:public",
        "app:other:y:public",
    ):
        await db.memory.put_memory(ns, "k", {}, "semantic", by="a", task_id=task_id)
    listed = db.memory.list_namespaces
    assert await listed("app:lg:uid:*:alice", wildcard="*") == ["app:lg:uid:users:alice"]
    # Without wildcard= a '*' is an ordinary character.
    assert await listed("app:lg:uid:*:alice") == []
    assert await listed("app:lg:star*") == ["app:lg:star*"]
    assert await listed("app:*:x", wildcard="*") == ["app:lg:x:public"]
    assert await listed("app:*", wildcard="*", max_depth=3) == [
        "app:lg:public",
        "app:lg:star*",
        "app:lg:uid",
        "app:lg:x",
        "app:other:y",
    ]
    assert await listed(suffix="*:public", wildcard="*") == [
        "app:lg:public",
        "app:lg:x:public",
        "app:other:y:public",
    ]
    assert await listed("app:lg", suffix="*:public", wildcard="*", min_depth=4) == [
        "app:lg:x:public"
    ]
    assert await listed("app:lg", min_depth=5) == [
        "app:lg:uid:a:b:alice",
        "app:lg:uid:users:alice",
        "app:lg:uid:users:malice",
    ]
    assert await listed("app:lg:uid:*", wildcard="*", limit=1, offset=1) == [
        "app:lg:uid:users:alice"
    ]
    with pytest.raises(ValidationError, match="wildcard"):
        await listed("app:lg", wildcard="a:b")
    with pytest.raises(ValidationError, match="min_depth"):
        await listed("app:lg", min_depth=0)


async def test_delete_missing_ok(db: Database, task_id: str) -> None:
    memory = db.memory
    await memory.delete_memory("user:d", "never", "a", task_id, missing_ok=True)
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0
    await memory.put_memory("user:d", "k", {"v": 1}, "semantic", by="a", task_id=task_id)
    await memory.delete_memory("user:d", "k", "a", task_id, missing_ok=True)
    assert await memory.get_memory("user:d", "k") is None
    audits = await count(db, AuditEntry)
    await memory.delete_memory("user:d", "k", "a", task_id, missing_ok=True)  # already deleted
    assert await count(db, AuditEntry) == audits
    with pytest.raises(NotFoundError):
        await memory.delete_memory("user:d", "k", "a", task_id)
    with pytest.raises(ValidationError, match="missing_ok"):
        await memory.delete_memory("user:d", "k", "a", task_id, missing_ok=1)  # type: ignore[arg-type]


def letter_counts(texts: list[str]) -> list[list[float]]:
    """How often each of seven letters occurs, plus one (never all zeros)."""
    return [[float(t.count(c)) for c in "abcdefg"] + [1.0] for t in texts]


async def test_put_index_fields_embed_those_fields_of_the_version(
    db: Database, task_id: str
) -> None:
    memory = MemoryService(db, embedder=Embedder(letter_counts, 8, fields=("title",)))
    put = memory.put_memory
    await put("user:i", "own", {"title": "aaa", "body": "ggg"}, "semantic", by="a", task_id=task_id)
    await put(
        "user:i", "body", {"title": "aaa", "body": "ggg"}, "semantic",
        by="a", task_id=task_id, index=["body"],
    )  # fmt: skip
    await put(
        "user:i", "none", {"title": "ggg"}, "semantic", by="a", task_id=task_id, index=["x.y"]
    )
    found = await memory.search_memories("user:i", query="ggg")
    # "body" was embedded through its body only, "own" through its title only,
    # "none" lacks every field it named and has no embedding.
    assert [r["key"] for r in found] == ["body", "own"]
    assert found[0]["score"] == pytest.approx(1.0)
    for bad in ([], ["a..b"], ["a", "a"], "title", 3):
        with pytest.raises(ValidationError, match=r"index|field"):
            await put("user:i", "k", {}, "semantic", by="a", task_id=task_id, index=bad)
    assert await memory.get_memory("user:i", "k") is None
