"""The audit trail: one row per memory write and per recorded action."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select

from abathur.db.sqlite.prepared import Executor, Prepared
from abathur.domain.clock import utcnow
from abathur.domain.core import NewAuditEntry
from abathur.repositories.base import insert_row
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import AuditEntry

_INSERT_MANY = Prepared(insert(AuditEntry))


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
        if rows:
            now = utcnow()
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
