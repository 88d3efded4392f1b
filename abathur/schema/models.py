"""Declarative models: the single source of truth for the schema.

Every CHECK, UNIQUE, foreign key and index of the two milestone specs lives
here, with the spec's names; the Alembic revisions are written to match and a
test proves that autogenerate finds no difference. JSON columns carry a
``json_valid`` CHECK on SQLite only: on PostgreSQL they are JSONB, which
cannot hold invalid JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from abathur.domain.clock import utcnow
from abathur.domain.core import AGENT_STATES, MEMORY_OPERATIONS, TASK_STATUSES
from abathur.domain.documents import SYNC_STATUSES
from abathur.domain.memory import MEMORY_TYPES
from abathur.domain.sessions import SESSION_STATUSES
from abathur.schema.ddl import (
    CURRENT_LIVE_ROWS,
    CURRENT_ROW,
    LIVE_ROWS,
    NOW,
    BigIntId,
    ByteOrderText,
    json_valid,
    one_of,
    partial,
)
from abathur.schema.types import JSONDocument, JSONLog, UTCDateTime

# The spec asks for AUTOINCREMENT: SQLite then never reuses the id of a deleted row.
AUTOINCREMENT = {"sqlite_autoincrement": True}

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def jv(column: str, *, nullable: bool = False) -> CheckConstraint:
    """The json_valid CHECK of a JSON column, named by the convention."""
    return json_valid(column, name=f"{column}_json", nullable=nullable)


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --------------------------------------------------------------- Milestone 1


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    agent_type: Mapped[str] = mapped_column(Text, default="general", server_default="general")
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default=text("5"))
    status: Mapped[str] = mapped_column(Text)
    input_data: Mapped[Any] = mapped_column(JSONDocument)
    result_data: Mapped[Any | None] = mapped_column(JSONDocument)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int | None] = mapped_column(Integer, default=0, server_default=text("0"))
    max_retries: Mapped[int | None] = mapped_column(Integer, default=3, server_default=text("3"))
    max_execution_timeout_seconds: Mapped[int | None] = mapped_column(
        Integer, default=3600, server_default=text("3600")
    )
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(Text)
    parent_task_id: Mapped[str | None] = mapped_column(Text, ForeignKey("tasks.id"))
    dependencies: Mapped[Any | None] = mapped_column(JSONDocument)
    session_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("sessions.id", ondelete="SET NULL")
    )

    __table_args__ = (
        one_of("status", TASK_STATUSES, "status"),
        CheckConstraint("priority BETWEEN 1 AND 10", name="priority"),
        jv("input_data"),
        jv("result_data", nullable=True),
        jv("dependencies", nullable=True),
    )


Index("idx_tasks_status_priority", Task.status, Task.priority.desc(), Task.submitted_at)
Index(
    "idx_tasks_session_id",
    Task.session_id,
    Task.submitted_at.desc(),
    **partial("session_id IS NOT NULL"),
)
Index("idx_tasks_submitted_at", Task.submitted_at)
Index("idx_tasks_parent_task_id", Task.parent_task_id)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    specialization: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str] = mapped_column(Text, ForeignKey("tasks.id"))
    state: Mapped[str] = mapped_column(Text)
    spawned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resource_usage: Mapped[Any | None] = mapped_column(JSONDocument)
    session_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("sessions.id", ondelete="SET NULL")
    )

    __table_args__ = (
        one_of("state", AGENT_STATES, "state"),
        jv("resource_usage", nullable=True),
    )


Index("idx_agents_task_id", Agent.task_id)
Index(
    "idx_agents_session_id",
    Agent.session_id,
    Agent.spawned_at.desc(),
    **partial("session_id IS NOT NULL"),
)
Index("idx_agents_spawned_at", Agent.spawned_at)


class TaskState(Base):
    """Milestone 1's legacy per-task key/value table, kept for compatibility."""

    __tablename__ = "state"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(Text, ForeignKey("tasks.id"))
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("task_id", "key"),
        jv("value"),
        AUTOINCREMENT,
    )


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    agent_id: Mapped[str | None] = mapped_column(Text, ForeignKey("agents.id"))
    task_id: Mapped[str] = mapped_column(Text, ForeignKey("tasks.id"))
    action_type: Mapped[str] = mapped_column(Text)
    action_data: Mapped[Any | None] = mapped_column(JSONDocument)
    result: Mapped[str | None] = mapped_column(Text)
    memory_operation_type: Mapped[str | None] = mapped_column(Text)
    memory_namespace: Mapped[str | None] = mapped_column(ByteOrderText)  # ranges: revision 0005
    memory_entry_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("memory_entries.id", ondelete="SET NULL")
    )

    __table_args__ = (
        one_of("memory_operation_type", MEMORY_OPERATIONS, "memory_operation_type"),
        jv("action_data", nullable=True),
        AUTOINCREMENT,
    )


Index("idx_audit_task_id", AuditEntry.task_id, AuditEntry.timestamp.desc())
Index("idx_audit_timestamp", AuditEntry.timestamp.desc())
Index(
    "idx_audit_memory_operation",
    AuditEntry.memory_operation_type,
    AuditEntry.timestamp.desc(),
    **partial("memory_operation_type IS NOT NULL"),
)
Index(
    "idx_audit_memory_entry_id",
    AuditEntry.memory_entry_id,
    AuditEntry.timestamp.desc(),
    **partial("memory_entry_id IS NOT NULL"),
)
# Revision 0004: the audit trail of a namespace subtree (``audit tail --namespace``).
Index(
    "idx_audit_memory_namespace",
    AuditEntry.memory_namespace,
    AuditEntry.timestamp.desc(),
    **partial("memory_namespace IS NOT NULL"),
)


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    metric_name: Mapped[str] = mapped_column(Text)
    metric_value: Mapped[float] = mapped_column(Float)
    labels: Mapped[Any | None] = mapped_column(JSONDocument)

    __table_args__ = (
        CheckConstraint("metric_value >= 0", name="metric_value"),
        jv("labels", nullable=True),
        AUTOINCREMENT,
    )


Index("idx_metrics_timestamp", Metric.metric_name, Metric.timestamp.desc())


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    task_id: Mapped[str] = mapped_column(Text, ForeignKey("tasks.id"), primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[Any] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    session_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("sessions.id", ondelete="SET NULL")
    )

    __table_args__ = (jv("state"),)


Index("idx_checkpoints_task_id_iteration", Checkpoint.task_id, Checkpoint.iteration.desc())
Index("idx_checkpoints_session_id", Checkpoint.session_id, **partial("session_id IS NOT NULL"))
Index("idx_checkpoints_created_at", Checkpoint.created_at)


# --------------------------------------------------------------- Milestone 2


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    app_name: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    project_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="created", server_default="created")
    state: Mapped[Any] = mapped_column(JSONDocument, default=dict, server_default="{}")
    metadata_: Mapped[Any | None] = mapped_column(
        "metadata", JSONDocument, default=dict, server_default="{}"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    last_update_time: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=NOW
    )
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        one_of("status", SESSION_STATUSES, "status"),
        jv("state"),
        jv("metadata", nullable=True),
    )


Index(
    "idx_sessions_status_updated",
    Session.status,
    Session.last_update_time.desc(),
    **partial("status IN ('active', 'paused')"),
)
Index("idx_sessions_user_created", Session.user_id, Session.created_at.desc())
Index(
    "idx_sessions_project_id",
    Session.project_id,
    Session.created_at.desc(),
    **partial("project_id IS NOT NULL"),
)
Index("idx_sessions_app_user", Session.app_name, Session.user_id)
# Keyset paging of list_sessions without a more selective filter (revision 0003).
Index("idx_sessions_created_at", Session.created_at, Session.id)


class SessionEvent(Base):
    """One event of a session's log (revision 0003 moved them out of ``sessions.events``).

    ``seq`` numbers a session's events 1, 2, 3... in append order; an append
    costs the same however long the log already is.
    """

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(Text, ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    # PostgreSQL: ``json``, the text as written (revision 0017): read whole, never queried.
    event: Mapped[Any] = mapped_column(JSONLog)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("session_id", "seq"),
        jv("event"),
        AUTOINCREMENT,
    )


# Which rows the shared state holds: app keys under user_id '', user keys under a user.
SHARED_STATE_SCOPE = (
    "(user_id = '' AND substr(key, 1, 4) = 'app:') "
    "OR (user_id <> '' AND substr(key, 1, 5) = 'user:')"
)


class SharedState(Base):
    """Session state shared between sessions (revision 0008): one row per key.

    An ``app:`` key is one value for every session of ``app_name`` (its row
    has ``user_id = ''``); a ``user:`` key one value for every session of
    (``app_name``, ``user_id``). ``key`` keeps its prefix. The primary key
    serves every read: a session's merged view reads the rows of
    (app, '') and (app, user) in one indexed statement.
    """

    __tablename__ = "shared_state"

    app_name: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDocument)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint(SHARED_STATE_SCOPE, name="scope"),
        jv("value"),
    )


class MemoryEntry(Base):
    __tablename__ = "memory_entries"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(ByteOrderText)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONDocument)
    memory_type: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    metadata_: Mapped[Any | None] = mapped_column(
        "metadata", JSONDocument, default=dict, server_default="{}"
    )
    created_by: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    # True on exactly one row per key: its highest version, deleted or not
    # (revision 0009; ``idx_memory_current_key`` makes "exactly one" a constraint).
    is_current: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        one_of("memory_type", MEMORY_TYPES, "memory_type"),
        jv("value"),
        jv("metadata", nullable=True),
        CheckConstraint("version > 0", name="version"),
        UniqueConstraint("namespace", "key", "version"),
        AUTOINCREMENT,
    )


Index(
    "idx_memory_namespace_key_version",
    MemoryEntry.namespace,
    MemoryEntry.key,
    MemoryEntry.is_deleted,
    MemoryEntry.version.desc(),
)
# The indexes over current live versions (revision 0009; the spec's names,
# its purposes): a subtree's newest (namespace range), one memory type's
# newest and the whole store's newest (ordered walks); namespace trails the
# walks' indexes so that a walk tests its subtree without reading the row.
Index(
    "idx_memory_type_updated",
    MemoryEntry.memory_type,
    MemoryEntry.updated_at.desc(),
    MemoryEntry.id.desc(),
    MemoryEntry.namespace,
    **CURRENT_LIVE_ROWS,
)
Index(
    "idx_memory_namespace_prefix",
    MemoryEntry.namespace,
    MemoryEntry.updated_at.desc(),
    MemoryEntry.id.desc(),
    **CURRENT_LIVE_ROWS,
)
Index(
    "idx_memory_updated_at",
    MemoryEntry.updated_at.desc(),
    MemoryEntry.id.desc(),
    MemoryEntry.namespace,
    **CURRENT_LIVE_ROWS,
)
Index(
    "idx_memory_current_key",
    MemoryEntry.namespace,
    MemoryEntry.key,
    unique=True,
    **CURRENT_ROW,
)
Index("idx_memory_created_by", MemoryEntry.created_by, MemoryEntry.created_at.desc())
Index("idx_memory_type_namespace", MemoryEntry.memory_type, MemoryEntry.namespace)
Index(
    "idx_memory_is_deleted",
    MemoryEntry.namespace,
    MemoryEntry.key,
    MemoryEntry.version.desc(),
    **LIVE_ROWS,
)


class MemoryExpiry(Base):
    """When a memory key expires (revision 0006). One row per key whose current
    version was written with a TTL; versions themselves never change, so the
    expiry lives beside them, keyed by (namespace, key), and moves forward
    (``refresh_ttl``) without writing a version."""

    __tablename__ = "memory_expiry"

    namespace: Mapped[str] = mapped_column(ByteOrderText, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ttl_seconds: Mapped[float] = mapped_column(Float)

    __table_args__ = (CheckConstraint("ttl_seconds > 0", name="ttl_seconds"),)


Index("idx_memory_expiry_expires_at", MemoryExpiry.expires_at)


class MemoryEmbedding(Base):
    """The embedding of one field of one memory version by one model at one
    dimension (issue 12).

    Versions are immutable, so their embeddings are too: rows are only ever
    inserted. ``vector`` holds ``dims`` float32 values, little-endian.
    """

    __tablename__ = "memory_embeddings"

    memory_entry_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("memory_entries.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(Text, primary_key=True)
    dims: Mapped[int] = mapped_column(Integer, primary_key=True)
    field: Mapped[str] = mapped_column(Text, primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        CheckConstraint("dims > 0", name="dims"),
        CheckConstraint("length(vector) = 4 * dims", name="vector_size"),
    )


class DocumentIndex(Base):
    __tablename__ = "document_index"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    file_path: Mapped[str] = mapped_column(ByteOrderText)  # ranges: revision 0005
    title: Mapped[str] = mapped_column(Text)
    document_type: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text)
    chunk_count: Mapped[int | None] = mapped_column(Integer, default=1, server_default=text("1"))
    embedding_model: Mapped[str | None] = mapped_column(Text)
    embedding_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    metadata_: Mapped[Any | None] = mapped_column(
        "metadata", JSONDocument, default=dict, server_default="{}"
    )
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_status: Mapped[str | None] = mapped_column(
        Text, default="pending", server_default="pending"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)

    __table_args__ = (
        one_of("sync_status", SYNC_STATUSES, "sync_status"),
        jv("metadata", nullable=True),
        AUTOINCREMENT,
    )


Index("idx_document_file_path", DocumentIndex.file_path, unique=True)
Index(
    "idx_document_type",
    DocumentIndex.document_type,
    DocumentIndex.created_at.desc(),
    **partial("document_type IS NOT NULL"),
)
Index(
    "idx_document_sync_status",
    DocumentIndex.sync_status,
    DocumentIndex.last_synced_at,
    **partial("sync_status IN ('pending', 'stale')"),
)
Index("idx_document_hash", DocumentIndex.content_hash)
Index("idx_document_updated", DocumentIndex.updated_at.desc())
