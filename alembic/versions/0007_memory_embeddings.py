"""Memory embeddings: one float32 vector per memory version, field and model (issue 12).

A table of its own, keyed by (memory_entry_id, model, dims, field); the primary key
serves every lookup (vectors of given versions, "has this version an
embedding for this model"). A subtree's candidates are found through
memory_entries' own namespace index and joined here by key. Rows cascade with
their memory version. Downgrade drops the table: embeddings are derived data,
``reindex`` rebuilds them.

Revision ID: 0007_memory_embeddings
Revises: 0006_memory_retrieval
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.schema.ddl import BigIntId
from alembic import op

revision = "0007_memory_embeddings"
down_revision = "0006_memory_retrieval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_embeddings",
        sa.Column("memory_entry_id", BigIntId, nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("dims > 0", name=op.f("ck_memory_embeddings_dims")),
        sa.CheckConstraint(
            "length(vector) = 4 * dims", name=op.f("ck_memory_embeddings_vector_size")
        ),
        sa.ForeignKeyConstraint(
            ["memory_entry_id"],
            ["memory_entries.id"],
            name="fk_memory_embeddings_memory_entry_id_memory_entries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "memory_entry_id", "model", "dims", "field", name="pk_memory_embeddings"
        ),
    )


def downgrade() -> None:
    op.drop_table("memory_embeddings")
