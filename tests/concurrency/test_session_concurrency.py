"""No lost update: concurrent appends and state writes on one session, on both
backends, and several OS processes appending to one SQLite file."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from abathur.infrastructure.database import Database
from tests.support.loop import until
from tests.support.processes import run_all_ok

SESSIONS = 50
APPENDS = 20


async def test_concurrent_appends_keep_every_event_and_state_key(db: Database) -> None:
    ids = [f"s{i}" for i in range(SESSIONS)]
    for sid in ids:
        await db.sessions.create_session(sid, "app", "alice")

    await asyncio.gather(
        *(
            db.sessions.append_event(sid, {"writer": n}, {f"k{n}": n})
            for n in range(APPENDS)
            for sid in ids
        )
    )

    for sid in ids:
        got = await db.sessions.get_session(sid)
        assert got is not None
        assert sorted(e["writer"] for e in got["events"]) == list(range(APPENDS))
        assert got["state"] == {f"k{n}": n for n in range(APPENDS)}
        assert [e["seq"] for e in await db.sessions.list_events(sid)] == list(range(1, APPENDS + 1))


async def test_concurrent_state_writers_keep_every_key(db: Database) -> None:
    await db.sessions.create_session("s", "app", "alice", initial_state={"base": True})
    writers = 50
    await asyncio.gather(
        *(db.sessions.set_state("s", f"key{n}", {"n": n}) for n in range(writers)),
        *(db.sessions.append_event("s", {"n": n}, {f"delta{n}": n}) for n in range(writers)),
    )
    got = await db.sessions.get_session("s")
    assert got is not None
    expected = {"base": True}
    expected |= {f"key{n}": {"n": n} for n in range(writers)}
    expected |= {f"delta{n}": n for n in range(writers)}
    assert got["state"] == expected
    assert len(got["events"]) == writers


async def test_concurrent_expected_seq_lets_exactly_one_writer_win(db: Database) -> None:
    await db.sessions.create_session("s", "app", "alice")
    results = await asyncio.gather(
        *(db.sessions.append_event("s", {"n": n}, expected_seq=0) for n in range(10)),
        return_exceptions=True,
    )
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"NoneType": 1, "StaleSessionError": 9}
    got = await db.sessions.get_session("s")
    assert got is not None and len(got["events"]) == 1


APPENDER = """
    import asyncio
    from pathlib import Path
    from abathur.infrastructure.database import Database

    async def main(path, worker, count):
        worker, count = int(worker), int(count)
        db = Database(Path(path))
        try:
            await asyncio.gather(*(
                db.sessions.append_event("shared", {"worker": worker, "i": i}, {f"w{worker}": i})
                for i in range(count)
            ))
        finally:
            await db.close()
    """


@pytest.mark.slow
async def test_processes_appending_to_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    workers, count = 4, 50
    async with Database(path) as db:
        await db.sessions.create_session("shared", "app", "alice")
        errors = await run_all_ok(
            tmp_path, APPENDER, [[str(path), str(w), str(count)] for w in range(workers)]
        )
        assert not [err for err in errors if "locked" in err], errors

        got = await db.sessions.get_session("shared")
        assert got is not None
        assert got["last_seq"] == workers * count
        seen = Counter((e["worker"], e["i"]) for e in got["events"])
        assert seen == Counter((w, i) for w in range(workers) for i in range(count))
        seqs = [e["seq"] for e in await db.sessions.list_events("shared", limit=1000)]
        assert seqs == list(range(1, workers * count + 1))
        assert set(got["state"]) == {f"w{w}" for w in range(workers)}
        assert await db.integrity_check() == "ok"


async def test_events_are_stamped_in_the_order_they_are_stored(tmp_path: Path) -> None:
    """Two processes (here two Database objects) append to one session; the
    first to call waits for the write lock. ``created_at`` is taken once the
    lock is held, so it follows seq, and a poller reading ``after=`` the
    newest time it saw never misses an event stored later."""
    path = tmp_path / "order.db"
    async with Database(path) as first, Database(path) as second:
        await first.sessions.create_session("s", "app", "u")
        assert first._writer is not None
        async with first._writer:  # the first process is busy writing
            waiting = asyncio.ensure_future(first.sessions.append_event("s", {"who": "first"}))
            group = first._group
            assert group is not None
            await until(lambda: group._queue)  # called, and waiting for the lock
            await second.sessions.append_event("s", {"who": "second"})
            seen = await second.sessions.list_events("s")
        await waiting
        stored = await second.sessions.list_events("s")
        assert [e["event"]["who"] for e in stored] == ["second", "first"]
        assert stored[0]["created_at"] < stored[1]["created_at"]
        newer = await second.sessions.get_session("s", after=seen[-1]["created_at"])
        assert newer is not None and [e["who"] for e in newer["events"]] == ["first"]


async def test_concurrent_shared_state_writers_of_one_user_lose_nothing(db: Database) -> None:
    """50 sessions of one user append ``user:`` and ``app:`` deltas at once:
    every key lands in the shared state, next to each session's own event."""
    ids = [f"s{i}" for i in range(SESSIONS)]
    for sid in ids:
        await db.sessions.create_session(sid, "app", "alice")
    await db.sessions.create_session("other", "app", "bob")

    await asyncio.gather(
        *(
            db.sessions.append_event(
                sid,
                {"writer": n},
                {f"user:k{n}": n, "user:last": n, f"app:seen{n}": True, f"own{n}": n},
            )
            for n, sid in enumerate(ids)
        ),
        *(db.sessions.set_state(sid, f"user:set{n}", n) for n, sid in enumerate(ids)),
    )

    expected_user = {f"user:k{n}": n for n in range(SESSIONS)}
    expected_user |= {f"user:set{n}": n for n in range(SESSIONS)}
    expected_app = {f"app:seen{n}": True for n in range(SESSIONS)}
    for n, sid in enumerate(ids):
        got = await db.sessions.get_session(sid)
        assert got is not None
        assert [e["writer"] for e in got["events"]] == [n]
        last = got["state"].pop("user:last")
        assert last in range(SESSIONS)
        assert got["state"] == expected_user | expected_app | {f"own{n}": n}
    bob = await db.sessions.get_session("other")
    assert bob is not None and bob["state"] == expected_app
