"""The audit trail: one row per memory write and per recorded action."""

from __future__ import annotations

from collections.abc import Sequence
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

    def append_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many audit rows in one executemany: dicts of the columns of
        ``NewAuditEntry`` (already valid; all with the same keys), each stamped
        now (in place)."""
        if not rows:
            return
        now = utcnow()
        if dialect_name(self.executor) == "postgresql":
            for start in range(0, len(rows), _PG_CHUNK):
                chunk = rows[start : start + _PG_CHUNK]
                params: dict[str, Any] = {
                    name: [row[name] for row in chunk] for name, _ in _AUDIT_ARRAYS
                }
                params["action_data"] = [dumps(data) for data in params["action_data"]]
                self.executor.execute(_INSERT_MANY_PG, {**params, "timestamp": now})
            return
        for row in rows:
            row["timestamp"] = now
        _INSERT_MANY.execute_many(self.executor, rows)

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
