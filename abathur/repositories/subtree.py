"""SQL for namespace subtrees: a root and everything below it, by whole segments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, literal, or_
from sqlalchemy.sql.elements import ColumnElement

from abathur.domain.namespaces import subtree_bounds


def in_subtree(column: ColumnElement[Any] | Any, root: str | None = None) -> ColumnElement[bool]:
    """SQL: ``column`` is ``root`` or lies below it, by whole segments.

    Without ``root`` the bounds are bind parameters (``root``, ``lower``,
    ``upper``) for a statement built once and run with ``subtree_bounds()``.
    """
    bound: dict[str, ColumnElement[Any]]
    if root is None:
        bound = {name: bindparam(name) for name in ("root", "lower", "upper")}
    else:
        bound = {name: literal(value) for name, value in subtree_bounds(root).items()}
    return or_(
        column == bound["root"],
        and_(column >= bound["lower"], column < bound["upper"]),
    )
