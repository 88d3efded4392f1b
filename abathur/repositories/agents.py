"""Agents: the workers spawned for a task."""

from __future__ import annotations

from sqlalchemy import orm

from abathur.domain.clock import utcnow
from abathur.domain.core import NewAgent
from abathur.repositories.base import flush_new, require
from abathur.schema.models import Agent, Session, Task


class AgentRepository:
    def __init__(self, session: orm.Session):
        self.session = session

    def create(self, new: NewAgent, agent_id: str) -> Agent:
        require(self.session, Task, new.task_id, "task")
        if new.session_id is not None:
            require(self.session, Session, new.session_id, "session")
        row = Agent(id=agent_id, **new.model_dump(exclude={"id"}), spawned_at=utcnow())
        flush_new(self.session, row, f"agent {agent_id!r}")
        return row

    def get(self, agent_id: str) -> Agent | None:
        return self.session.get(Agent, agent_id)
