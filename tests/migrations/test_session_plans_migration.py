"""Revision 0014_session_plans: ``abathur_append_events`` carries its
own plan settings at head, none below (as 0011 created it), and appends work
on either side. SQLite has no such function: the revision changes nothing."""

from __future__ import annotations

from sqlalchemy import text

from abathur.infrastructure.database import Database
from tests.conftest import DbFactory

M13 = "0013_search_function"
M14 = "0014_session_plans"


async def _settings(db: Database) -> list[str] | None:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text(
                "SELECT p.proconfig FROM pg_proc AS p "
                "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND p.proname = 'abathur_append_events'"
            )
        )
        found = result.scalar_one()
        return None if found is None else list(found)


async def test_the_append_function_plans_once_at_head_and_as_before_below(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.initialize()
    await db.sessions.create_session("s", "app", "u")
    assert await db.sessions.append_events("s", [{"n": 1}], {"k": 1}) == 1
    if not db.is_sqlite:
        assert await _settings(db) == ["plan_cache_mode=force_generic_plan", "enable_seqscan=off"]
    await db.downgrade(M13)
    assert await db.current_revision() == M13
    if not db.is_sqlite:
        assert await _settings(db) is None
    assert await db.sessions.append_events("s", [{"n": 2}], expected_seq=1) == 2
    await db.upgrade("head")
    assert await db.current_revision() == M14
    assert await db.sessions.append_events("s", [{"n": 3}], expected_seq=2) == 3
    got = await db.sessions.get_session("s")
    assert got is not None and [e["n"] for e in got["events"]] == [1, 2, 3]
    assert got["state"] == {"k": 1}
