"""PostgreSQL: ``session_events.event`` is ``json``, not ``jsonb`` (issue 13).

An event is written once and read whole, never queried by its content; as
JSONB the server stored a binary form and converted it back to text for
every event of every read (``get_session`` of 100 events: about 150 us of
the ADK adapter's ~1.4 ms on the benchmark machine, interleaved). ``json``
keeps the text it is given, validated, and returns it as it is. What
Python reads is the same parsed JSON (the same codec parses both types);
numbers and key order now come back as they were written, as on SQLite
(JSONB rewrote them: ``1e300`` came back as an integer of 301 digits, not
equal to the float; keys in its own order).

``abathur_append_events`` takes its events as ``json`` accordingly (its
other parameters, body, settings and result unchanged): the array is
split by ``json_array_elements``, each event stored as its own text; as
JSONB the array was parsed into the binary form only to be converted back.

Downgrade: the column back to ``jsonb`` (every stored text is one JSON
value; the write path, ``strict_json.dumps``, refuses the one thing ``json``
takes and ``jsonb`` refuses, the NUL character, and writes no duplicate
keys) and 0011's function with 0015's settings.

SQLite: nothing (TEXT with its ``json_valid`` CHECK either way).

Revision ID: 0017_session_events_json
Revises: 0016_search_range_ids
"""

from __future__ import annotations

from abathur.schema.migration_ops import revision_module
from alembic import op

revision = "0017_session_events_json"
down_revision = "0016_search_range_ids"
branch_labels = None
depends_on = None

APPEND = revision_module(__file__, "0011_session_append_function.py")
PLANS = revision_module(__file__, "0015_session_plans.py")
FUNCTION = APPEND.FUNCTION
OLD_SIGNATURE = APPEND.SIGNATURE
OLD_BODY = APPEND.BODY
SIGNATURE = OLD_SIGNATURE.replace("p_events jsonb", "p_events json")
ARGUMENT_TYPES = "text, json, jsonb, integer, timestamptz"
BODY = OLD_BODY.replace("jsonb_array_elements(p_events)", "json_array_elements(p_events)").replace(
    "jsonb_array_length(p_events)", "json_array_length(p_events)"
)


def _create(signature: str, body: str) -> None:
    op.execute(
        f"CREATE FUNCTION {FUNCTION}({signature}) RETURNS integer "
        f"LANGUAGE plpgsql VOLATILE {PLANS.SETTINGS} AS $function${body}$function$"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}({APPEND.ARGUMENT_TYPES})")
    op.execute("ALTER TABLE session_events ALTER COLUMN event TYPE json USING event::json")
    _create(SIGNATURE, BODY)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}({ARGUMENT_TYPES})")
    op.execute("ALTER TABLE session_events ALTER COLUMN event TYPE jsonb USING event::jsonb")
    _create(OLD_SIGNATURE, OLD_BODY)
