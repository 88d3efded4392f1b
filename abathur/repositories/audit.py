"""The audit trail: one row per memory write and per recorded action."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select, text

from abathur.db.sqlite.prepared import Executor, Prepared
from abathur.domain.clock import utcnow
from abathur.domain.core import NewAuditEntry
from abathur.repositories.base import dialect_name, insert_row
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import AuditEntry
from abathur.strict_json import dumps

_INSERT_MANY = Prepared(insert(AuditEntry))
# PostgreSQL: each column one array parameter (``action_data`` as JSON text).
_PG_CHUNK = 5_000
_AUDIT_ARRAYS = (
    ("task_id", "text"), ("action_type", "text"), ("action_data", "text"), ("result", "text"),
    ("memory_operation_type", "text"), ("memory_namespace", "text"),
    ("memory_entry_id", "bigint"),
)  # fmt: skip
_INSERT_MANY_PG = text(
    "INSERT INTO audit (timestamp, task_id, action_type, action_data, result, "
    "memory_operation_type, memory_namespace, memory_entry_id) "
    "SELECT CAST(:timestamp AS timestamptz), t.task_id, t.action_type, "
    "CAST(t.action_data AS jsonb), t.result, t.memory_operation_type, t.memory_namespace, "
    "t.memory_entry_id FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _AUDIT_ARRAYS)
    + ") WITH ORDINALITY AS t("
    + ", ".join(name for name, _ in _AUDIT_ARRAYS)
    + ", n) ORDER BY t.n"
)


class AuditRepository:
    def __init__(self, executor: Executor):
        self.executor = executor

    def append(self, entry: NewAuditEntry) -> AuditEntry:
        row = AuditEntry(**entry.model_dump(), timestamp=utcnow())
        insert_row(self.executor, row)
        return row

    def append_many(
        self, columns: Mapping[str, Sequence[Any]], *, nul_checked: bool = False
    ) -> None:
        """Many audit rows in one executemany, given column by column: the
        columns of ``NewAuditEntry`` (values already valid), one sequence of
        a value per row each, all the same length; all stamped now.
        ``nul_checked``: the caller vouches that no text of theirs contains
        NUL (``Prepared.execute_columns``)."""
        count = len(columns["task_id"])
        if not count:
            return
        now = utcnow()
        if dialect_name(self.executor) == "postgresql":
            for start in range(0, count, _PG_CHUNK):
                params: dict[str, Any] = {
                    name: list(columns[name][start : start + _PG_CHUNK])
                    for name, _ in _AUDIT_ARRAYS
                }
                params["action_data"] = [dumps(data) for data in params["action_data"]]
                self.executor.execute(_INSERT_MANY_PG, {**params, "timestamp": now})
            return
        _INSERT_MANY.execute_columns(
            self.executor, {**columns, "timestamp": [now] * count}, nul_checked=nul_checked
        )

    def for_task(self, task_id: str, limit: int = 100) -> Sequence[AuditEntry]:
        query = (
            select(AuditEntry)
            .where(AuditEntry.task_id == task_id)
            .order_by(AuditEntry.timestamp.desc(), AuditEntry.id.desc())
            .limit(limit)
        )
        return (self.executor.scalars(query)).all()

    def tail(self, namespace_prefix: str | None = None, limit: int = 50) -> Sequence[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.timestamp.desc(), AuditEntry.id.desc())
        if namespace_prefix is not None:
            query = query.where(in_subtree(AuditEntry.memory_namespace, namespace_prefix))
        return (self.executor.scalars(query.limit(limit))).all()
