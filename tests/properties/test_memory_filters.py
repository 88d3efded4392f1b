"""search_memories filters evaluated in SQL select exactly what the same
filter selects evaluated in Python (tests/support/memory_model.matches), for
generated documents and filters, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abathur.infrastructure.database import Database
from tests.support.memory_model import matches

FIELDS = ["a", "b"]
# Small pools so that equal values (and equal values of different JSON types)
# come up often.
# Mostly a small pool in which values of different JSON types look alike
# (1, 1.0, True, "1", "true", null, "null"...), so that a comparison that
# ignores JSON types shows; sometimes anything.
COLLIDING = st.sampled_from(
    [None, True, False, 0, 1, -1, 2, 0.0, -0.0, 1.0, 2.5, "", "0", "1", "true", "null",
     "a", "b", "A", "ab", "é", "✓"]
)  # fmt: skip
SCALARS = st.one_of(
    COLLIDING,
    COLLIDING,
    COLLIDING,
    st.integers(min_value=-(2**53), max_value=2**53),
    st.sampled_from([1e300, -1e-300, 3.0000000000000004, 0.1, 0.30000000000000004]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(alphabet="ab1é✓ ", max_size=3),
)
LEAVES = SCALARS | st.lists(SCALARS, max_size=3)
# List and object operands (equal to stored values of the same structure).
CONTAINERS = st.lists(COLLIDING, max_size=2) | st.dictionaries(
    st.sampled_from(FIELDS), COLLIDING | st.lists(COLLIDING, max_size=2), max_size=2
)
VALUES = st.dictionaries(
    st.sampled_from(FIELDS),
    LEAVES | st.dictionaries(st.sampled_from(FIELDS), LEAVES, max_size=3),
    max_size=3,
)
PATHS = ["a", "b", "c", "a.b", "b.a", "a.a.a"]


def twins(value: Any) -> list[Any]:
    """Values of other JSON types (or the other number type) that look like
    ``value``: what a comparison ignoring JSON types would confuse with it."""
    if value is None:
        return ["null", 0, False, ""]
    if isinstance(value, bool):
        return [int(value), float(value), str(value).lower(), str(int(value))]
    if isinstance(value, int | float):
        out: list[Any] = [str(value), float(value), value + 1, value - 0.5]
        if value in (0, 1):
            out.append(bool(value))
        if float(value).is_integer() and abs(value) < 2**53:
            out.append(int(value))
        return out
    if isinstance(value, list):
        # Reordered, shortened, and each element replaced by a look-alike.
        out = [value[::-1], value[:-1], [*value, None]]
        return out + [
            [*value[:i], twin, *value[i + 1 :]] for i, v in enumerate(value) for twin in twins(v)
        ]
    if isinstance(value, dict):
        # The same members in another order (equal), one member dropped or
        # replaced by a look-alike (not equal).
        items = list(value.items())
        out = [dict(items[::-1]), dict(items[:-1]), {**value, "z": 1}]
        return out + [{**value, k: twin} for k, v in items for twin in twins(v)]
    if isinstance(value, str):
        out = [value + "a", value[:-1], "null" if value == "" else value.upper()]
        if value.isascii() and value.lstrip("-").isdigit():
            out.append(int(value))
        return out + (["true", True] if value == "true" else [])
    return []


def leaves(document: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (dotted path, value) in a document: scalars, lists' elements, and
    the nested lists and objects themselves."""
    if isinstance(document, dict):
        return [(path, document)] * bool(path) + [
            found
            for key, child in document.items()
            for found in leaves(child, f"{path}.{key}" if path else key)
        ]
    if isinstance(document, list):
        return [(path, document)] + [found for child in document for found in leaves(child, path)]
    return [(path, document)]


def conditions(operands: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    orderable = operands.filter(lambda v: v is not None and not isinstance(v, bool | list | dict))
    return (
        operands.filter(lambda v: not isinstance(v, dict))  # a dict there is operators
        | st.fixed_dictionaries({"$eq": operands})
        | st.fixed_dictionaries({"$ne": operands})
        | st.fixed_dictionaries({"$in": st.lists(operands, max_size=3)})
        | st.dictionaries(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), orderable, min_size=1)
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(VALUES, min_size=1, max_size=8), data=st.data())
async def test_sql_filtering_equals_python_filtering(
    db: Database, task_id: str, values: list[dict[str, Any]], data: st.DataObject
) -> None:
    # Filters mostly name the paths the documents have and compare with the
    # values found there or with look-alikes of another JSON type.
    found = [(p, v) for value in values for p, v in leaves(value)]
    paths = st.sampled_from(sorted({p for p, _ in found} | set(PATHS)))
    near = [v for _, v in found] + [t for _, v in found for t in twins(v)]
    # The lists and objects found and their look-alikes get a branch of their
    # own: among the many scalars they would seldom be drawn.
    structured = [v for v in near if isinstance(v, list | dict)]
    operands = (
        (st.sampled_from(near) if near else COLLIDING)
        | (st.sampled_from(structured) if structured else CONTAINERS)
        | SCALARS
        | CONTAINERS
    )
    filters = data.draw(
        st.lists(st.dictionaries(paths, conditions(operands), min_size=1, max_size=3), max_size=8)
    )
    root = f"user:{uuid.uuid4().hex}"  # one database serves every example
    for i, value in enumerate(values):
        await db.memory.put_memory(
            f"{root}:{i % 2}", f"k{i}", value, "semantic", by="p", task_id=task_id
        )
    for filter in filters:
        got = await db.memory.search_memories(root, limit=1000, filter=filter)
        expected = sorted(f"k{i}" for i, value in enumerate(values) if matches(value, filter))
        assert sorted(r["key"] for r in got) == expected, filter


NESTED = st.recursive(
    COLLIDING, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(FIELDS), inner, max_size=3
    ), max_leaves=6,
)  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stored=st.lists(st.lists(NESTED, max_size=3) | st.dictionaries(
        st.sampled_from(FIELDS), NESTED, max_size=3), min_size=1, max_size=6),
    data=st.data(),
)  # fmt: skip
async def test_list_and_object_equality_equals_python_equality(
    db: Database, task_id: str, stored: list[Any], data: st.DataObject
) -> None:
    """List and object operands, drawn from the stored lists and objects and
    their look-alikes (reordered, an element of the other number type or JSON
    type, one more or one less), select what JSON equality selects."""
    candidates = stored + [t for v in stored for t in twins(v)]
    operands = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=6))
    root = f"user:{uuid.uuid4().hex}"
    for i, value in enumerate(stored):
        await db.memory.put_memory(root, f"k{i}", {"a": value}, "semantic", by="p", task_id=task_id)
    for operand in operands:
        for filter in ({"a": {"$eq": operand}}, {"a": {"$ne": operand}}, {"a": {"$in": [operand]}}):
            got = await db.memory.search_memories(root, limit=1000, filter=filter)
            expected = sorted(
                f"k{i}" for i, value in enumerate(stored) if matches({"a": value}, filter)
            )
            assert sorted(r["key"] for r in got) == expected, filter
