"""Several OS processes, each with a Database of its own, on one SQLite file
and on one PostgreSQL schema, writing the same keys at once: session creates
of the same ids, appends to one session, puts and updates of one memory key.
Nothing is lost, versions and seqs stay contiguous, and the only error a
process sees is the AlreadyExistsError of a create that lost its race."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry
from tests.conftest import PG_URL, pg_schema
from tests.support.processes import run_all_ok

WORKER = """
    import asyncio, json, sys
    from pathlib import Path
    from abathur.errors import AlreadyExistsError
    from abathur.infrastructure.database import Database

    async def main(url, schema, task_id, worker, count):
        worker, count = int(worker), int(count)
        if schema == "-":
            db = Database(Path(url))
        else:
            db = Database(url, connect_args={"server_settings": {"search_path": schema}})
        created = []

        async def create(i):
            try:
                await db.sessions.create_session(f"race{i}", "app", f"w{worker}")
                created.append(i)
            except AlreadyExistsError:
                pass

        async def lane(i):
            await create(i)
            await db.sessions.append_event("shared", {"w": worker, "i": i}, {f"w{worker}": i})
            await db.memory.put_memory(
                "user:shared", "put", {"w": worker, "i": i}, "semantic", by=f"w{worker}",
                task_id=task_id,
            )
            await db.memory.update_memory(
                "user:shared", "update", {"w": worker, "i": i}, f"w{worker}", task_id
            )

        try:
            await asyncio.gather(*(lane(i) for i in range(count)))
        finally:
            await db.close()
        print(json.dumps(created), file=sys.stderr)
    """


@asynccontextmanager
async def shared_database(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The URL (or path) and schema (``-`` on SQLite) the processes open."""
    if backend == "sqlite":
        yield str(tmp_path / "shared.db"), "-"
        return
    assert PG_URL
    async with pg_schema(migrated=True) as schema:
        yield PG_URL, schema


def open_shared(url: str, schema: str) -> Database:
    if schema == "-":
        return Database(Path(url))
    return Database(url, connect_args={"server_settings": {"search_path": schema}})


@pytest.mark.slow
async def test_processes_writing_the_same_keys_lose_nothing(backend: str, tmp_path: Path) -> None:
    workers, count = 4, 12
    async with shared_database(backend, tmp_path) as (url, schema):
        async with open_shared(url, schema) as db:
            await db.initialize()
            task_id = (await db.tasks.create_task("several processes")).id
            await db.sessions.create_session("shared", "app", "u")
            await db.memory.add_memory("user:shared", "update", {"i": -1}, "semantic", "a", task_id)
        errors = await run_all_ok(
            tmp_path,
            WORKER,
            [[url, schema, task_id, str(w), str(count)] for w in range(workers)],
        )
        for err in errors:  # the result line alone: no warning, no error logged
            assert len(err.strip().splitlines()) == 1, err
        created = [json.loads(err) for err in errors]
        async with open_shared(url, schema) as db:
            # Each session id was created exactly once, by one process.
            assert sorted(i for mine in created for i in mine) == list(range(count))
            for i in range(count):
                assert await db.sessions.get_session(f"race{i}") is not None
            got = await db.sessions.get_session("shared")
            assert got is not None
            assert sorted((e["w"], e["i"]) for e in got["events"]) == sorted(
                (w, i) for w in range(workers) for i in range(count)
            )
            seqs = [e["seq"] for e in await db.sessions.list_events("shared", limit=1000)]
            assert seqs == list(range(1, workers * count + 1))
            assert set(got["state"]) == {f"w{w}" for w in range(workers)}
            expected = sorted((w, i) for w in range(workers) for i in range(count))
            for key, first in (("put", 1), ("update", 2)):
                history = await db.memory.get_memory_history("user:shared", key)
                assert [h["version"] for h in history] == list(range(1, len(history) + 1))
                assert sorted((h["value"]["w"], h["value"]["i"]) for h in history[first - 1 :]) == (
                    expected
                )
            async with db.transaction(write=False) as session:
                audited = await session.scalar(select(func.count()).select_from(AuditEntry))
            assert audited == 1 + 2 * workers * count  # one per version
            assert await db.integrity_check() == "ok"
