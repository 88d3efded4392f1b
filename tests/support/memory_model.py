"""Plain-Python twins of what MemoryService evaluates in SQL, written
independently of it: value filters, namespace listing, and a clock tests control."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

_MISSING = object()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _at(document: Any, field: str) -> Any:
    for segment in field.split("."):
        if not isinstance(document, dict) or segment not in document:
            return _MISSING
        document = document[segment]
    return document


def _same(a: Any, b: Any) -> bool:
    """JSON equality: same types all the way down (``True`` is not ``1``),
    numbers by value, object members by name, list elements in order."""
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _equal(found: Any, operand: Any) -> bool:
    return found is not _MISSING and _same(found, operand)


def _holds(found: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return _equal(found, operand)
    if operator == "$ne":
        return not _equal(found, operand)
    if operator == "$in":
        return any(_equal(found, option) for option in operand)
    if found is _MISSING or _kind(found) != _kind(operand):
        return False
    if operator == "$gt":
        return bool(found > operand)
    if operator == "$gte":
        return bool(found >= operand)
    if operator == "$lt":
        return bool(found < operand)
    assert operator == "$lte", operator
    return bool(found <= operand)


def matches(value: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    """Does ``value`` satisfy ``filter`` (the documented semantics of search_memories)?"""
    for field, condition in (filter or {}).items():
        found = _at(value, field)
        conditions = condition if isinstance(condition, dict) else {"$eq": condition}
        if not all(_holds(found, op, operand) for op, operand in conditions.items()):
            return False
    return True


def list_namespaces(
    live: Iterable[str],
    prefix: str | None = None,
    suffix: str | None = None,
    max_depth: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[str]:
    """list_namespaces over the namespaces of the live keys, by its documented rules."""
    found = set(live)
    if prefix is not None:
        found = {ns for ns in found if ns == prefix or ns.startswith(prefix + ":")}
    if suffix is not None:
        found = {ns for ns in found if ns == suffix or ns.endswith(":" + suffix)}
    if max_depth is not None:
        found = {":".join(ns.split(":")[:max_depth]) for ns in found}
    return sorted(found)[offset : offset + limit]


class Clock:
    """A clock that moves only when told (``advance``), for TTL tests."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@contextmanager
def controlled_clock(start: datetime | None = None) -> Iterator[Clock]:
    """``abathur.domain.clock.utcnow`` replaced by a ``Clock`` while inside."""
    clock = Clock(start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("abathur.domain.clock.utcnow", clock)
        yield clock
