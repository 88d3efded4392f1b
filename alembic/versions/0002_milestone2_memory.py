"""Milestone 2 memory tables: sessions, memory_entries, document_index, 16 indexes,
and the foreign keys from Milestone 1 tables to them.

Milestone 1 rows may already carry a ``session_id`` (written before sessions
existed, or kept by a downgrade of this revision). Adding the foreign key must
not destroy them, so each distinct orphan id gets an archived placeholder
session (metadata ``{"placeholder": true}``) before the key is added.
``audit.memory_entry_id`` cannot be satisfied that way (a memory entry has a
value we do not know); there the rule the key itself declares, ON DELETE SET
NULL, is applied to the orphans: the referenced entry is gone. The audit row
and its ``action_data`` stay.

Downgrade drops the three tables and the four keys and keeps every Milestone 1
row and every ``session_id`` value as it was.

Revision ID: 0002_milestone2_memory
Revises: 0001_milestone1_core
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import (
    LIVE_ROWS,
    NOW,
    BigIntId,
    NamespaceText,
    json_valid,
    one_of,
    partial,
)
from abathur.schema.migration_ops import batch_alter_table
from abathur.schema.types import JSONDocument, UTCDateTime
from alembic import op

revision = "0002_milestone2_memory"
down_revision = "0001_milestone1_core"
branch_labels = None
depends_on = None

AUTOINCREMENT = {"sqlite_autoincrement": True}
SESSION_REFERENCES = ("tasks", "agents", "checkpoints")
PLACEHOLDER = '{"placeholder": true, "created_by_revision": "0002_milestone2_memory"}'


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("app_name", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="created", nullable=False),
        sa.Column("events", JSONDocument(), server_default="[]", nullable=False),
        sa.Column("state", JSONDocument(), server_default="{}", nullable=False),
        sa.Column("metadata", JSONDocument(), server_default="{}", nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("last_update_time", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("terminated_at", UTCDateTime(), nullable=True),
        sa.Column("archived_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        one_of(
            "status",
            ("created", "active", "paused", "terminated", "archived"),
            op.f("ck_sessions_status"),
        ),
        json_valid("events", op.f("ck_sessions_events_json")),
        json_valid("state", op.f("ck_sessions_state_json")),
        json_valid("metadata", op.f("ck_sessions_metadata_json"), nullable=True),
    )
    op.create_index(
        "idx_sessions_status_updated",
        "sessions",
        ["status", sa.text("last_update_time DESC")],
        **partial("status IN ('active', 'paused')"),
    )
    op.create_index(
        "idx_sessions_user_created", "sessions", ["user_id", sa.text("created_at DESC")]
    )
    op.create_index(
        "idx_sessions_project_id",
        "sessions",
        ["project_id", sa.text("created_at DESC")],
        **partial("project_id IS NOT NULL"),
    )
    op.create_index("idx_sessions_app_user", "sessions", ["app_name", "user_id"])

    op.create_table(
        "memory_entries",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("namespace", NamespaceText, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", JSONDocument(), nullable=False),
        sa.Column("memory_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("metadata", JSONDocument(), server_default="{}", nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memory_entries"),
        one_of(
            "memory_type",
            ("semantic", "episodic", "procedural"),
            op.f("ck_memory_entries_memory_type"),
        ),
        json_valid("value", op.f("ck_memory_entries_value_json")),
        json_valid("metadata", op.f("ck_memory_entries_metadata_json"), nullable=True),
        sa.CheckConstraint("version > 0", name=op.f("ck_memory_entries_version")),
        sa.UniqueConstraint(
            "namespace", "key", "version", name="uq_memory_entries_namespace_key_version"
        ),
        **AUTOINCREMENT,
    )
    op.create_index(
        "idx_memory_namespace_key_version",
        "memory_entries",
        ["namespace", "key", "is_deleted", sa.text("version DESC")],
    )
    op.create_index(
        "idx_memory_type_updated",
        "memory_entries",
        ["memory_type", sa.text("updated_at DESC")],
        **LIVE_ROWS,
    )
    op.create_index(
        "idx_memory_namespace_prefix",
        "memory_entries",
        ["namespace", sa.text("updated_at DESC")],
        **LIVE_ROWS,
    )
    op.create_index(
        "idx_memory_created_by", "memory_entries", ["created_by", sa.text("created_at DESC")]
    )
    op.create_index("idx_memory_updated_at", "memory_entries", ["updated_at"])
    op.create_index("idx_memory_type_namespace", "memory_entries", ["memory_type", "namespace"])
    op.create_index(
        "idx_memory_is_deleted",
        "memory_entries",
        ["namespace", "key", sa.text("version DESC")],
        **LIVE_ROWS,
    )

    op.create_table(
        "document_index",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("document_type", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), server_default=sa.text("1"), nullable=True),
        sa.Column("embedding_model", sa.Text(), nullable=True),
        sa.Column("embedding_blob", sa.LargeBinary(), nullable=True),
        sa.Column("metadata", JSONDocument(), server_default="{}", nullable=True),
        sa.Column("last_synced_at", UTCDateTime(), nullable=True),
        sa.Column("sync_status", sa.Text(), server_default="pending", nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_document_index"),
        one_of(
            "sync_status",
            ("pending", "synced", "failed", "stale"),
            op.f("ck_document_index_sync_status"),
        ),
        json_valid("metadata", op.f("ck_document_index_metadata_json"), nullable=True),
        **AUTOINCREMENT,
    )
    op.create_index("idx_document_file_path", "document_index", ["file_path"], unique=True)
    op.create_index(
        "idx_document_type",
        "document_index",
        ["document_type", sa.text("created_at DESC")],
        **partial("document_type IS NOT NULL"),
    )
    op.create_index(
        "idx_document_sync_status",
        "document_index",
        ["sync_status", "last_synced_at"],
        **partial("sync_status IN ('pending', 'stale')"),
    )
    op.create_index("idx_document_hash", "document_index", ["content_hash"])
    op.create_index("idx_document_updated", "document_index", [sa.text("updated_at DESC")])

    _adopt_orphans()
    for table in SESSION_REFERENCES:
        with batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_session_id_sessions",
                "sessions",
                ["session_id"],
                ["id"],
                ondelete="SET NULL",
            )
    with batch_alter_table("audit") as batch:
        batch.create_foreign_key(
            "fk_audit_memory_entry_id_memory_entries",
            "memory_entries",
            ["memory_entry_id"],
            ["id"],
            ondelete="SET NULL",
        )


def _adopt_orphans() -> None:
    referenced = " UNION ".join(
        f"SELECT session_id FROM {table} WHERE session_id IS NOT NULL"
        for table in SESSION_REFERENCES
    )
    op.execute(
        sa.text(
            "INSERT INTO sessions (id, app_name, user_id, status, events, state, metadata, "
            "created_at, last_update_time, archived_at) "
            "SELECT r.session_id, 'unknown', 'unknown', 'archived', '[]', '{}', "
            f"'{PLACEHOLDER}', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
            f"FROM ({referenced}) AS r"
        )
    )
    op.execute("UPDATE audit SET memory_entry_id = NULL WHERE memory_entry_id IS NOT NULL")


def downgrade() -> None:
    with batch_alter_table("audit") as batch:
        batch.drop_constraint("fk_audit_memory_entry_id_memory_entries", type_="foreignkey")
    for table in reversed(SESSION_REFERENCES):
        with batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_session_id_sessions", type_="foreignkey")
    op.drop_table("document_index")
    op.drop_table("memory_entries")
    op.drop_table("sessions")
