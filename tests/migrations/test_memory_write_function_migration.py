"""Revisions 0010 to 0016: ``abathur_write_memory``, ``abathur_append_events``
and ``abathur_search_memories`` exist at head on PostgreSQL, each is gone after
the downgrade below its revision (rows kept, writes and searches possible again
once upgraded); below 0016 the search function is 0013's exactly (arguments,
body, settings); below 0014 the memory function has no settings of its own
(0012's function exactly), below 0012 it is 0010's again (its arguments and
body), with the embeddings written through it kept; the memory function takes
the same bulk lock as ``put_memories``. SQLite has no such functions and
the revisions change nothing there. (Revision 0015's session functions:
``test_session_plans_migration``.)"""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import text

from abathur.db.migrate import alembic_config
from abathur.embeddings import HashingEmbedder
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.repositories.memory import BULK_LOCK_ID
from tests.conftest import DbFactory
from tests.support.pg_functions import pg_functions

M9 = "0009_memory_current_version"
M10 = "0010_memory_write_function"
M11 = "0011_session_append_function"
M12 = "0012_memory_write_embedding"
M13 = "0013_search_function"
M14 = "0014_memory_write_lean"
M15 = "0015_session_plans"
M16 = "0016_search_range_ids"


def _revision(name: str) -> Any:
    return ScriptDirectory.from_config(alembic_config()).get_revision(name).module


async def _write_function(db: Database) -> tuple[str, str]:
    """``abathur_write_memory``'s arguments and body (PostgreSQL)."""
    arguments, body, _settings = await _write_function_with_settings(db)
    return arguments, body


async def _write_function_with_settings(db: Database) -> tuple[str, str, list[str] | None]:
    """``abathur_write_memory``'s arguments, body and own settings (PostgreSQL)."""
    found = (await pg_functions(db, "abathur_write_memory"))["abathur_write_memory"]
    return found.arguments, found.body, found.settings


async def _search_function(db: Database) -> tuple[str, str, list[str] | None]:
    """``abathur_search_memories``' arguments, body and own settings (PostgreSQL)."""
    found = (await pg_functions(db, "abathur_search_memories"))["abathur_search_memories"]
    return found.arguments, found.body, found.settings


async def _embeddings(db: Database) -> list[tuple[str, int, str, int]]:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text(
                "SELECT m.key, m.version, e.model, e.dims FROM memory_embeddings AS e "
                "JOIN memory_entries AS m ON m.id = e.memory_entry_id ORDER BY m.key, m.version"
            )
        )
        return [(str(k), int(v), str(model), int(d)) for k, v, model, d in result]


async def _functions(db: Database) -> list[str]:
    if db.is_sqlite:
        return []
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text(
                "SELECT p.proname FROM pg_proc AS p "
                "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND p.proname LIKE 'abathur%' "
                "ORDER BY p.proname"
            )
        )
        return [str(name) for (name,) in result]


async def _versions(db: Database) -> list[tuple[str, int, bool]]:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            text("SELECT key, version, is_current FROM memory_entries ORDER BY key, version")
        )
        return [(str(k), int(v), bool(c)) for k, v, c in result]


async def test_the_function_exists_at_head_and_is_gone_after_the_downgrade(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.initialize()
    assert (
        await db.current_revision()
        == ScriptDirectory.from_config(alembic_config()).get_current_head()
    )
    below_search = [] if db.is_sqlite else ["abathur_append_events", "abathur_write_memory"]
    expected = (
        []
        if db.is_sqlite
        else [
            "abathur_append_events",
            "abathur_search_memories",
            "abathur_shared_state",
            "abathur_write_memory",
        ]
    )
    # Below 0015: no abathur_shared_state (create_session's shared read).
    below_sessions = [f for f in expected if f != "abathur_shared_state"]
    # At head (0018): also abathur_session_whole (get_session's whole read).
    functions_at_head = sorted(expected + ([] if db.is_sqlite else ["abathur_session_whole"]))
    assert await _functions(db) == functions_at_head
    task_id = (await db.tasks.create_task("migration")).id
    await db.memory.put_memory("user:m", "k", {"v": 1}, "semantic", by="a", task_id=task_id)
    embedded = MemoryService(db, embedder=HashingEmbedder(dims=8))
    await embedded.put_memory("user:m", "k", {"v": 2}, "semantic", by="a", task_id=task_id)
    written = [("k", 2, HashingEmbedder.MODEL, 8)]
    assert await _embeddings(db) == written

    await db.sessions.create_session("s", "app", "u")
    await db.sessions.append_event("s", {"n": 1})
    if not db.is_sqlite:
        at_head = await _write_function_with_settings(db)
        assert "p_embedding_vectors bytea[]" in at_head[0]
        assert at_head[2] == _revision(M14).CONFIG
    assert [m["version"] for m in await db.memory.search_memories("user:m")] == [2]
    if not db.is_sqlite:
        search_at_head = await _search_function(db)
        assert search_at_head[1] == _revision(M16).BODY
    await db.downgrade(M15)
    assert await _functions(db) == expected
    if not db.is_sqlite:
        # 0013's function exactly: the same arguments, body and settings.
        below = await _search_function(db)
        assert below[0] == search_at_head[0] and below[2] == search_at_head[2]
        assert below[1] == _revision(M13).BODY != search_at_head[1]
        assert await _write_function_with_settings(db) == at_head
    assert [m["version"] for m in await db.memory.search_memories("user:m")] == [2]
    await db.downgrade(M13)
    assert await _functions(db) == below_sessions
    if not db.is_sqlite:
        # 0012's function exactly: the same arguments and body, no settings.
        assert await _write_function_with_settings(db) == (*at_head[:2], None)
        assert at_head[1] == _revision(M12).BODY
    await db.downgrade(M12)
    assert await _functions(db) == below_search
    if not db.is_sqlite:
        assert await _write_function(db) == at_head[:2]
    await db.downgrade(M11)
    assert await _functions(db) == below_search
    if not db.is_sqlite:
        previous = _revision(M10)
        signature = previous.SIGNATURE.replace("timestamptz", "timestamp with time zone")
        assert await _write_function(db) == (signature, previous.BODY)
    assert await _embeddings(db) == written
    await db.downgrade(M10)
    assert await _functions(db) == ([] if db.is_sqlite else ["abathur_write_memory"])
    await db.downgrade(M9)
    assert await db.current_revision() == M9
    assert await _functions(db) == []
    assert await _versions(db) == [("k", 1, False), ("k", 2, True)]
    assert await _embeddings(db) == written

    await db.upgrade("head")
    assert await _functions(db) == functions_at_head
    if not db.is_sqlite:
        assert await _write_function_with_settings(db) == at_head
        assert await _search_function(db) == search_at_head
    row = await embedded.put_memory("user:m", "k", {"v": 3}, "semantic", by="a", task_id=task_id)
    assert row["version"] == 3
    assert await _versions(db) == [("k", 1, False), ("k", 2, False), ("k", 3, True)]
    assert await _embeddings(db) == [*written, ("k", 3, HashingEmbedder.MODEL, 8)]
    assert await db.sessions.append_events("s", [{"n": 2}]) == 2
    assert [m["version"] for m in await db.memory.search_memories("user:m")] == [3]


def test_the_function_takes_the_bulk_lock_of_put_memories() -> None:
    """The revision's body is frozen; the lock id it names must still be the
    one ``put_memories`` and the Python path take."""
    for name in (M10, M12):
        revision = _revision(name)
        assert revision.BULK_LOCK_ID == BULK_LOCK_ID
        assert f"pg_advisory_xact_lock_shared({BULK_LOCK_ID})" in revision.BODY
