"""Health checks: integrity, foreign keys, query plans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from abathur.errors import DatabaseClosedError, DatabaseError


class _Transactions(Protocol):
    @property
    def is_sqlite(self) -> bool: ...

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[AsyncSession]: ...


async def integrity_check(storage: _Transactions) -> str:
    """``"ok"``, or a description of every problem found (see ``Storage``)."""
    if storage.is_sqlite:
        try:
            async with storage.transaction(write=False) as session:
                result = await session.execute(text("PRAGMA integrity_check"))
                return "\n".join(str(r) for r in result.scalars().all())
        except DatabaseClosedError:
            raise
        except DatabaseError as exc:  # transaction() translated the driver's error
            cause = exc.__cause__
            return f"integrity check could not run: {getattr(cause, 'orig', None) or exc}"
    async with storage.transaction(write=False) as session:
        result = await session.execute(
            text(
                "SELECT conrelid::regclass::text || '.' || conname "
                "FROM pg_constraint WHERE NOT convalidated "
                "AND connamespace = current_schema()::regnamespace"
            )
        )
        rows = result.scalars().all()
        return "ok" if not rows else "not validated: " + ", ".join(rows)


def _reflect_foreign_keys(connection: Connection) -> list[tuple[str, str, str, str]]:
    """(table, column, parent table, parent column) of every single-column foreign key."""
    inspector = inspect(connection)
    return [
        (table, fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0])
        for table in inspector.get_table_names()
        for fk in inspector.get_foreign_keys(table)
        if len(fk["constrained_columns"]) == 1
    ]


async def validate_foreign_keys(storage: _Transactions) -> list[dict[str, Any]]:
    """Every row whose foreign key points at nothing; ``[]`` when consistent."""
    async with storage.transaction(write=False) as session:
        if storage.is_sqlite:
            result = await session.execute(text("PRAGMA foreign_key_check"))
            return [{"table": r[0], "rowid": r[1], "parent": r[2], "fkid": r[3]} for r in result]
        conn = await session.connection()
        foreign_keys = await conn.run_sync(_reflect_foreign_keys)
        violations: list[dict[str, Any]] = []
        for table, column, parent, parent_column in foreign_keys:
            orphans = await conn.exec_driver_sql(
                f'SELECT DISTINCT c."{column}" FROM "{table}" c '
                f'LEFT JOIN "{parent}" p ON p."{parent_column}" = c."{column}" '
                f'WHERE c."{column}" IS NOT NULL AND p."{parent_column}" IS NULL'
            )
            violations.extend(
                {"table": table, "value": value, "parent": parent} for (value,) in orphans
            )
        return violations


async def explain_query_plan(
    storage: _Transactions, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
) -> list[str]:
    """The plan lines of ``sql`` (see ``Storage.explain_query_plan``)."""
    prefix = "EXPLAIN QUERY PLAN " if storage.is_sqlite else "EXPLAIN "
    async with storage.transaction(write=False) as session:
        conn = await session.connection()
        if params is None or isinstance(params, Mapping):
            result = await conn.execute(text(prefix + sql), dict(params or {}))
        else:
            result = await conn.exec_driver_sql(prefix + sql, tuple(params))
        rows = result.all()
    return [str(row[-1] if storage.is_sqlite else row[0]) for row in rows]
