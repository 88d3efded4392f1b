"""Per-key memory expiry (TTL) for ``MemoryService``'s ``ttl`` arguments.

A memory version never changes after it is written, so the expiry of a key is
not a column of its versions: ``memory_expiry`` holds one row per key whose
current version was written with a TTL, keyed by (namespace, key), with the
instant it expires and the TTL that ``refresh_ttl`` pushes it forward by.
``idx_memory_expiry_expires_at`` serves ``sweep_expired``.

Downgrade: the revision below has no expiry, and its readers would see an
expired key that no sweep has deleted yet as live again. So the rows of every
key already expired at downgrade time are soft-deleted first (what
``sweep_expired`` would have done, without its audit rows), then the table is
dropped. Every other row is kept as it is; keys that had not expired yet
simply stop expiring.

Revision ID: 0006_memory_retrieval
Revises: 0005_byte_order_collations
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import NamespaceText
from abathur.schema.types import UTCDateTime
from alembic import op

revision = "0006_memory_retrieval"
down_revision = "0005_byte_order_collations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_expiry",
        sa.Column("namespace", NamespaceText, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ttl_seconds", sa.Float(), nullable=False),
        sa.CheckConstraint("ttl_seconds > 0", name=op.f("ck_memory_expiry_ttl_seconds")),
        sa.PrimaryKeyConstraint("namespace", "key", name="pk_memory_expiry"),
    )
    op.create_index("idx_memory_expiry_expires_at", "memory_expiry", ["expires_at"])


def downgrade() -> None:
    deleted = "true" if op.get_bind().dialect.name == "postgresql" else "1"
    live = "false" if op.get_bind().dialect.name == "postgresql" else "0"
    op.execute(
        f"UPDATE memory_entries SET is_deleted = {deleted} "
        f"WHERE is_deleted = {live} AND EXISTS (SELECT 1 FROM memory_expiry e "
        "WHERE e.namespace = memory_entries.namespace AND e.key = memory_entries.key "
        "AND e.expires_at <= CURRENT_TIMESTAMP)"
    )
    op.drop_index("idx_memory_expiry_expires_at", table_name="memory_expiry")
    op.drop_table("memory_expiry")
