"""Issue 11: put_memory (upsert), value filters and paging in search_memories,
list_namespaces, and per-key TTL with refresh and sweep, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql

from abathur.domain.memory import MAX_FILTER_CONDITIONS, AccessContext, parse_filter
from abathur.errors import AccessDeniedError, AlreadyExistsError, NotFoundError, ValidationError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import SYSTEM_TASK_ID
from abathur.repositories.memory import _pg_term
from abathur.schema.models import AuditEntry, MemoryEntry, MemoryExpiry
from abathur.strict_json import MAX_JSON_DEPTH
from tests.support.memory_model import Clock, controlled_clock


async def audit_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            select(
                AuditEntry.memory_operation_type,
                AuditEntry.action_type,
                AuditEntry.task_id,
                AuditEntry.action_data,
            ).order_by(AuditEntry.id)
        )
        return [tuple(r) for r in result]


async def count(db: Database, model: type[Any]) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def clock() -> Any:
    with controlled_clock() as c:
        yield c


# ------------------------------------------------------------------ put_memory


async def test_put_creates_updates_and_revives(db: Database, task_id: str) -> None:
    memory = db.memory
    first = await memory.put_memory(
        "user:alice", "k", {"v": 1}, "semantic", by="a", task_id=task_id, metadata={"m": 1}
    )
    assert (first["version"], first["created_by"], first["metadata"]) == (1, "a", {"m": 1})
    assert first == await memory.get_memory("user:alice", "k")

    second = await memory.put_memory(
        "user:alice", "k", {"v": 2}, "episodic", by="b", task_id=task_id
    )
    # update_memory's rules: type, creator and creation time carry forward,
    # metadata too unless given.
    assert second["version"] == 2
    assert second["memory_type"] == "semantic"
    assert (second["created_by"], second["updated_by"]) == ("a", "b")
    assert second["created_at"] == first["created_at"]
    assert second["metadata"] == {"m": 1}
    assert second == await memory.get_memory("user:alice", "k")

    third = await memory.put_memory(
        "user:alice", "k", {"v": 3}, "semantic", by="b", task_id=task_id, metadata={"m": 3}
    )
    assert third["metadata"] == {"m": 3}

    await memory.delete_memory("user:alice", "k", "c", task_id)
    revived = await memory.put_memory(
        "user:alice", "k", {"v": 4}, "procedural", by="d", task_id=task_id
    )
    assert (revived["version"], revived["memory_type"], revived["created_by"]) == (
        4,
        "procedural",
        "d",
    )
    assert revived["metadata"] == {}
    history = await memory.get_memory_history("user:alice", "k")
    assert [(h["version"], h["is_deleted"]) for h in history] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
    ]
    audit = await audit_rows(db)
    assert [(op, action, data["version"]) for op, action, _, data in audit] == [
        ("create", "memory_create", 1),
        ("update", "memory_update", 2),
        ("update", "memory_update", 3),
        ("delete", "memory_delete", 3),
        ("create", "memory_create", 4),
    ]


async def test_put_validates_like_add(db: Database, task_id: str) -> None:
    memory = db.memory
    with pytest.raises(ValidationError, match="memory_type"):
        await memory.put_memory("user:a", "k", {}, "bogus", by="a", task_id=task_id)
    with pytest.raises(ValidationError, match="value"):
        await memory.put_memory("user:a", "k", [], "semantic", by="a", task_id=task_id)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ttl"):
        await memory.put_memory(
            "user:a", "k", {}, "semantic", by="a", task_id=task_id, ttl=timedelta(0)
        )
    with pytest.raises(ValidationError, match="ttl"):
        await memory.put_memory("user:a", "k", {}, "semantic", by="a", task_id=task_id, ttl=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="9999"):
        await memory.put_memory(
            "user:a", "k", {}, "semantic", by="a", task_id=task_id, ttl=timedelta.max
        )
    with pytest.raises(NotFoundError, match="task"):
        await memory.put_memory("user:a", "k", {}, "semantic", by="a", task_id="nope")
    assert await count(db, MemoryEntry) == 0
    assert await count(db, AuditEntry) == 0


# ------------------------------------------------------------------ filters


async def _seed(db: Database, task_id: str) -> None:
    values: list[tuple[str, str, dict[str, Any]]] = [
        ("user:a", "n1", {"status": "open", "priority": 3, "author": {"name": "ann"}}),
        ("user:a", "n2", {"status": "open", "priority": 5, "author": {"name": "bob"}}),
        ("user:a:x", "n3", {"status": "closed", "priority": 1.5, "flag": True}),
        ("user:a:x", "s1", {"status": "open", "priority": "3", "flag": False}),
        ("user:a:x", "z", {"status": None, "priority": [3], "author": "ann"}),
        ("user:ab", "out", {"status": "open", "priority": 3}),
    ]
    for ns, key, value in values:
        await db.memory.put_memory(ns, key, value, "semantic", by="a", task_id=task_id)


async def keys(db: Database, root: str = "user:a", **kw: Any) -> list[str]:
    return sorted(r["key"] for r in await db.memory.search_memories(root, limit=1000, **kw))


async def test_filters_follow_json_types(db: Database, task_id: str) -> None:
    await _seed(db, task_id)
    assert await keys(db, filter={"status": "open"}) == ["n1", "n2", "s1"]
    assert await keys(db, filter={"priority": 3}) == ["n1"]  # never the string "3"
    assert await keys(db, filter={"priority": "3"}) == ["s1"]
    assert await keys(db, filter={"priority": {"$gte": 3}}) == ["n1", "n2"]
    assert await keys(db, filter={"priority": {"$lt": 3}}) == ["n3"]
    assert await keys(db, filter={"priority": {"$gt": 1, "$lte": 3}}) == ["n1", "n3"]
    assert await keys(db, filter={"priority": {"$gte": "3"}}) == ["s1"]
    assert await keys(db, filter={"priority": {"$ne": 3}}) == ["n2", "n3", "s1", "z"]
    assert await keys(db, filter={"priority": {"$in": [5, "3", 1.5]}}) == ["n2", "n3", "s1"]
    assert await keys(db, filter={"priority": {"$in": []}}) == []
    assert await keys(db, filter={"status": None}) == ["z"]
    assert await keys(db, filter={"flag": True}) == ["n3"]
    assert await keys(db, filter={"flag": False}) == ["s1"]
    assert await keys(db, filter={"flag": 1}) == []  # a boolean is not a number
    assert await keys(db, filter={"author.name": "ann"}) == ["n1"]  # not z's string
    assert await keys(db, filter={"author.name": {"$ne": "ann"}}) == ["n2", "n3", "s1", "z"]
    assert await keys(db, filter={"status": "open", "priority": {"$gt": 4}}) == ["n2"]
    assert await keys(db, filter={"missing": {"$gt": 0}}) == []
    assert await keys(db, filter={"priority.0": 3}) == []  # paths never index lists
    # The namespace range comes first: user:ab is outside user:a.
    assert await keys(db, "user", filter={"priority": 3}) == ["n1", "out"]


async def test_the_64_bit_integer_bounds_are_found_as_integers(db: Database, task_id: str) -> None:
    """-2**63 fits in 64 bits: it is compared as an integer, as 2**63 - 1 is
    (as the nearest float, PostgreSQL compared it with -9223372036854776000)."""
    for key, n in (("min", -(2**63)), ("max", 2**63 - 1)):
        await db.memory.put_memory("user:a", key, {"n": n}, "semantic", by="a", task_id=task_id)
    assert await keys(db, filter={"n": -(2**63)}) == ["min"]
    assert await keys(db, filter={"n": {"$in": [-(2**63), 2**63 - 1]}}) == ["max", "min"]
    assert await keys(db, filter={"n": {"$lte": -(2**63)}}) == ["min"]
    assert await keys(db, filter={"n": {"$eq": [-(2**63)]}}) == []  # a list: no error


async def test_a_comparison_that_holds_on_the_sql_value_still_needs_the_json_type(
    db: Database, task_id: str
) -> None:
    """SQLite compares ``json_extract``'s SQL value first and tests the JSON
    type only where that comparison holds: every filter here holds on the SQL
    value of some stored value of another JSON type (a boolean is 1 or 0, a
    list or an object its JSON text, a text sorts after every number), which
    the type test must still turn away."""
    stored: dict[str, Any] = {
        "num": 1, "t": True, "f": False, "s": "abc", "l": [1, 2], "o": {"a": 1}, "nul": None,
    }  # fmt: skip
    for key, x in stored.items():
        await db.memory.put_memory("user:t", key, {"x": x}, "semantic", by="a", task_id=task_id)

    async def found(filter: dict[str, Any]) -> list[str]:
        return await keys(db, "user:t", filter=filter)

    assert await found({"x": {"$gte": 0}}) == ["num"]  # not 1, 0, texts
    assert await found({"x": {"$lt": 2}}) == ["num"]  # not 1, 0
    assert await found({"x": {"$gt": 0.5}}) == ["num"]  # not 1, texts
    assert await found({"x": {"$lt": "zzz"}}) == ["s"]  # not numbers, "[1,2]"
    assert await found({"x": {"$gt": "["}}) == ["s"]  # not "[1,2]", '{"a":1}'
    assert await found({"x": "[1,2]"}) == []  # not the list
    assert await found({"x": {"$in": ["[1,2]", '{"a":1}', 0]}}) == []
    assert await found({"x": 1}) == ["num"]
    assert await found({"x": {"$ne": 1}}) == ["f", "l", "nul", "o", "s", "t"]


async def test_list_and_object_operands_compare_structurally(db: Database, task_id: str) -> None:
    """A list or object operand equals a stored value of the same structure, as
    jsonb equality has it on both backends: members by name in any order,
    numbers by value, lists in order, never a boolean for a number."""
    values: dict[str, Any] = {
        "l": {"tags": ["draft", 1, {"a": True, "b": [2.5, None]}]},
        "e": {"tags": []},
        "o": {"tags": {"x": 1, "y": {"z": "w"}}},
        "n": {"tags": [1.0]},
        "b": {"tags": [True]},
        "s": {"tags": '["draft"]'},  # a string holding JSON text is a string
        "d": {"tags": "draft"},
    }
    for key, value in values.items():
        await db.memory.put_memory("user:a", key, value, "semantic", by="a", task_id=task_id)
    assert await keys(db, filter={"tags": ["draft", 1, {"b": [2.5, None], "a": True}]}) == ["l"]
    assert await keys(db, filter={"tags": ["draft", 1.0, {"a": True, "b": [2.5, None]}]}) == ["l"]
    assert await keys(db, filter={"tags": [1, "draft", {"a": True, "b": [2.5, None]}]}) == []
    assert await keys(db, filter={"tags": ["draft", 1, {"a": True, "b": [2.5]}]}) == []
    assert await keys(db, filter={"tags": ["draft", 1, {"a": 1, "b": [2.5, None]}]}) == []
    assert await keys(db, filter={"tags": ["draft"]}) == []
    assert await keys(db, filter={"tags": []}) == ["e"]
    assert await keys(db, filter={"tags": [1]}) == ["n"]  # 1 is 1.0, never true
    assert await keys(db, filter={"tags": [True]}) == ["b"]
    assert await keys(db, filter={"tags": {"$eq": {"y": {"z": "w"}, "x": 1.0}}}) == ["o"]
    assert await keys(db, filter={"tags": {"$eq": {"x": 1}}}) == []
    assert await keys(db, filter={"tags": {"$eq": {}}}) == []
    assert await keys(db, filter={"tags": {"$ne": [1]}}) == ["b", "d", "e", "l", "o", "s"]
    assert await keys(db, filter={"tags": {"$in": [[1], {"x": 1, "y": {"z": "w"}}, "draft"]}}) == [
        "d", "n", "o",
    ]  # fmt: skip
    assert await keys(db, filter={"tags.y": {"$eq": {"z": "w"}}}) == ["o"]
    assert await keys(db, filter={"missing": []}) == []


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"a": {"$regex": "x"}}, "unknown operator"),
        ({"": 1}, "non-empty"),
        ({"a..b": 1}, "empty segment"),
        ({"a": {}}, "empty operator"),
        ({"a": {"$lt": "x\x00"}}, "filter"),
        ({"a": {"$in": 3}}, r"\$in"),
        ({"a": {"$gt": None}}, "numbers or strings"),
        ({"a": {"$lt": True}}, "numbers or strings"),
        ({"a": {"$gt": [1]}}, "scalars"),
        ({"a": [float("nan")]}, "filter"),
        ({"a": {"$eq": {"b": "x\x00"}}}, "NUL"),
        ({"a": {"$in": [[2**64]]}}, "64 bits"),
        ({"a": (1, 2)}, "filter"),
        ({"a": b"x"}, "filter"),
        ({'a"b': 1}, "may not contain"),
        ({1: 1}, "non-empty strings"),
        ("status=open", "dict"),
        ({"\ud800": 1}, "not valid text"),
        ({"a.b\udfff.c": {"$in": [1]}}, "not valid text"),
        ({".".join(["a"] * 101): 1}, "101 levels"),
        ({".".join(["a"] * 5000): {"$ne": 1}}, "5000 levels"),
    ],
)
async def test_bad_filters_are_validation_errors(db: Database, filter: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        await db.memory.search_memories("user:a", filter=filter)


async def test_a_filter_reaches_the_deepest_member_a_value_may_have(
    db: Database, task_id: str
) -> None:
    """A value nests at most ``MAX_JSON_DEPTH`` objects; a dotted name of as
    many segments reaches its innermost member (deeper ones are refused above)."""
    value: Any = "bottom"
    for _ in range(MAX_JSON_DEPTH):
        value = {"a": value}
    await db.memory.put_memory("user:a", "deep", value, "semantic", by="u", task_id=task_id)
    path = ".".join(["a"] * MAX_JSON_DEPTH)
    assert await keys(db, filter={path: "bottom"}) == ["deep"]
    assert await keys(db, filter={path: {"$ne": "bottom"}}) == []


async def test_a_filter_of_the_most_conditions_allowed_runs_on_every_backend(
    db: Database, task_id: str
) -> None:
    """Up to MAX_FILTER_CONDITIONS operators and ``$in`` options, the same
    answer on both backends (SQLite refuses an expression more than 1,000 deep:
    a long ``$in`` or many terms must not become one); one more is refused
    on both, by name, before any SQL."""
    most = MAX_FILTER_CONDITIONS
    fields = {f"f{i}": i for i in range(most - 1)}
    await db.memory.put_memory("user:a", "wide", fields, "semantic", by="u", task_id=task_id)
    await _seed(db, task_id)
    options = [*range(10, 10 + most - 1), 5]
    every = {f"f{i}": {"$gte": i} for i in range(most - 1)}
    for refresh_ttl in (False, True):
        found = await keys(db, filter={"priority": {"$in": options}}, refresh_ttl=refresh_ttl)
        assert found == ["n2"]
        assert await keys(db, filter={**every, "f0": 0}, refresh_ttl=refresh_ttl) == ["wide"]
        ne = {**{f"f{i}": {"$ne": -1} for i in range(1, most)}, "f0": 0}
        assert await keys(db, filter=ne, refresh_ttl=refresh_ttl) == ["wide"]
    too_many: list[dict[str, Any]] = [
        {"priority": {"$in": [*options, 6]}},
        {**every, "f0": {"$gte": 0, "$lt": 1, "$ne": 5}},
        {"a": {"$in": list(range(most))}, "b": 1},
    ]
    for filter in too_many:
        with pytest.raises(ValidationError, match=f"{most + 1} conditions"):
            await db.memory.search_memories("user:a", filter=filter)


async def test_pages_concatenate_to_the_whole_subtree(
    db: Database, task_id: str, clock: Clock
) -> None:
    # A frozen clock: every version has the same updated_at, so only the
    # tie-breaker orders them.
    for i in range(23):
        await db.memory.put_memory(
            f"user:p:{i % 3}", f"k{i}", {"i": i, "even": i % 2 == 0}, "semantic",
            by="a", task_id=task_id,
        )  # fmt: skip
    whole = await db.memory.search_memories("user:p", limit=1000)
    assert len(whole) == 23
    for size in (1, 4, 7, 23):
        pages: list[dict[str, Any]] = []
        for offset in range(0, 30, size):
            pages += await db.memory.search_memories("user:p", limit=size, offset=offset)
        assert [r["id"] for r in pages] == [r["id"] for r in whole]
    evens = await db.memory.search_memories("user:p", limit=1000, filter={"even": True})
    paged: list[dict[str, Any]] = []
    for offset in range(0, 12, 5):
        paged += await db.memory.search_memories(
            "user:p", limit=5, offset=offset, filter={"even": True}
        )
    assert [r["id"] for r in paged] == [r["id"] for r in evens]
    assert len(evens) == 12
    with pytest.raises(ValidationError, match="offset"):
        await db.memory.search_memories("user:p", offset=-1)
    with pytest.raises(ValidationError, match="limit"):
        await db.memory.search_memories("user:p", limit=1001)


@pytest.mark.parametrize("offset", [2**31 - 1, 2**31, 2**63 - 11, 2**63 - 1])
@pytest.mark.parametrize("filtered", [False, True])
async def test_an_offset_past_every_row_is_an_empty_page(
    db: Database, task_id: str, offset: int, filtered: bool
) -> None:
    """Any offset up to 2**63 - 1 is valid; past the rows it gives no rows, on
    both backends (it overflowed SQLite's 64-bit integers and PostgreSQL's
    int4 parameters of the search function)."""
    await db.memory.put_memory("user:o", "k", {"v": 1}, "semantic", by="a", task_id=task_id)
    where = {"v": {"$gte": 1}} if filtered else None
    assert len(await db.memory.search_memories("user:o", filter=where)) == 1
    assert await db.memory.search_memories("user:o", limit=10, offset=offset, filter=where) == []


# ------------------------------------------------------------------ list_namespaces


async def test_list_namespaces(db: Database, task_id: str) -> None:
    for ns in ("user:alice", "user:alice:prefs", "user:alice2", "user:bob:prefs", "app:x:prefs"):
        await db.memory.put_memory(ns, "k", {}, "semantic", by="a", task_id=task_id)
    await db.memory.put_memory("user:gone", "k", {}, "semantic", by="a", task_id=task_id)
    await db.memory.delete_memory("user:gone", "k", "a", task_id)
    listed = db.memory.list_namespaces
    assert await listed() == [
        "app:x:prefs",
        "user:alice",
        "user:alice2",
        "user:alice:prefs",
        "user:bob:prefs",
    ]
    assert await listed("user:alice") == ["user:alice", "user:alice:prefs"]
    assert await listed("user") == [
        "user:alice",
        "user:alice2",
        "user:alice:prefs",
        "user:bob:prefs",
    ]
    assert await listed(suffix="prefs") == ["app:x:prefs", "user:alice:prefs", "user:bob:prefs"]
    assert await listed(suffix="alice:prefs") == ["user:alice:prefs"]
    assert await listed(suffix="refs") == []
    assert await listed(max_depth=1) == ["app", "user"]
    assert await listed("user", max_depth=2) == ["user:alice", "user:alice2", "user:bob"]
    assert await listed(limit=2) == ["app:x:prefs", "user:alice"]
    assert await listed(limit=2, offset=2) == ["user:alice2", "user:alice:prefs"]
    assert await listed(limit=2, offset=4) == ["user:bob:prefs"]
    assert await listed("user", max_depth=2, limit=1, offset=1) == ["user:alice2"]
    assert await listed("session") == []
    with pytest.raises(ValidationError):
        await listed("temp:x")
    with pytest.raises(ValidationError, match="empty segment"):
        await listed(suffix="a::b")
    with pytest.raises(ValidationError, match="limit"):
        await listed(limit=0)
    with pytest.raises(ValidationError, match="max_depth"):
        await listed(max_depth=0)


# ------------------------------------------------------------------ TTL


async def test_expired_keys_are_invisible_at_once(db: Database, task_id: str, clock: Clock) -> None:
    memory = db.memory
    await memory.add_memory("user:a", "short", {"v": 1}, "semantic", "a", task_id,
                            ttl=timedelta(seconds=10))  # fmt: skip
    await memory.put_memory("user:a:b", "long", {"v": 2}, "semantic", by="a", task_id=task_id,
                            ttl=timedelta(hours=1))  # fmt: skip
    await memory.put_memory("user:a", "forever", {"v": 3}, "semantic", by="a", task_id=task_id)
    assert (await memory.get_memory("user:a", "short")) is not None
    clock.advance(timedelta(seconds=10))  # expiry is inclusive: at expires_at it is gone
    assert await memory.get_memory("user:a", "short") is None
    assert sorted(r["key"] for r in await memory.search_memories("user")) == ["forever", "long"]
    history = await memory.get_memory_history("user:a", "short")
    assert [(h["version"], h["is_deleted"]) for h in history] == [(1, False)]
    assert (await memory.get_memory("user:a", "short", version=1)) is not None
    clock.advance(timedelta(hours=1))
    assert await memory.list_namespaces() == ["user:a"]
    assert await memory.get_memory("user:a:b", "long") is None
    # An expired key behaves as deleted to writes too.
    with pytest.raises(NotFoundError):
        await memory.update_memory("user:a", "short", {}, "a", task_id)
    with pytest.raises(NotFoundError):
        await memory.delete_memory("user:a", "short", "a", task_id)
    row = await memory.add_memory("user:a", "short", {"v": 9}, "episodic", "b", task_id)
    again = await memory.get_memory("user:a", "short")
    assert again is not None and (again["id"], again["version"], again["created_by"]) == (
        row,
        2,
        "b",
    )
    history = await memory.get_memory_history("user:a", "short")
    assert [(h["version"], h["is_deleted"]) for h in history] == [(1, True), (2, False)]
    clock.advance(timedelta(days=365))
    assert await memory.get_memory("user:a", "short") is not None  # no TTL this time
    with pytest.raises(AlreadyExistsError):
        await memory.add_memory("user:a", "forever", {}, "semantic", "a", task_id)


async def test_each_write_sets_or_clears_the_expiry(
    db: Database, task_id: str, clock: Clock
) -> None:
    memory = db.memory
    await memory.put_memory("user:a", "k", {}, "semantic", by="a", task_id=task_id,
                            ttl=timedelta(seconds=10))  # fmt: skip
    clock.advance(timedelta(seconds=9))
    await memory.update_memory("user:a", "k", {"v": 2}, "a", task_id, ttl=timedelta(seconds=5))
    clock.advance(timedelta(seconds=4))
    assert await memory.get_memory("user:a", "k") is not None  # 13 s after the first write
    await memory.update_memory("user:a", "k", {"v": 3}, "a", task_id)  # no ttl: never expires
    clock.advance(timedelta(days=1000))
    assert await memory.get_memory("user:a", "k") is not None
    assert await count(db, MemoryExpiry) == 0
    # restore keeps the key's expiry as it is
    await memory.put_memory("user:a", "k", {"v": 4}, "semantic", by="a", task_id=task_id,
                            ttl=timedelta(seconds=10))  # fmt: skip
    await memory.restore_memory("user:a", "k", 1, "a", task_id)
    clock.advance(timedelta(seconds=10))
    assert await memory.get_memory("user:a", "k") is None


async def test_refresh_ttl_moves_expiry_without_a_version(
    db: Database, task_id: str, clock: Clock
) -> None:
    memory = db.memory
    ttl = timedelta(seconds=10)
    await memory.put_memory("user:a", "k", {"v": 1}, "semantic", by="a", task_id=task_id, ttl=ttl)
    await memory.put_memory("user:a", "j", {"v": 2}, "semantic", by="a", task_id=task_id, ttl=ttl)
    audited = await count(db, AuditEntry)
    clock.advance(timedelta(seconds=8))
    got = await memory.get_memory("user:a", "k", refresh_ttl=True)
    assert got is not None and got["version"] == 1
    found = await memory.search_memories("user:a", refresh_ttl=True, filter={"v": 2})
    assert [r["key"] for r in found] == ["j"]
    clock.advance(timedelta(seconds=8))  # 16 s after writing, 8 s after the refresh
    assert await memory.get_memory("user:a", "k") is not None
    assert await memory.get_memory("user:a", "j") is not None
    clock.advance(timedelta(seconds=2))
    assert await memory.get_memory("user:a", "k") is None
    assert await memory.get_memory("user:a", "k", refresh_ttl=True) is None  # too late
    assert await count(db, AuditEntry) == audited
    assert await count(db, MemoryEntry) == 2


async def test_refresh_ttl_stops_at_the_latest_expiry_a_datetime_holds(
    db: Database, task_id: str, clock: Clock
) -> None:
    """A TTL valid when written may later reach past the year 9999: a refresh
    then sets the latest expiry there is, as a read must not fail for it."""
    memory = db.memory
    latest = datetime.max.replace(tzinfo=UTC)
    ttl = latest - clock.now - timedelta(seconds=1)
    await memory.put_memory("user:a", "k", {"v": 1}, "semantic", by="a", task_id=task_id, ttl=ttl)
    clock.advance(timedelta(days=365))
    got = await memory.get_memory("user:a", "k", refresh_ttl=True)
    assert got is not None and got["version"] == 1
    found = await memory.search_memories("user:a", refresh_ttl=True)
    assert [r["key"] for r in found] == ["k"]
    clock.advance(timedelta(days=365))
    assert await memory.get_memory("user:a", "k") is not None


async def test_sweep_expired_soft_deletes_with_one_audit_row_each(
    db: Database, task_id: str, clock: Clock
) -> None:
    memory = db.memory
    for i in range(3):
        await memory.put_memory(f"user:s{i}", "k", {"i": i}, "semantic", by="a",
                                task_id=task_id, ttl=timedelta(seconds=10 * (i + 1)))  # fmt: skip
    await memory.put_memory("user:s9", "k", {}, "semantic", by="a", task_id=task_id)
    before = len(await audit_rows(db))
    assert await memory.sweep_expired() == 0
    clock.advance(timedelta(seconds=20))
    assert await memory.sweep_expired() == 2
    assert await memory.sweep_expired(task_id=task_id) == 0
    clock.advance(timedelta(seconds=10))
    assert await memory.sweep_expired(task_id=task_id) == 1
    audit = (await audit_rows(db))[before:]
    assert [(op, action, task, data["key"]) for op, action, task, data in audit] == [
        ("delete", "memory_expire", SYSTEM_TASK_ID, "k"),
        ("delete", "memory_expire", SYSTEM_TASK_ID, "k"),
        ("delete", "memory_expire", task_id, "k"),
    ]
    for i in range(3):
        history = await memory.get_memory_history(f"user:s{i}", "k")
        assert [h["is_deleted"] for h in history] == [True]
    assert await memory.list_namespaces() == ["user:s9"]
    assert await count(db, MemoryExpiry) == 0
    with pytest.raises(NotFoundError):
        await memory.sweep_expired(task_id="no-such-task")


# ------------------------------------------------------------------ scopes


async def test_scoped_memory_exposes_the_new_calls(db: Database, task_id: str) -> None:
    ctx = AccessContext(session_id="s1", user_id="alice", app_name="app")
    scoped = db.memory.scoped(ctx)
    await scoped.put_memory("user:alice:p", "k", {"a": 1}, "semantic", by="a", task_id=task_id,
                            ttl=timedelta(hours=1))  # fmt: skip
    await db.memory.put_memory("app:app", "k", {"a": 1}, "semantic", by="a", task_id=task_id)
    await db.memory.put_memory("user:bob", "k", {"a": 1}, "semantic", by="a", task_id=task_id)
    with pytest.raises(AccessDeniedError):
        await scoped.put_memory("user:bob", "k", {}, "semantic", by="a", task_id=task_id)
    with pytest.raises(AccessDeniedError):
        await scoped.put_memory("app:app", "k", {}, "semantic", by="a", task_id=task_id)
    assert [r["key"] for r in await scoped.search_memories("app:app", filter={"a": 1})] == ["k"]
    with pytest.raises(AccessDeniedError):
        await scoped.search_memories("app:app", refresh_ttl=True)  # moving expiry is a write
    with pytest.raises(AccessDeniedError):
        await scoped.get_memory("app:app", "k", refresh_ttl=True)
    assert await scoped.get_memory("user:alice:p", "k", refresh_ttl=True) is not None
    with pytest.raises(AccessDeniedError):
        await scoped.list_namespaces("user:bob")
    assert await scoped.list_namespaces() == ["app:app", "user:alice:p"]
    assert await scoped.list_namespaces(max_depth=1) == ["app", "user"]
    assert await scoped.list_namespaces(limit=1, offset=1) == ["user:alice:p"]
    assert await scoped.list_namespaces("user:alice") == ["user:alice:p"]
    with pytest.raises(ValidationError):
        await scoped.list_namespaces(limit=0)


def test_postgres_string_orderings_compare_in_byte_order() -> None:
    """Strings order by code point on both backends. On PostgreSQL a text
    comparison takes the database's default collation unless told otherwise,
    and test servers often default to C.UTF-8, where behaviour cannot show the
    difference; so the compiled condition itself must name "C"."""
    (term,) = parse_filter({"name": {"$gt": "a"}})
    sql = str(_pg_term(term, "f0").compile(dialect=postgresql.dialect()))
    assert 'COLLATE "C"' in sql, sql
    assert "jsonb_typeof" in sql, sql
