"""PostgreSQL: ``abathur_append_events`` and the shared-state read of
``create_session`` plan their statements once per connection, not at every
call.

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
connection's life). The body is unchanged.

The same planning weighed on ``create_session``: its INSERT returned the
shared state the new session sees through a correlated subquery of
``shared_state``, planned at every call with the INSERT. That read is now
``abathur_shared_state(p_app_name, p_user_id)``, a STABLE function with the
same settings, called in the INSERT's RETURNING: the same rows of the same
snapshot (a STABLE function sees the snapshot of the statement that calls
it), one JSON object of every ``app:`` key of the app and ``user:`` key of
the user (``'{}'`` when there is none). Measured on the benchmark machine,
interleaved with a plain INSERT (same run, 600 calls each, two runs): the
subquery cost 90-190 us over the plain INSERT, the function 30-50 us.

SQLite: nothing.

Revision ID: 0015_session_plans
Revises: 0014_memory_write_lean
"""

from __future__ import annotations

from alembic import op

revision = "0015_session_plans"
down_revision = "0014_memory_write_lean"
branch_labels = None
depends_on = None

APPEND = "abathur_append_events(text, jsonb, jsonb, integer, timestamptz)"
SETTINGS = "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"


SHARED = "abathur_shared_state"
SHARED_BODY = """
DECLARE
    seen jsonb;
BEGIN
    SELECT jsonb_object_agg(shared_state.key, shared_state.value) INTO seen
      FROM shared_state
     WHERE shared_state.app_name = p_app_name AND shared_state.user_id IN ('', p_user_id);
    RETURN coalesce(seen, '{}'::jsonb);
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {APPEND} {SETTINGS}")
    op.execute(
        f"CREATE FUNCTION {SHARED}(p_app_name text, p_user_id text) RETURNS jsonb "
        f"LANGUAGE plpgsql STABLE {SETTINGS} AS $function${SHARED_BODY}$function$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {SHARED}(text, text)")
    op.execute(f"ALTER FUNCTION {APPEND} RESET ALL")  # 0011 created it without settings
