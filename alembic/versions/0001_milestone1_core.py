"""Milestone 1 core schema: tasks, agents, state, audit, metrics, checkpoints.

The ``session_id`` columns and ``audit.memory_entry_id`` exist here without a
foreign key: their parent tables arrive in 0002_milestone2_memory.

Revision ID: 0001_milestone1_core
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import BigIntId, json_valid, one_of, partial
from abathur.schema.types import JSONDocument, UTCDateTime
from alembic import op

revision = "0001_milestone1_core"
down_revision = None
branch_labels = None
depends_on = None

AUTOINCREMENT = {"sqlite_autoincrement": True}
NOT_NULL_SESSION = partial("session_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("agent_type", sa.Text(), server_default="general", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("input_data", JSONDocument(), nullable=False),
        sa.Column("result_data", JSONDocument(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("3"), nullable=True),
        sa.Column(
            "max_execution_timeout_seconds",
            sa.Integer(),
            server_default=sa.text("3600"),
            nullable=True,
        ),
        sa.Column("submitted_at", UTCDateTime(), nullable=False),
        sa.Column("last_updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("parent_task_id", sa.Text(), nullable=True),
        sa.Column("dependencies", JSONDocument(), nullable=True),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["parent_task_id"], ["tasks.id"], name="fk_tasks_parent_task_id_tasks"
        ),
        one_of(
            "status",
            ("pending", "running", "completed", "failed", "cancelled"),
            op.f("ck_tasks_status"),
        ),
        sa.CheckConstraint("priority BETWEEN 1 AND 10", name=op.f("ck_tasks_priority")),
        json_valid("input_data", op.f("ck_tasks_input_data_json")),
        json_valid("result_data", op.f("ck_tasks_result_data_json"), nullable=True),
        json_valid("dependencies", op.f("ck_tasks_dependencies_json"), nullable=True),
    )
    op.create_index(
        "idx_tasks_status_priority",
        "tasks",
        ["status", sa.text("priority DESC"), "submitted_at"],
    )
    op.create_index(
        "idx_tasks_session_id",
        "tasks",
        ["session_id", sa.text("submitted_at DESC")],
        **NOT_NULL_SESSION,
    )
    op.create_index("idx_tasks_submitted_at", "tasks", ["submitted_at"])
    op.create_index("idx_tasks_parent_task_id", "tasks", ["parent_task_id"])

    op.create_table(
        "agents",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("specialization", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("spawned_at", UTCDateTime(), nullable=False),
        sa.Column("terminated_at", UTCDateTime(), nullable=True),
        sa.Column("resource_usage", JSONDocument(), nullable=True),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_agents_task_id_tasks"),
        one_of("state", ("idle", "working", "waiting", "terminated"), op.f("ck_agents_state")),
        json_valid("resource_usage", op.f("ck_agents_resource_usage_json"), nullable=True),
    )
    op.create_index("idx_agents_task_id", "agents", ["task_id"])
    op.create_index(
        "idx_agents_session_id",
        "agents",
        ["session_id", sa.text("spawned_at DESC")],
        **NOT_NULL_SESSION,
    )
    op.create_index("idx_agents_spawned_at", "agents", ["spawned_at"])

    op.create_table(
        "state",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", JSONDocument(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_state"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_state_task_id_tasks"),
        sa.UniqueConstraint("task_id", "key", name="uq_state_task_id_key"),
        json_valid("value", op.f("ck_state_value_json")),
        **AUTOINCREMENT,
    )

    op.create_table(
        "audit",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=True),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("action_type", sa.Text(), nullable=False),
        sa.Column("action_data", JSONDocument(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("memory_operation_type", sa.Text(), nullable=True),
        sa.Column("memory_namespace", sa.Text(), nullable=True),
        sa.Column("memory_entry_id", BigIntId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_audit_agent_id_agents"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_audit_task_id_tasks"),
        one_of(
            "memory_operation_type",
            ("create", "update", "delete", "consolidate", "publish"),
            op.f("ck_audit_memory_operation_type"),
        ),
        json_valid("action_data", op.f("ck_audit_action_data_json"), nullable=True),
        **AUTOINCREMENT,
    )
    op.create_index("idx_audit_task_id", "audit", ["task_id", sa.text("timestamp DESC")])
    op.create_index("idx_audit_timestamp", "audit", [sa.text("timestamp DESC")])
    op.create_index(
        "idx_audit_memory_operation",
        "audit",
        ["memory_operation_type", sa.text("timestamp DESC")],
        **partial("memory_operation_type IS NOT NULL"),
    )
    op.create_index(
        "idx_audit_memory_entry_id",
        "audit",
        ["memory_entry_id", sa.text("timestamp DESC")],
        **partial("memory_entry_id IS NOT NULL"),
    )

    op.create_table(
        "metrics",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("metric_name", sa.Text(), nullable=False),
        sa.Column("metric_value", sa.Float(), nullable=False),
        sa.Column("labels", JSONDocument(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.CheckConstraint("metric_value >= 0", name=op.f("ck_metrics_metric_value")),
        json_valid("labels", op.f("ck_metrics_labels_json"), nullable=True),
        **AUTOINCREMENT,
    )
    op.create_index("idx_metrics_timestamp", "metrics", ["metric_name", sa.text("timestamp DESC")])

    op.create_table(
        "checkpoints",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("iteration", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", JSONDocument(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "iteration", name="pk_checkpoints"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_checkpoints_task_id_tasks"),
        json_valid("state", op.f("ck_checkpoints_state_json")),
    )
    op.create_index(
        "idx_checkpoints_task_id_iteration",
        "checkpoints",
        ["task_id", sa.text("iteration DESC")],
    )
    op.create_index("idx_checkpoints_session_id", "checkpoints", ["session_id"], **NOT_NULL_SESSION)
    op.create_index("idx_checkpoints_created_at", "checkpoints", ["created_at"])


def downgrade() -> None:
    for table in ("checkpoints", "metrics", "audit", "state", "agents", "tasks"):
        op.drop_table(table)
