"""Index the audit trail by memory namespace.

``audit tail --namespace user:alice`` (``TaskService.audit_tail``) selects the
rows of a namespace subtree, newest first. Without this index the database
walks the whole timestamp index to find them.

Revision ID: 0004_audit_namespace_index
Revises: 0003_session_event_log
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import partial
from alembic import op

revision = "0004_audit_namespace_index"
down_revision = "0003_session_event_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "idx_audit_memory_namespace",
        "audit",
        ["memory_namespace", sa.text("timestamp DESC")],
        **partial("memory_namespace IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("idx_audit_memory_namespace", table_name="audit")
