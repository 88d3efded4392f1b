"""Small DDL builders shared by the models and the Alembic revisions.

Revisions run without the models' naming convention, so these builders take
the full constraint name; the models pass the names the convention produces.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Integer, Text, text
from sqlalchemy.types import TypeEngine

# SQLite's 64-bit rowid is INTEGER PRIMARY KEY; PostgreSQL needs BIGINT.
BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
NOW = text("CURRENT_TIMESTAMP")
# Namespaces and document paths are matched by byte-wise ranges (see
# namespaces.py); PostgreSQL's default collation need not be byte order, "C" is.
ByteOrderText: TypeEngine[str] = Text().with_variant(Text(collation="C"), "postgresql")
NamespaceText = ByteOrderText  # the name revision 0002 uses


def one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def json_valid(column: str, name: str, *, nullable: bool = False) -> CheckConstraint:
    """CHECK(json_valid(column)) on SQLite; JSONB (or json) enforces validity on PostgreSQL.

    SQLite's json_valid(NULL) is 0, so a nullable column says so explicitly.
    """
    rule = f"{column} IS NULL OR json_valid({column})" if nullable else f"json_valid({column})"
    return CheckConstraint(rule, name=name).ddl_if(dialect="sqlite")


def partial(sqlite: str, postgresql: str | None = None) -> dict[str, Any]:
    """The WHERE clause of a partial index, for both dialects."""
    return {
        "sqlite_where": text(sqlite),
        "postgresql_where": text(postgresql if postgresql is not None else sqlite),
    }


LIVE_ROWS = partial("is_deleted = 0", "is_deleted = false")
# A key's current version (its highest, deleted or not), and that version when live.
CURRENT_ROW = partial("is_current = 1", "is_current = true")
CURRENT_LIVE_ROWS = partial(
    "is_current = 1 AND is_deleted = 0", "is_current = true AND is_deleted = false"
)
