"""Every revision's downgrade keeps what the revision below can hold: a
database with rows in every table walks down one revision at a time and
back up one (the "stairs" of pytest-alembic, with data), and after each
step down and up again every row is as it was, except in the tables the
revision itself created, whose rows the revision below has nowhere to keep."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from abathur.db.migrate import alembic_config
from abathur.embeddings import HashingEmbedder
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory

SCRIPT = ScriptDirectory.from_config(alembic_config())
# Oldest first, from the first revision with every table (sessions and memory).
REVISIONS = [rev.revision for rev in reversed(list(SCRIPT.walk_revisions()))][1:]


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        # json, jsonb and TEXT-held JSON compare as values; jsonb (below 0017)
        # cannot hold the order of an object's keys.
        return json.dumps(parsed, sort_keys=True)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _dump(connection: Connection) -> dict[str, list[str]]:
    tables = sorted(set(inspect(connection).get_table_names()) - {"alembic_version"})
    dump: dict[str, list[str]] = {}
    for table in tables:
        rows = connection.exec_driver_sql(f'SELECT * FROM "{table}"').mappings()
        dump[table] = sorted(repr(sorted((k, _normal(v)) for k, v in row.items())) for row in rows)
    return dump


async def _dump_now(db: Database) -> dict[str, list[str]]:
    # A new connection: a pooled one's cached ``SELECT *`` plan is stale
    # after a migration changed the table (asyncpg refuses it).
    await db.engine.dispose()
    async with db.engine.connect() as conn:
        return await conn.run_sync(_dump)


async def test_each_revision_down_and_up_again_keeps_the_rows(make_db: DbFactory) -> None:
    db = await make_db(embedder=HashingEmbedder(dims=8))
    await db.initialize()
    task = (await db.tasks.create_task("stairs")).id
    await db.sessions.create_session(
        "s1", "app", "alice", initial_state={"k": 1, "app:theme": "dark", "user:lang": "en"}
    )
    await db.sessions.append_event("s1", {"author": "user", "text": "hi"}, {"k": 2})
    await db.memory.add_memory(
        "user:alice", "pref", {"v": 1}, "semantic", "alice", task, ttl=timedelta(days=9)
    )
    await db.memory.add_memory("user:alice", "fact", {"v": 2}, "episodic", "alice", task)
    await db.memory.update_memory("user:alice", "fact", {"v": 3}, "alice", task)
    before = await _dump_now(db)
    filled = ("tasks", "audit", "sessions", "session_events", "shared_state", "memory_entries")
    assert all(before[t] for t in (*filled, "memory_expiry", "memory_embeddings")), before

    for revision in reversed(REVISIONS[1:]):
        below = SCRIPT.get_revision(revision).down_revision
        at_revision = await _dump_now(db)
        await db.downgrade(below)
        await db.upgrade(revision)
        again = await _dump_now(db)
        await db.downgrade(below)  # then on down the stairs
        created_here = set(again) - set(await _dump_now(db))
        kept = {t: rows for t, rows in at_revision.items() if t not in created_here}
        assert {t: again[t] for t in kept} == kept, revision
