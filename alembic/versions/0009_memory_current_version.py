"""The current version of a memory key as a flag: ``memory_entries.is_current``.

``is_current`` is true on exactly one row per (namespace, key): its highest
version, deleted or not. Every write that inserts a version clears the flag on
the key's previous current row and sets it on the new row, in the same
transaction; the partial UNIQUE index ``idx_memory_current_key`` on
(namespace, key) WHERE is_current makes "exactly one" a constraint that
concurrent writers cannot break.

Reads of current live versions then need no "is there a newer version?"
check per candidate: partial indexes over the current live rows serve them
directly. Three spec indexes keep their names and purposes, redefined over
current live rows with ``id`` as the tie-breaker: ``idx_memory_namespace_prefix``
(a subtree's newest first), ``idx_memory_type_updated`` (one memory type's
newest first) and ``idx_memory_updated_at`` (the whole store's newest first;
it indexed every version before, and no statement used it).

Upgrade: the column is added false everywhere, then one set-based UPDATE
flags every row that has no higher version of its key (one probe of the
UNIQUE (namespace, key, version) index per row), then the indexes are built.
Downgrade drops the indexes and the column, restores the three indexes'
previous definitions and keeps every row.

Revision ID: 0009_memory_current_version
Revises: 0008_shared_state_scopes
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import CURRENT_LIVE_ROWS, CURRENT_ROW, LIVE_ROWS
from alembic import op

revision = "0009_memory_current_version"
down_revision = "0008_shared_state_scopes"
branch_labels = None
depends_on = None

TABLE = "memory_entries"
REDEFINED = ("idx_memory_namespace_prefix", "idx_memory_type_updated", "idx_memory_updated_at")


def upgrade() -> None:
    true = "true" if op.get_bind().dialect.name == "postgresql" else "1"
    op.add_column(
        TABLE, sa.Column("is_current", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.execute(
        f"UPDATE memory_entries SET is_current = {true} WHERE NOT EXISTS ("
        "SELECT 1 FROM memory_entries AS newer "
        "WHERE newer.namespace = memory_entries.namespace AND newer.key = memory_entries.key "
        "AND newer.version > memory_entries.version)"
    )
    for name in REDEFINED:
        op.drop_index(name, table_name=TABLE)
    op.create_index(
        "idx_memory_current_key", TABLE, ["namespace", "key"], unique=True, **CURRENT_ROW
    )
    op.create_index(
        "idx_memory_namespace_prefix",
        TABLE,
        ["namespace", sa.text("updated_at DESC"), sa.text("id DESC")],
        **CURRENT_LIVE_ROWS,
    )
    op.create_index(
        "idx_memory_updated_at",
        TABLE,
        [sa.text("updated_at DESC"), sa.text("id DESC"), "namespace"],
        **CURRENT_LIVE_ROWS,
    )
    op.create_index(
        "idx_memory_type_updated",
        TABLE,
        ["memory_type", sa.text("updated_at DESC"), sa.text("id DESC"), "namespace"],
        **CURRENT_LIVE_ROWS,
    )


def downgrade() -> None:
    for name in (*REDEFINED, "idx_memory_current_key"):
        op.drop_index(name, table_name=TABLE)
    # SQLite (3.35+) drops a column in place once no index names it.
    op.drop_column(TABLE, "is_current")
    op.create_index(
        "idx_memory_type_updated", TABLE, ["memory_type", sa.text("updated_at DESC")], **LIVE_ROWS
    )
    op.create_index(
        "idx_memory_namespace_prefix", TABLE, ["namespace", sa.text("updated_at DESC")], **LIVE_ROWS
    )
    op.create_index("idx_memory_updated_at", TABLE, ["updated_at"])
