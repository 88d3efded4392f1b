"""Revision 0015_session_plans: at head ``abathur_append_events`` carries its
own plan settings and ``abathur_shared_state`` exists with the same ones;
below, the append function is as 0011 created it (no settings) and the shared
read is gone; appends work on either side, and a new session returns the
shared state it sees at head. SQLite has no such functions: the revision
changes nothing there."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import text

from abathur.db.migrate import alembic_config
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.support.pg_functions import pg_functions

M14 = "0014_memory_write_lean"
SETTINGS = ["plan_cache_mode=force_generic_plan", "enable_seqscan=off"]


async def _settings(db: Database) -> dict[str, list[str] | None]:
    """The settings of each session function (PostgreSQL), by name."""
    found = await pg_functions(db, "abathur_append_events", "abathur_shared_state")
    return {name: function.settings for name, function in found.items()}


async def _append_below(db: Database, n: int, expected_seq: int) -> int:
    """An append to session ``s`` below revision 0017 (whose function takes
    the events as jsonb, not json as today's code sends them): through
    ``abathur_append_events`` on PostgreSQL, the service on SQLite."""
    if db.is_sqlite:
        return await db.sessions.append_events("s", [{"n": n}], expected_seq=expected_seq)
    async with db.transaction() as session:
        result = await session.execute(
            text(
                "SELECT abathur_append_events('s', CAST(:events AS jsonb), '{}', "
                ":expected_seq, now())"
            ),
            {"events": f'[{{"n": {n}}}]', "expected_seq": expected_seq},
        )
        return int(result.scalar_one())


async def test_the_session_functions_plan_once_at_head_and_as_before_below(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.initialize()
    created = await db.sessions.create_session("s", "app", "u", initial_state={"user:k": 1})
    assert created["state"] == {"user:k": 1}
    assert (await db.sessions.create_session("t", "app", "u"))["state"] == {"user:k": 1}
    assert (await db.sessions.create_session("o", "app", "other"))["state"] == {}
    assert await db.sessions.append_events("s", [{"n": 1}], {"k": 1}) == 1
    if not db.is_sqlite:
        assert await _settings(db) == {
            "abathur_append_events": SETTINGS,
            "abathur_shared_state": SETTINGS,
        }
    await db.downgrade(M14)
    assert await db.current_revision() == M14
    if not db.is_sqlite:
        assert await _settings(db) == {"abathur_append_events": None}
    assert await _append_below(db, 2, expected_seq=1) == 2
    await db.upgrade("head")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await db.current_revision() == head
    assert await db.sessions.append_events("s", [{"n": 3}], expected_seq=2) == 3
    got = await db.sessions.get_session("s")
    assert got is not None and [e["n"] for e in got["events"]] == [1, 2, 3]
    assert got["state"] == {"k": 1, "user:k": 1}
    assert (await db.sessions.create_session("u", "app", "u"))["state"] == {"user:k": 1}
