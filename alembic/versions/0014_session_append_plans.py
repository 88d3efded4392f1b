"""PostgreSQL: ``abathur_append_events`` plans its statements once per
connection, not at every call.

abathur's connections run with ``plan_cache_mode = force_custom_plan`` (see
``db/engine.py``: a parameter-blind plan of the memory search can be a walk of
a whole index). That setting also reaches the statements inside PL/pgSQL
functions, so every append re-planned its four statements (the row lock, the
newest seq, the insert of the events, the state merge): about 110 us of a
600 us append on the benchmark machine. Each of them is served by a primary
key or unique index whatever the parameters, so the function now carries its
own settings, as ``abathur_search_memories`` (0013) does:
``plan_cache_mode = force_generic_plan`` (planned once per connection, at its
first call) and ``enable_seqscan = off`` (a plan made while a table was tiny,
when a sequential scan is cheapest, would otherwise stay cached for the
connection's life). The body is unchanged. SQLite: nothing.

Revision ID: 0014_session_append_plans
Revises: 0013_search_function
"""

from __future__ import annotations

from alembic import op

revision = "0014_session_append_plans"
down_revision = "0013_search_function"
branch_labels = None
depends_on = None

FUNCTION = "abathur_append_events(text, jsonb, jsonb, integer, timestamptz)"
SETTINGS = ("plan_cache_mode = force_generic_plan", "enable_seqscan = off")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {FUNCTION} " + " ".join(f"SET {s}" for s in SETTINGS))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {FUNCTION} RESET ALL")  # 0011 created it without settings
