"""Group commit: writers that wait together share a transaction, yet each
unit stays atomic and alone in its outcome (group_commit.py).

The semantic tests run on both backends (PostgreSQL runs every unit in its own
transaction, so they pin down that the two behave alike); the tests that the
sharing really happens are SQLite-only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from abathur.db import engine as engine_module
from abathur.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseError,
    NotFoundError,
    StaleSessionError,
)
from abathur.infrastructure.database import Database
from abathur.repositories.audit import AuditRepository
from abathur.repositories.sessions import SessionRepository
from tests.support.loop import Retries, until


def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite waits 20 ms for a lock another process holds, not 5 s."""
    pragmas = tuple(
        "PRAGMA busy_timeout=20" if p.startswith("PRAGMA busy_timeout") else p
        for p in engine_module.SQLITE_PRAGMAS
    )
    monkeypatch.setattr(engine_module, "SQLITE_PRAGMAS", pragmas)


def count_transactions(db: Database) -> list[int]:
    """A one-element counter of the transactions the engine begins from now on."""
    begun = [0]

    def on_begin(_conn: Any) -> None:
        begun[0] += 1

    event.listen(db.engine.sync_engine, "begin", on_begin)
    return begun


async def test_waiting_writers_share_transactions(tmp_path: Path) -> None:
    async with Database(tmp_path / "g.db") as db:
        await db.sessions.create_session("s", "app", "u")
        begun = count_transactions(db)
        await asyncio.gather(*(db.sessions.append_event("s", {"n": n}) for n in range(100)))
        # The first writer runs alone; the 99 that queued behind it share far
        # fewer transactions than one each.
        assert 2 <= begun[0] <= 10, begun[0]
        events = await db.sessions.list_events("s", limit=1000)
        assert [e["seq"] for e in events] == list(range(1, 101))
        assert sorted(e["event"]["n"] for e in events) == list(range(100))


AUDIT_FAILS_FOR_BROKEN = """
CREATE FUNCTION audit_fails_for_broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit store down'; END $$;
CREATE TRIGGER audit_fails_for_broken BEFORE INSERT ON audit FOR EACH ROW
WHEN (NEW.memory_namespace = 'user:broken') EXECUTE FUNCTION audit_fails_for_broken();
"""


async def test_a_failing_unit_is_rolled_back_alone(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Units that fail in every way a unit can (a domain error raised by the
    unit, a UNIQUE violation in the fast path, an ORM flush failure, an error
    after the unit has already written) lose only their own work: everything
    queued with them commits."""
    original_audit = AuditRepository.append

    def audit_fails_for_broken(self: AuditRepository, entry: Any) -> Any:
        if entry.memory_namespace == "user:broken":
            raise RuntimeError("audit store down")
        return original_audit(self, entry)

    monkeypatch.setattr(AuditRepository, "append", audit_fails_for_broken)
    if not db.is_sqlite:  # PostgreSQL writes a memory's audit row in abathur_write_memory
        async with db.transaction() as session:
            for statement in AUDIT_FAILS_FOR_BROKEN.split(";\n"):
                if statement.strip():
                    await session.execute(text(statement))
    await db.sessions.create_session("s", "app", "u")
    await db.sessions.create_session("closed", "app", "u")
    await db.sessions.terminate_session("closed")
    begun = count_transactions(db)

    calls: list[tuple[str, Any]] = []
    for n in range(20):
        calls.append(("ok", db.sessions.append_event("s", {"n": n}, {f"k{n}": n})))
        calls.append(("missing", db.sessions.append_event("nope", {"n": n})))
    calls += [
        ("closed", db.sessions.set_state("closed", "k", 1)),
        ("stale", db.sessions.append_event("s", {"n": "stale"}, expected_seq=10_000)),
        ("duplicate", db.sessions.create_session("s", "app", "u")),
        ("duplicate task", db.tasks.create_task("again", id=task_id)),
        ("ok", db.sessions.create_session("new", "app", "u", initial_state={"a": 1})),
        ("ok", db.memory.add_memory("user:u", "k", {"v": 1}, "semantic", "u", task_id)),
        ("missing task", db.memory.add_memory("user:u", "k2", {"v": 1}, "semantic", "u", "x")),
        # writes its memory row, then fails on the audit row: the row must go too
        (
            "half written",
            db.memory.add_memory("user:broken", "k", {"v": 1}, "semantic", "u", task_id),
        ),
    ]
    outcomes = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)

    expected: dict[str, type[BaseException] | None] = {
        "ok": None,
        "missing": NotFoundError,
        "closed": ConflictError,
        "stale": StaleSessionError,
        "duplicate": AlreadyExistsError,
        "duplicate task": AlreadyExistsError,
        "missing task": NotFoundError,
        "half written": RuntimeError if db.is_sqlite else DatabaseError,
    }
    for (kind, _), outcome in zip(calls, outcomes, strict=True):
        wanted = expected[kind]
        if wanted is None:
            assert not isinstance(outcome, BaseException), (kind, outcome)
        else:
            assert isinstance(outcome, wanted), (kind, outcome)

    got = await db.sessions.get_session("s")
    assert got is not None
    assert sorted(e["n"] for e in got["events"]) == list(range(20))
    assert got["state"] == {f"k{n}": n for n in range(20)}
    assert await db.sessions.get_state("new", "a") == 1
    assert (await db.memory.get_memory("user:u", "k")) is not None
    assert await db.memory.get_memory("user:u", "k2") is None
    assert await db.memory.get_memory_history("user:broken", "k") == []
    assert await db.sessions.get_session("nope") is None
    closed = await db.sessions.get_session("closed")
    assert closed is not None and closed["state"] == {}
    if db.is_sqlite:  # the failures above really shared transactions with successes
        assert begun[0] < len(calls) // 2, begun[0]


async def test_writers_cancelled_while_queued_never_run(tmp_path: Path) -> None:
    async with Database(tmp_path / "q.db") as db:
        await db.sessions.create_session("s", "app", "u")
        assert db._writer is not None and db._group is not None
        async with db._writer:  # someone is writing: the next writers queue
            queued = [
                asyncio.ensure_future(db.sessions.append_event("s", {"n": n}, {f"k{n}": n}))
                for n in range(10)
            ]
            group = db._group
            await until(lambda: len(group._queue) == 10)
            for task in queued[::2]:
                task.cancel()
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[::2])
        got = await db.sessions.get_session("s")
        assert got is not None
        assert [e["n"] for e in got["events"]] == [1, 3, 5, 7, 9]
        assert got["state"] == {f"k{n}": n for n in (1, 3, 5, 7, 9)}


async def test_a_caller_cancelled_mid_unit_leaves_it_whole(db: Database) -> None:
    """On SQLite the unit runs on to its end and nobody gets its connection or
    the write lock before it ends; on either backend the log stays consistent."""
    await db.sessions.create_session("s", "app", "u")
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    finished: list[bool] = []

    def slow_append(conn: Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.2)
        SessionRepository(conn).add_events("s", [{"n": "slow"}], 1, datetime.now(UTC))
        finished.append(True)

    unit = asyncio.ensure_future(db.write(slow_append))
    await started.wait()
    unit.cancel()
    followers = [db.sessions.append_event("s", {"n": n}) for n in range(5)]
    with pytest.raises(asyncio.CancelledError):
        await unit
    if db.is_sqlite:  # the cancelled caller let go only once its unit had ended
        assert finished == [True]
    await asyncio.gather(*followers)
    events = await db.sessions.list_events("s")
    ns = [e["event"]["n"] for e in events]
    # SQLite cannot stop a unit its worker thread has begun: it commits, before
    # any follower. PostgreSQL may roll the cancelled unit back. Whole or nothing.
    assert sorted(n for n in ns if n != "slow") == [0, 1, 2, 3, 4]
    if db.is_sqlite:
        assert ns[0] == "slow"
    assert [e["seq"] for e in events] == list(range(1, len(ns) + 1))


async def test_close_leaves_no_connection_open(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.db")
    await db.initialize()
    await db.sessions.create_session("s", "app", "u")
    writes = [asyncio.ensure_future(db.sessions.append_event("s", {"n": n})) for n in range(20)]
    await asyncio.sleep(0)
    await asyncio.gather(*writes)
    await db.close()
    assert db._idle == {False: [], True: []}
    assert db.engine.pool.checkedout() == 0


@pytest.mark.parametrize("writers", [1, 30])
async def test_writers_outlast_a_lock_held_past_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    """Another process holds the write lock far longer than the busy timeout:
    BEGIN fails with "database is locked", and the unit (or the whole batch)
    is retried until the lock is free; nothing is lost, no error reaches a caller."""
    short_busy_timeout(monkeypatch)
    retries = Retries(monkeypatch)
    path = tmp_path / "held.db"
    async with Database(path) as db:
        await db.sessions.create_session("s", "app", "u")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        appends = asyncio.gather(*(db.sessions.append_event("s", {"n": n}) for n in range(writers)))
        await retries.reach(5)  # five busy timeouts met, each retried
        assert not appends.done()
        other.execute("COMMIT")
        other.close()
        await appends
        got = await db.sessions.get_session("s")
        assert got is not None and sorted(e["n"] for e in got["events"]) == list(range(writers))


@pytest.mark.parametrize("writers", [2, 50])
async def test_results_go_to_their_own_callers(db: Database, writers: int) -> None:
    for n in range(writers):
        await db.sessions.create_session(f"s{n}", "app", "u")
    seqs = await asyncio.gather(
        *(
            db.sessions.append_events(f"s{n}", [{"i": i} for i in range(n + 1)])
            for n in range(writers)
        )
    )
    assert seqs == [n + 1 for n in range(writers)]  # each caller's own last seq


async def test_writers_keep_committing_together_after_another_lock_user(tmp_path: Path) -> None:
    """Someone else waiting for the writer lock when a batch ends (a
    ``transaction()`` user, the checkpoint's second pass) gets it between two
    batches; the writers woken by that batch must queue again, not each run
    alone one after the other from then on."""
    async with Database(tmp_path / "convoy.db") as db:
        writers, appends = 40, 10
        for w in range(writers):
            await db.sessions.create_session(f"s{w}", "app", "u")

        async def writer(w: int) -> None:
            for n in range(appends):
                await db.sessions.append_event(f"s{w}", {"n": n})

        begun = count_transactions(db)
        running = [asyncio.ensure_future(writer(w)) for w in range(writers)]
        assert db._group is not None
        # Until the committer waits for the lock behind the first writer, then
        # queue behind both: the lock passes to us when the batch ends.
        await until(lambda: getattr(db._writer, "_waiters", None))
        assert db._writer is not None and db._writer.locked()
        async with db.transaction():
            pass
        await asyncio.gather(*running)
        # Grouped: a few transactions per round of 40 appends; one each if the
        # writers had fallen into single file.
        assert begun[0] < writers * appends / 4, begun[0]
        logs = [await db.sessions.list_events(f"s{w}") for w in range(writers)]
        assert [len(log) for log in logs] == [appends] * writers


def _next_of_nothing(_conn: Connection) -> Any:
    return next(iter([]))  # a plain slip inside a unit: StopIteration


async def test_a_unit_raising_stopiteration_fails_alone(db: Database) -> None:
    """A future cannot carry StopIteration: handed over as it is, the caller
    would wait forever holding the writer lock, and in a batch the committed
    units' callers would be told they were cancelled. It arrives as a
    RuntimeError, as a coroutine would make it."""
    await db.sessions.create_session("s", "app", "u")
    for run in (db.read, db.write):
        with pytest.raises(RuntimeError, match="StopIteration"):
            await run(_next_of_nothing)
    await db.sessions.append_event("s", {"n": -1})  # nothing stuck: the lock is free

    if db._writer is not None and db._group is not None:  # SQLite: inside a shared batch
        group = db._group
        async with db._writer:  # the next writers queue and go as one batch
            outcomes = asyncio.gather(
                db.sessions.append_event("s", {"n": 0}),
                db.write(_next_of_nothing),
                db.sessions.append_event("s", {"n": 1}),
                return_exceptions=True,
            )
            await until(lambda: len(group._queue) == 3)
        first, broken, last = await outcomes
        assert first is None and last is None
        assert isinstance(broken, RuntimeError)
    got = await db.sessions.get_session("s")
    assert got is not None
    assert [e["n"] for e in got["events"]] == ([-1, 0, 1] if db._writer else [-1])


@pytest.mark.parametrize("writers", [1, 2])
async def test_a_queued_caller_cancelled_during_a_retry_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    """The batch of one as well as the larger ones: a caller that gave up
    while its batch waited to retry (another process held the lock) has its
    unit skipped, not committed behind its back."""
    short_busy_timeout(monkeypatch)
    retries = Retries(monkeypatch)
    path = tmp_path / "cancel.db"
    async with Database(path) as db:
        await db.sessions.create_session("s", "app", "u")
        assert db._writer is not None and db._group is not None
        group = db._group
        async with db._writer:  # the writers queue: the committer will run them
            tasks = [
                asyncio.ensure_future(db.sessions.append_event("s", {"n": n}))
                for n in range(writers)
            ]
            await until(lambda: len(group._queue) == writers)
            other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")  # another process takes SQLite's write lock
        await retries.reach(1)  # the committer met "database is locked" and waits to retry
        tasks[0].cancel()
        other.execute("COMMIT")
        other.close()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[0], asyncio.CancelledError)
        committer = db._group.committer if db._group else None
        if committer is not None:
            await committer
        got = await db.sessions.get_session("s")
        assert got is not None and [e["n"] for e in got["events"]] == list(range(1, writers))


async def test_only_units_sharing_a_batch_pay_for_a_savepoint(db: Database) -> None:
    """An ORM unit works in a savepoint of its own only inside a shared batch
    (where a failed flush must not roll back the others); a read, or a write
    alone in its transaction, sends none."""
    await db.sessions.create_session("s", "app", "u")
    sent: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await db.sessions.list_sessions()  # an ORM read
        await db.tasks.create_task("alone")  # an ORM write, nobody else writing
        assert "SAVEPOINT" not in sent, sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
