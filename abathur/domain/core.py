"""Milestone 1 values: tasks, agents, checkpoints and audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
AgentState = Literal["idle", "working", "waiting", "terminated"]
MemoryOperation = Literal["create", "update", "delete", "consolidate", "publish"]


class Record(BaseModel):
    """A row read back from the database."""

    model_config = ConfigDict(from_attributes=True, frozen=True)


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


class NewTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    id: str | None = Field(default=None, min_length=1)
    agent_type: str = "general"
    priority: int = Field(default=5, ge=1, le=10)
    status: TaskStatus = "pending"
    input_data: dict[str, Any] = Field(default_factory=dict)
    created_by: str | None = None
    parent_task_id: str | None = None
    dependencies: list[str] | None = None
    session_id: str | None = None


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


class NewAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    specialization: str
    model: str
    task_id: str
    id: str | None = Field(default=None, min_length=1)
    state: AgentState = "idle"
    resource_usage: dict[str, Any] | None = None
    session_id: str | None = None


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


class NewAuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str
    action_type: str = Field(min_length=1)
    action_data: Any | None = None
    agent_id: str | None = None
    result: str | None = None
    memory_operation_type: MemoryOperation | None = None
    memory_namespace: str | None = None
    memory_entry_id: int | None = None
