"""PostgreSQL: one ``append_events`` in one statement, ``abathur_append_events``.

``append_event`` / ``append_events`` on PostgreSQL without shared (``app:`` /
``user:``) keys in the delta call this PL/pgSQL function as a single
statement in autocommit: one round trip instead of six (BEGIN, the session's
row lock, the newest seq, the events, the state merge, COMMIT). It does what
the Python unit of work does, in the same order:

1. the session row, locked (``FOR UPDATE``); none: SQLSTATE ``AB101``;
2. a closed session (terminated, archived) raises ``AB102`` (DETAIL: its
   status);
3. the newest seq, read after the lock (a fresh snapshot per statement under
   READ COMMITTED); ``p_expected_seq`` given and different: ``AB103`` (DETAIL:
   the newest seq);
4. the events (``p_events``, a JSON array) numbered from the newest seq + 1,
   stored at ``p_now`` or just after the session's last write, whichever is
   later, and the delta merged into the state (``state || p_delta``) with the
   same ``last_update_time``.

An error rolls the whole statement back; the caller maps the codes to the
same ``abathur.errors`` exceptions and messages as the Python unit. SQLite:
nothing.

Revision ID: 0011_session_append_function
Revises: 0010_memory_write_function
"""

from __future__ import annotations

from alembic import op

revision = "0011_session_append_function"
down_revision = "0010_memory_write_function"
branch_labels = None
depends_on = None

FUNCTION = "abathur_append_events"
SIGNATURE = (
    "p_session_id text, p_events jsonb, p_delta jsonb, p_expected_seq integer, "
    "p_now timestamptz"
)
ARGUMENT_TYPES = "text, jsonb, jsonb, integer, timestamptz"

BODY = """
DECLARE
    locked record;
    newest integer;
    stamp timestamptz;
BEGIN
    SELECT sessions.status, sessions.last_update_time INTO locked
      FROM sessions WHERE sessions.id = p_session_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session not found' USING ERRCODE = 'AB101';
    END IF;
    IF locked.status IN ('terminated', 'archived') THEN
        RAISE EXCEPTION 'session closed' USING ERRCODE = 'AB102', DETAIL = locked.status;
    END IF;
    SELECT max(session_events.seq) INTO newest
      FROM session_events WHERE session_events.session_id = p_session_id;
    newest := coalesce(newest, 0);
    IF p_expected_seq IS NOT NULL AND p_expected_seq <> newest THEN
        RAISE EXCEPTION 'stale session' USING ERRCODE = 'AB103', DETAIL = newest::text;
    END IF;
    stamp := CASE WHEN p_now > locked.last_update_time THEN p_now
                  ELSE locked.last_update_time + interval '1 microsecond' END;
    INSERT INTO session_events (session_id, seq, event, created_at)
    SELECT p_session_id, newest + given.n, given.event, stamp
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS given(event, n)
     ORDER BY given.n;
    UPDATE sessions SET state = state || p_delta, last_update_time = stamp
     WHERE sessions.id = p_session_id;
    RETURN newest + jsonb_array_length(p_events);
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {FUNCTION}({SIGNATURE}) RETURNS integer "
        f"LANGUAGE plpgsql VOLATILE AS $function${BODY}$function$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}({ARGUMENT_TYPES})")
