"""PostgreSQL: ``abathur_append_events`` plans its statements once per
connection, not at every call.

abathur's connections run with ``plan_cache_mode = force_custom_plan`` (see
``db/engine.py``: a parameter-blind plan of the memory search can be a walk of
a whole index). That setting also reaches the statements inside PL/pgSQL
functions, so every append planned its four statements again (the row lock,
the newest seq, the insert of the events, the state merge): 100-280 us of a
0.4-1.2 ms call of the function on the benchmark machine (same runs,
interleaved). Each of them is served by a primary key or unique index
whatever the parameters, so the function now carries its own settings, as
``abathur_search_memories`` (0013) does: ``plan_cache_mode =
force_generic_plan`` (each statement planned once per connection, at its
first call) and ``enable_seqscan = off`` (a plan made while a table was tiny,
when a sequential scan is cheapest, would otherwise stay cached for the
connection's life). The body is unchanged. SQLite: nothing.

Revision ID: 0014_session_plans
Revises: 0013_search_function
"""

from __future__ import annotations

from alembic import op

revision = "0014_session_plans"
down_revision = "0013_search_function"
branch_labels = None
depends_on = None

APPEND = "abathur_append_events(text, jsonb, jsonb, integer, timestamptz)"
SETTINGS = "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {APPEND} {SETTINGS}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {APPEND} RESET ALL")  # 0011 created it without settings
