"""Milestone 1 values: tasks, agents, checkpoints and audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import Field

from abathur.domain import Input, Record
from abathur.domain.values import AnyText, Id, RowId, TaskIdValue, Text

TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
AgentState = Literal["idle", "working", "waiting", "terminated"]
MemoryOperation = Literal["create", "update", "delete", "consolidate", "publish"]
TASK_STATUSES: tuple[TaskStatus, ...] = get_args(TaskStatus)
AGENT_STATES: tuple[AgentState, ...] = get_args(AgentState)
MEMORY_OPERATIONS: tuple[MemoryOperation, ...] = get_args(MemoryOperation)


class TaskRecord(Record):
    id: str
    prompt: str
    agent_type: str
    priority: int
    status: TaskStatus
    input_data: Any
    result_data: Any | None
    error_message: str | None
    retry_count: int | None
    max_retries: int | None
    max_execution_timeout_seconds: int | None
    submitted_at: datetime
    last_updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    created_by: str | None
    parent_task_id: str | None
    dependencies: list[str] | None
    session_id: str | None


class NewTask(Input):
    prompt: Text
    id: TaskIdValue | None = None
    agent_type: AnyText = "general"
    priority: int = Field(default=5, ge=1, le=10)
    status: TaskStatus = "pending"
    input_data: dict[str, Any] = Field(default_factory=dict)
    created_by: Id | None = None
    parent_task_id: TaskIdValue | None = None
    dependencies: list[TaskIdValue] | None = None
    session_id: Id | None = None


class AgentRecord(Record):
    id: str
    name: str
    specialization: str
    model: str
    task_id: str
    state: AgentState
    spawned_at: datetime
    terminated_at: datetime | None
    resource_usage: Any | None
    session_id: str | None


class NewAgent(Input):
    name: Text
    specialization: AnyText
    model: AnyText
    task_id: TaskIdValue
    id: Id | None = None
    state: AgentState = "idle"
    resource_usage: dict[str, Any] | None = None
    session_id: Id | None = None


class CheckpointRecord(Record):
    task_id: str
    iteration: int
    state: Any
    created_at: datetime
    session_id: str | None


class AuditRecord(Record):
    id: int
    timestamp: datetime
    agent_id: str | None
    task_id: str
    action_type: str
    action_data: Any | None
    result: str | None
    memory_operation_type: MemoryOperation | None
    memory_namespace: str | None
    memory_entry_id: int | None


class NewAuditEntry(Input):
    task_id: TaskIdValue
    action_type: Text
    action_data: Any | None = None
    agent_id: Id | None = None
    result: AnyText | None = None
    memory_operation_type: MemoryOperation | None = None
    memory_namespace: Id | None = None
    memory_entry_id: RowId | None = None
