"""Session event log: one row per event in ``session_events`` instead of one
JSON array in ``sessions.events``.

Appending to the array rewrites the whole row, so its cost grows with the
length of the session; a row per event costs the same at any length.

Upgrade copies every ``sessions.events`` array into rows, element ``i``
becoming ``seq = i + 1``, then drops the column. The array holds no per-event
insertion time, so the copied rows take the session's ``last_update_time``
(no event can be newer), unless a downgrade of this revision kept their times
(below). A session whose ``events`` is not a JSON array stops the migration:
its content has no order to keep.

Downgrade folds the rows back into arrays in ``seq`` order and drops the
table. No event is lost or reordered either way. Each event's ``created_at``
(which ``get_session(after=)`` filters on) is kept in the session's
``metadata`` under the reserved key ``abathur:event_created_at``, an array
parallel to ``events``, so that the events themselves stay exactly as they
were; the next upgrade gives each event its time back and removes the key
(and ``abathur:metadata_was_null``, which marks a ``metadata`` that was SQL
NULL). Events appended at revision 0002 meanwhile, beyond the end of that
array, take ``last_update_time`` as above. A session whose metadata is
neither an object nor NULL has nowhere to keep the times: its events take
``last_update_time`` too.

Also adds ``idx_sessions_created_at`` for keyset paging of sessions.

Revision ID: 0003_session_event_log
Revises: 0002_milestone2_memory
"""

from __future__ import annotations

import sqlalchemy as sa

from abathur.errors import MigrationError
from abathur.schema.ddl import BigIntId, json_valid
from abathur.schema.migration_ops import batch_alter_table
from abathur.schema.types import JSONDocument, UTCDateTime
from alembic import op

revision = "0003_session_event_log"
down_revision = "0002_milestone2_memory"
branch_labels = None
depends_on = None

# Each element's own JSON text. json_each's value column would turn numbers into
# SQL doubles (0.30000000000000004 -> 0.3, big integers -> 1.2e+29); the ->
# operator (SQLite 3.38+) returns the element's text exactly as stored.
SQLITE_ELEMENT_AS_JSON = "s.events -> j.fullkey"
SQLITE_ARROW = (3, 38, 0)
# The session metadata keys a downgrade keeps event times under (see above).
TIMES_KEY = "abathur:event_created_at"
WAS_NULL_KEY = "abathur:metadata_was_null"


def upgrade() -> None:
    op.create_table(
        "session_events",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event", JSONDocument(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_session_events_session_id_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_session_events"),
        sa.UniqueConstraint("session_id", "seq", name="uq_session_events_session_id_seq"),
        json_valid("event", op.f("ck_session_events_event_json")),
        sqlite_autoincrement=True,
    )
    op.create_index("idx_sessions_created_at", "sessions", ["created_at", "id"])

    sqlite = op.get_bind().dialect.name == "sqlite"
    not_arrays = op.get_bind().scalar(
        sa.text(
            "SELECT count(*) FROM sessions WHERE "
            + ("json_type(events) <> 'array'" if sqlite else "jsonb_typeof(events) <> 'array'")
        )
    )
    if not_arrays:
        raise MigrationError(
            f"{not_arrays} sessions have an 'events' value that is not a JSON array; "
            "fix or remove them before upgrading"
        )
    if sqlite:
        version = op.get_bind().exec_driver_sql("SELECT sqlite_version()").scalar()
        if (
            tuple(int(p) for p in str(version).split(".")[:3]) < SQLITE_ARROW
            and op.get_bind()
            .exec_driver_sql("SELECT 1 FROM sessions WHERE events <> '[]' LIMIT 1")
            .first()
        ):
            raise MigrationError(
                f"SQLite {version} cannot copy events without changing their numbers; "
                "upgrade to SQLite 3.38 or newer before this revision"
            )
        # A kept time is the column's own text, as UTCDateTime stored it.
        kept = (
            "CASE WHEN json_type(s.metadata) = 'object' THEN json_extract(s.metadata, "
            f"'$.\"{TIMES_KEY}\"[' || j.key || ']') END"
        )
        op.execute(
            "INSERT INTO session_events (session_id, seq, event, created_at) "
            f"SELECT s.id, j.key + 1, {SQLITE_ELEMENT_AS_JSON}, "
            f"coalesce({kept}, s.last_update_time) "
            "FROM sessions AS s, json_each(s.events) AS j ORDER BY s.id, j.key"
        )
        op.execute(
            "UPDATE sessions SET metadata = CASE "
            f"WHEN json_extract(metadata, '$.\"{WAS_NULL_KEY}\"') THEN NULL "
            f"ELSE json_remove(metadata, '$.\"{TIMES_KEY}\"') END "
            f"WHERE json_type(metadata) = 'object' AND json_type(metadata, '$.\"{TIMES_KEY}\"') "
            "IS NOT NULL"
        )
    else:
        kept = (
            f"CASE WHEN jsonb_typeof(s.metadata -> '{TIMES_KEY}') = 'array' "
            f"THEN CAST(s.metadata -> '{TIMES_KEY}' ->> CAST(e.ord - 1 AS integer) "
            "AS timestamptz) END"
        )
        op.execute(
            "INSERT INTO session_events (session_id, seq, event, created_at) "
            f"SELECT s.id, e.ord, e.value, coalesce({kept}, s.last_update_time) "
            "FROM sessions AS s "
            "CROSS JOIN LATERAL jsonb_array_elements(s.events) WITH ORDINALITY AS e(value, ord) "
            "ORDER BY s.id, e.ord"
        )
        op.execute(
            "UPDATE sessions SET metadata = CASE "
            f"WHEN metadata ? '{WAS_NULL_KEY}' THEN NULL "
            f"ELSE metadata - '{TIMES_KEY}' END "
            f"WHERE jsonb_typeof(metadata) = 'object' AND metadata ? '{TIMES_KEY}'"
        )

    with batch_alter_table("sessions") as batch:
        if sqlite:
            batch.drop_constraint(op.f("ck_sessions_events_json"), type_="check")
        batch.drop_column("events")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("idx_sessions_created_at", table_name="sessions")
    # SQLite copies the table anyway: put the column back where 0002 had it.
    place = {"insert_after": "status"} if sqlite else {}
    with batch_alter_table("sessions", **({"recreate": "always"} if sqlite else {})) as batch:
        batch.add_column(
            sa.Column("events", JSONDocument(), server_default="[]", nullable=False), **place
        )
        if sqlite:
            check = json_valid("events", op.f("ck_sessions_events_json"))
            batch.create_check_constraint(check.name, check.sqltext)

    if sqlite:
        # The subquery fixes the order json_group_array sees (SQLite before 3.44
        # has no ORDER BY inside an aggregate); a test proves the order survives.
        def in_seq_order(column: str) -> str:
            return (
                f"SELECT json_group_array({column}) FROM ("
                "SELECT e.event, e.created_at FROM session_events AS e "
                "WHERE e.session_id = sessions.id ORDER BY e.seq) AS o"
            )

        op.execute(
            f"UPDATE sessions SET events = ({in_seq_order('json(o.event)')}), "
            "metadata = CASE WHEN metadata IS NULL OR json_type(metadata) = 'object' THEN "
            f"json_set(coalesce(metadata, json_object('{WAS_NULL_KEY}', json('true'))), "
            f"'$.\"{TIMES_KEY}\"', json(({in_seq_order('o.created_at')}))) "
            "ELSE metadata END "
            "WHERE EXISTS (SELECT 1 FROM session_events AS e WHERE e.session_id = sessions.id)"
        )
    else:
        op.execute(
            "UPDATE sessions AS s SET events = f.events, "
            "metadata = CASE WHEN s.metadata IS NULL OR jsonb_typeof(s.metadata) = 'object' "
            f"THEN coalesce(s.metadata, jsonb_build_object('{WAS_NULL_KEY}', true)) "
            f"|| jsonb_build_object('{TIMES_KEY}', f.times) "
            "ELSE s.metadata END "
            "FROM (SELECT session_id, jsonb_agg(event ORDER BY seq) AS events, "
            "jsonb_agg(to_jsonb(created_at) ORDER BY seq) AS times "
            "FROM session_events GROUP BY session_id) AS f "
            "WHERE f.session_id = s.id"
        )

    op.drop_table("session_events")
