"""Revision 0018_session_read_function: at head on PostgreSQL
``abathur_session_whole`` exists with the session functions' plan settings
and ``get_session``'s whole read (through it) returns what the read of
several statements (``recent_events``) returns; below, the function is gone
and the other read still works; upgraded again, both agree. SQLite: the
revision changes nothing."""

from __future__ import annotations

from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.support.pg_functions import pg_functions

M17 = "0017_session_events_json"
SETTINGS = ["plan_cache_mode=force_generic_plan", "enable_seqscan=off"]
EVENTS = [{"n": 1, "zz": 1e300, "a": "é"}, {"n": 2, "nested": {"b": [1, None]}}]


async def _function(db: Database) -> list[list[str] | None]:
    """The own settings of ``abathur_session_whole``, if it exists (PostgreSQL)."""
    found = await pg_functions(db, "abathur_session_whole")
    return [function.settings for function in found.values()]


async def test_the_whole_read_is_a_function_at_head_and_gone_below(make_db: DbFactory) -> None:
    db = first = await make_db()
    await db.initialize()
    await db.sessions.create_session("s", "app", "u", initial_state={"k": 0, "user:u": 1})
    await db.sessions.append_events("s", EVENTS, {"k": 1, "app:a": 2})
    several = await db.sessions.get_session("s", recent_events=10)
    assert several is not None and several["state"] == {"k": 1, "user:u": 1, "app:a": 2}
    assert await db.sessions.get_session("s") == several
    as_text = await db.sessions.get_session("s", events_as_text=True)
    assert as_text is not None and all(type(e) is str for e in as_text["events"])
    assert await db.sessions.get_session("none") is None
    if not db.is_sqlite:
        assert await _function(db) == [SETTINGS]

    await db.downgrade(M17)
    if not db.is_sqlite:
        assert await _function(db) == []
    db = await make_db(share_with=first)  # no statement cached by the first one's connections
    assert await db.sessions.get_session("s", recent_events=10) == several

    await db.upgrade("head")
    if not db.is_sqlite:
        assert await _function(db) == [SETTINGS]
    assert await db.sessions.get_session("s") == several
