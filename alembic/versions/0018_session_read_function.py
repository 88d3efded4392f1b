"""PostgreSQL: ``get_session``'s whole read in a function planned once per
connection, ``abathur_session_whole``.

``get_session`` without ``recent_events`` / ``after`` reads the session, the
seq of its newest event, the shared state it sees and its events (their JSON
texts, in seq order) in one statement. abathur's connections plan every
execution for its values (``plan_cache_mode = force_custom_plan``, see
``db/engine.py``), so that statement, with its LATERAL aggregate and the
shared-state subquery, was planned again at every read. Every part of it is
served by a primary key or unique index whatever the id, so it now runs in a
STABLE PL/pgSQL function with the settings of ``abathur_append_events`` and
``abathur_shared_state`` (revision 0015): ``plan_cache_mode =
force_generic_plan`` (planned once per connection, at its first call) and
``enable_seqscan = off``. The same query, the same row (none for an unknown
id), the same snapshot (a STABLE function sees the calling statement's).
Measured through the ADK adapter on the benchmark machine (100 events,
interleaved with the statement, 3 x 400 calls): about 80 us less per read
(1,253-1,263 -> 1,171-1,186 us).

SQLite: nothing.

Revision ID: 0018_session_read_function
Revises: 0017_session_events_json
"""

from __future__ import annotations

from abathur.schema.migration_ops import revision_module
from alembic import op

revision = "0018_session_read_function"
down_revision = "0017_session_events_json"
branch_labels = None
depends_on = None

SETTINGS = revision_module(__file__, "0015_session_plans.py").SETTINGS
FUNCTION = "abathur_session_whole"
RESULT = (
    "id text, app_name text, user_id text, project_id text, status text, state jsonb, "
    "metadata jsonb, created_at timestamptz, last_update_time timestamptz, "
    "terminated_at timestamptz, archived_at timestamptz, last_seq integer, shared jsonb, "
    "events text[]"
)
BODY = """
BEGIN
    RETURN QUERY
    SELECT sessions.id, sessions.app_name, sessions.user_id, sessions.project_id,
           sessions.status, sessions.state, sessions.metadata, sessions.created_at,
           sessions.last_update_time, sessions.terminated_at, sessions.archived_at,
           event_log.last_seq,
           (SELECT coalesce(jsonb_object_agg(shared_state.key, shared_state.value), '{}'::jsonb)
              FROM shared_state
             WHERE shared_state.app_name = sessions.app_name
               AND shared_state.user_id IN ('', sessions.user_id)),
           event_log.events
      FROM sessions
      JOIN LATERAL (
            SELECT max(session_events.seq) AS last_seq,
                   coalesce(array_agg(session_events.event::text ORDER BY session_events.seq),
                            '{}'::text[]) AS events
              FROM session_events
             WHERE session_events.session_id = sessions.id
           ) AS event_log ON true
     WHERE sessions.id = p_session_id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {FUNCTION}(p_session_id text) RETURNS TABLE ({RESULT}) "
        f"LANGUAGE plpgsql STABLE {SETTINGS} AS $function${BODY}$function$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}(text)")
