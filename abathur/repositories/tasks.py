"""Tasks: the units of work an orchestrator runs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import orm, select

from abathur.domain.clock import utcnow
from abathur.domain.core import NewTask
from abathur.repositories.base import exists_query, flush_new, require
from abathur.schema.models import Session, Task


class TaskRepository:
    def __init__(self, session: orm.Session):
        self.session = session

    def create(self, new: NewTask, task_id: str) -> Task:
        if new.parent_task_id is not None:
            require(self.session, Task, new.parent_task_id, "parent task")
        if new.session_id is not None:
            require(self.session, Session, new.session_id, "session")
        now = utcnow()
        row = Task(
            id=task_id,
            **new.model_dump(exclude={"id"}),
            submitted_at=now,
            last_updated_at=now,
        )
        flush_new(self.session, row, f"task {task_id!r}")
        return row

    def get(self, task_id: str) -> Task | None:
        return self.session.get(Task, task_id)

    def exists(self, task_id: str) -> bool:
        return exists_query(Task).scalar(self.session, {"key": task_id}) is not None

    def list_for_session(self, session_id: str) -> Sequence[Task]:
        query = select(Task).where(Task.session_id == session_id).order_by(Task.submitted_at.desc())
        return (self.session.scalars(query)).all()
