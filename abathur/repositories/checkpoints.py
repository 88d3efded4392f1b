"""Checkpoints: a task's saved state, one row per iteration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import orm, select

from abathur.domain.clock import utcnow
from abathur.repositories.base import flush_new, require
from abathur.schema.models import Checkpoint, Task


class CheckpointRepository:
    def __init__(self, session: orm.Session):
        self.session = session

    def save(self, task_id: str, iteration: int, state: Any, session_id: str | None) -> Checkpoint:
        require(self.session, Task, task_id, "task")
        row = Checkpoint(
            task_id=task_id,
            iteration=iteration,
            state=state,
            session_id=session_id,
            created_at=utcnow(),
        )
        flush_new(self.session, row, f"checkpoint {task_id!r}/{iteration}")
        return row

    def latest(self, task_id: str) -> Checkpoint | None:
        query = (
            select(Checkpoint)
            .where(Checkpoint.task_id == task_id)
            .order_by(Checkpoint.iteration.desc())
            .limit(1)
        )
        return self.session.scalar(query)
