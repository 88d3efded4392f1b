"""Byte-order collation for the audit namespace and document paths (PostgreSQL).

Both columns are queried by byte-wise ranges, as memory namespaces are: the
audit rows of a namespace subtree (``audit tail --namespace``) and the
documents below a directory (``sync_directory``, ``list_documents``).
PostgreSQL's default collation need not be byte order (under ICU ``en-US``,
``;`` sorts before ``:`` and case is folded), and then those ranges returned
the wrong rows: a subtree's audit rows went missing, and syncing one directory
marked another directory's documents missing. Memory namespaces have used
"C" since revision 0002; this gives the other two the same. PostgreSQL
rebuilds the indexes on them. SQLite compares bytes already: nothing to do.

Revision ID: 0005_byte_order_collations
Revises: 0004_audit_namespace_index
"""

from __future__ import annotations

from alembic import op

revision = "0005_byte_order_collations"
down_revision = "0004_audit_namespace_index"
branch_labels = None
depends_on = None

COLUMNS = (("audit", "memory_namespace"), ("document_index", "file_path"))


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT COLLATE "{collation}"')


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
