"""Revision 0017_session_events_json: on PostgreSQL ``session_events.event``
is ``json`` at head and ``abathur_append_events`` takes its events as
``json``; below, the column is ``jsonb`` and the function 0011's (with 0015's
settings) again. Events stored on either side survive the round trip, read
back equal; appends work at head again. SQLite: the revision changes nothing
(TEXT either way)."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import text

from abathur.db.migrate import alembic_config
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.db.test_json_roundtrip import as_json_numbers
from tests.support.pg_functions import pg_functions

M16 = "0016_search_range_ids"
SETTINGS = ["plan_cache_mode=force_generic_plan", "enable_seqscan=off"]
EVENTS: list[dict[str, Any]] = [
    {"type": "start", "nested": {"a": [1, 2.5, None, True]}, "u": "é ✓ \u2028"},
    {"zz": 1, "a": 2, "mm": {"y": [], "b": {}}},
    {"big": 1e300, "small": -1.5e-300, "int": 123456789012345678901234567890, "z": -0.0},
    {"escaped": 'quote " backslash \\ tab \t', "": "empty key"},
]


async def _column_type(db: Database) -> str:
    async with db.transaction(write=False) as session:
        return str(
            (
                await session.execute(
                    text(
                        "SELECT data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() "
                        "AND table_name = 'session_events' AND column_name = 'event'"
                    )
                )
            ).scalar_one()
        )


async def _append_function(db: Database) -> tuple[str, list[str] | None]:
    found = (await pg_functions(db, "abathur_append_events"))["abathur_append_events"]
    return found.identity, found.settings


async def _stored(db: Database) -> list[Any]:
    """The events as stored, without the ids and timestamps the service adds."""
    listed = await db.sessions.list_events("s")
    return [
        {k: v for k, v in e["event"].items() if k not in ("event_id", "timestamp")} for e in listed
    ]


async def test_events_are_json_at_head_jsonb_below_and_survive_both_ways(
    make_db: DbFactory,
) -> None:
    db = first = await make_db()
    await db.initialize()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    await db.sessions.create_session("s", "app", "u")
    await db.sessions.append_events("s", EVENTS[:2])
    await db.sessions.append_events("s", EVENTS[2:], {"k": 1}, expected_seq=2)
    assert await _stored(db) == EVENTS  # as written: numbers and all
    if not db.is_sqlite:
        assert await _column_type(db) == "json"
        assert await _append_function(db) == (
            "p_session_id text, p_events json, p_delta jsonb, p_expected_seq integer, "
            "p_now timestamp with time zone",
            SETTINGS,
        )

    await db.downgrade(M16)
    assert await db.current_revision() == M16
    # A new Database: the first one's connections cached statements of json results.
    db = await make_db(share_with=first)
    if not db.is_sqlite:
        assert await _column_type(db) == "jsonb"
        assert await _append_function(db) == (
            "p_session_id text, p_events jsonb, p_delta jsonb, p_expected_seq integer, "
            "p_now timestamp with time zone",
            SETTINGS,
        )
        # JSONB keeps numbers as NUMERIC (1e300 is an integer of 301 digits to it).
        assert as_json_numbers(await _stored(db)) == as_json_numbers(EVENTS)
    else:
        assert await _stored(db) == EVENTS

    await db.upgrade("head")
    assert await db.current_revision() == head
    db = await make_db(share_with=first)
    assert as_json_numbers(await _stored(db)) == as_json_numbers(EVENTS)
    assert await db.sessions.append_events("s", [EVENTS[0]], expected_seq=4) == 5
    got = await db.sessions.get_session("s")
    assert got is not None and len(got["events"]) == 5 and got["state"] == {"k": 1}
    assert (await _stored(db))[4] == EVENTS[0]
