"""Filtered searches run a statement built once per filter shape: the values
``_term_params`` binds are exactly those the term's SQL holds, and searches of
one shape with other values find what those values select, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from abathur.domain.memory import parse_filter
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.repositories.memory import _pg_term, _sqlite_term, _term_params, _term_shape

FILTERS: list[dict[str, Any]] = [
    {"tag": "even"},
    {"n": 3},
    {"n": 2.5},
    {"flag": True},
    {"flag": False},
    {"gone": None},
    {"a.b.c": "deep"},
    {"n": {"$gt": 1, "$lte": 9.5}},
    {"tag": {"$gte": "e"}},
    {"tag": {"$ne": "odd"}},
    {"n": {"$ne": None}},
    {"tag": {"$in": ["even", 1, None, True, 2.5]}},
    {"tag": {"$in": []}},
    {"tags": ["a", 1, {"b": None}]},
    {"o": {"$eq": {"x": [1.5, True]}}},
    {"tags": {"$ne": []}},
    {"tags": {"$in": [["a"], {"b": 1}, "c"]}},
]


@pytest.mark.parametrize("postgres", [False, True])
@pytest.mark.parametrize("filter", FILTERS)
def test_term_params_are_the_values_the_sql_binds(filter: dict[str, Any], postgres: bool) -> None:
    build = _pg_term if postgres else _sqlite_term
    dialect = postgresql.dialect() if postgres else sqlite.dialect()
    for i, term in enumerate(parse_filter(filter)):
        name = f"f{i}"
        bound = build(term, name).compile(dialect=dialect).params
        named = {k: v for k, v in bound.items() if k == name or k.startswith(f"{name}_")}
        assert _term_params(term, name, postgres) == named


def test_shapes_leave_out_values_but_not_types() -> None:
    def shape(f: dict[str, Any]) -> Any:
        return [_term_shape(t) for t in parse_filter(f)]

    assert shape({"a": "x"}) == shape({"b": "y"})
    assert shape({"a": 1}) != shape({"a": "1"})
    assert shape({"a": 1}) != shape({"a": 1.0})
    assert shape({"a": True}) != shape({"a": False})
    assert shape({"a": {"$in": [1, 2]}}) != shape({"a": {"$in": [1]}})
    assert shape({"a.b": 1}) != shape({"a": 1})
    assert shape({"a": ["x"]}) == shape({"a": [1, {"b": 2}]})
    assert shape({"a": ["x"]}) != shape({"a": {"$eq": {"x": 1}}})


async def test_searches_of_one_shape_find_what_their_values_select(db: Database) -> None:
    memory = MemoryService(db)
    task = await db.tasks.create_task("t")
    values = [
        {"tag": "even", "n": 2, "flag": True, "a": {"b": "x"}},
        {"tag": "odd", "n": 3, "flag": False, "a": {"b": "y"}},
        {"tag": "even", "n": 4.5, "flag": True, "a": {"b": "y"}},
    ]
    for i, value in enumerate(values):
        await memory.put_memory("user:u", f"k{i}", value, "semantic", by="w", task_id=task.id)

    async def keys(filter: dict[str, Any]) -> list[str]:
        found = await memory.search_memories("user:u", filter=filter, limit=10)
        return sorted(r["key"] for r in found)

    for _ in range(2):  # the second round runs the statements built by the first
        assert await keys({"tag": "even"}) == ["k0", "k2"]
        assert await keys({"tag": "odd"}) == ["k1"]
        assert await keys({"n": 3}) == ["k1"]
        assert await keys({"n": 2}) == ["k0"]
        assert await keys({"n": 4.5}) == ["k2"]
        assert await keys({"flag": True}) == ["k0", "k2"]
        assert await keys({"flag": False}) == ["k1"]
        assert await keys({"a.b": "y"}) == ["k1", "k2"]
        assert await keys({"n": {"$gt": 2}}) == ["k1", "k2"]
        assert await keys({"n": {"$gt": 3}}) == ["k2"]
        assert await keys({"tag": {"$in": ["odd", 7]}}) == ["k1"]
        assert await keys({"tag": {"$in": ["even", 7]}}) == ["k0", "k2"]
        assert await keys({"tag": "even", "n": {"$lt": 3}}) == ["k0"]
        assert await keys({"tag": "odd", "n": {"$lt": 3}}) == []
        assert await keys({"a": {"$eq": {"b": "y"}}}) == ["k1", "k2"]
        assert await keys({"a": {"$eq": {"b": "x"}}}) == ["k0"]
