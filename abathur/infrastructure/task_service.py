"""TaskService: the Milestone 1 rows that sessions and memory refer to.

Tasks, agents and checkpoints are owned by the orchestrator; abathur stores
them so that sessions can link tasks and memory writes can name the task that
made them (every audit row needs one).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import orm

from abathur.db.storage import Storage
from abathur.domain import count_arg, text_arg, validated
from abathur.domain.core import (
    AgentRecord,
    AuditRecord,
    CheckpointRecord,
    NewAgent,
    NewAuditEntry,
    NewTask,
    TaskRecord,
)
from abathur.domain.values import task_id_arg
from abathur.repositories.agents import AgentRepository
from abathur.repositories.audit import AuditRepository
from abathur.repositories.base import require
from abathur.repositories.checkpoints import CheckpointRepository
from abathur.repositories.tasks import TaskRepository
from abathur.schema.models import Agent, MemoryEntry, Session, Task
from abathur.strict_json import check_json


class TaskService:
    """Tasks, agents, checkpoints and free-form audit rows (Milestone 1 tables)."""

    def __init__(self, db: Storage):
        self._db = db

    async def create_task(self, prompt: str, **fields: Any) -> TaskRecord:
        """Create a task; ``session_id`` links it to a session. Returns the stored row."""
        new = validated(NewTask, prompt=prompt, **fields)
        check_json(new.input_data, "input_data")
        task_id = new.id or uuid.uuid4().hex

        def work(session: orm.Session) -> TaskRecord:
            row = TaskRepository(session).create(new, task_id)
            return TaskRecord.model_validate(row)

        return await self._db.run(work)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """The task with this id, or None."""
        task_id = task_id_arg(task_id)

        def work(session: orm.Session) -> TaskRecord | None:
            row = TaskRepository(session).get(task_id)
            return None if row is None else TaskRecord.model_validate(row)

        return await self._db.run(work, write=False)

    async def list_session_tasks(self, session_id: str) -> list[TaskRecord]:
        """The tasks linked to ``session_id``, newest first."""
        text_arg(session_id, "session_id")

        def work(session: orm.Session) -> list[TaskRecord]:
            rows = TaskRepository(session).list_for_session(session_id)
            return [TaskRecord.model_validate(r) for r in rows]

        return await self._db.run(work, write=False)

    async def create_agent(
        self, name: str, specialization: str, model: str, task_id: str, **fields: Any
    ) -> AgentRecord:
        """Create an agent working on ``task_id``; returns the stored row."""
        new = validated(
            NewAgent,
            name=name,
            specialization=specialization,
            model=model,
            task_id=task_id,
            **fields,
        )
        check_json(new.resource_usage, "resource_usage")
        agent_id = new.id or uuid.uuid4().hex

        def work(session: orm.Session) -> AgentRecord:
            row = AgentRepository(session).create(new, agent_id)
            return AgentRecord.model_validate(row)

        return await self._db.run(work)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The agent with this id, or None."""
        text_arg(agent_id, "agent_id")

        def work(session: orm.Session) -> AgentRecord | None:
            row = AgentRepository(session).get(agent_id)
            return None if row is None else AgentRecord.model_validate(row)

        return await self._db.run(work, write=False)

    async def save_checkpoint(
        self, task_id: str, iteration: int, state: Any, *, session_id: str | None = None
    ) -> CheckpointRecord:
        """Store ``state`` as iteration ``iteration`` of ``task_id``; returns the stored row."""
        task_id = task_id_arg(task_id)
        count_arg(iteration, "iteration", least=0)
        if session_id is not None:
            text_arg(session_id, "session_id")
        check_json(state, "checkpoint state")

        def work(session: orm.Session) -> CheckpointRecord:
            require(session, Task, task_id, "task")
            if session_id is not None:
                require(session, Session, session_id, "session")
            row = CheckpointRepository(session).save(task_id, iteration, state, session_id)
            return CheckpointRecord.model_validate(row)

        return await self._db.run(work)

    async def latest_checkpoint(self, task_id: str) -> CheckpointRecord | None:
        """The checkpoint of ``task_id`` with the highest iteration, or None."""
        task_id = task_id_arg(task_id)

        def work(session: orm.Session) -> CheckpointRecord | None:
            row = CheckpointRepository(session).latest(task_id)
            return None if row is None else CheckpointRecord.model_validate(row)

        return await self._db.run(work, write=False)

    async def record_audit(self, task_id: str, action_type: str, **fields: Any) -> AuditRecord:
        """Append a free-form audit row (memory operations write their own)."""
        entry = validated(NewAuditEntry, task_id=task_id, action_type=action_type, **fields)
        check_json(entry.action_data, "action_data")

        def work(session: orm.Session) -> AuditRecord:
            require(session, Task, entry.task_id, "task")
            if entry.agent_id is not None:
                require(session, Agent, entry.agent_id, "agent")
            if entry.memory_entry_id is not None:
                require(session, MemoryEntry, entry.memory_entry_id, "memory entry")
            row = AuditRepository(session).append(entry)
            return AuditRecord.model_validate(row)

        return await self._db.run(work)

    async def audit_for_task(self, task_id: str, limit: int = 100) -> list[AuditRecord]:
        """The newest ``limit`` audit rows of ``task_id``."""
        task_id = task_id_arg(task_id)
        count_arg(limit, "limit", least=1)

        def work(session: orm.Session) -> list[AuditRecord]:
            rows = AuditRepository(session).for_task(task_id, limit)
            return [AuditRecord.model_validate(r) for r in rows]

        return await self._db.run(work, write=False)

    async def audit_tail(
        self, namespace_prefix: str | None = None, limit: int = 50
    ) -> list[AuditRecord]:
        """The newest audit rows, optionally only memory operations in a namespace subtree."""
        if namespace_prefix is not None:
            text_arg(namespace_prefix, "namespace_prefix")
        count_arg(limit, "limit", least=1)

        def work(session: orm.Session) -> list[AuditRecord]:
            rows = AuditRepository(session).tail(namespace_prefix, limit)
            return [AuditRecord.model_validate(r) for r in rows]

        return await self._db.run(work, write=False)
