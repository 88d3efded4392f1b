"""Group commit: writers that wait together share a transaction, yet each
unit stays atomic and alone in its outcome (group_commit.py).

The semantic tests run on both backends (PostgreSQL runs every unit in its own
transaction, so they pin down that the two behave alike); the tests that the
sharing really happens are SQLite-only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from abathur.errors import AlreadyExistsError, ConflictError, NotFoundError, StaleSessionError
from abathur.infrastructure.database import Database
from abathur.infrastructure.repositories.core import AuditRepository


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
        "half written": RuntimeError,
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


async def test_cancelled_writers_leave_a_consistent_log(db: Database) -> None:
    """Callers cancelled while they wait or while their batch runs: a unit
    either commits whole or not at all, nothing else is disturbed, and every
    caller that returned is in the log."""
    await db.sessions.create_session("s", "app", "u")
    tasks = [
        asyncio.ensure_future(db.sessions.append_event("s", {"n": n}, {f"k{n}": n}))
        for n in range(60)
    ]
    await asyncio.sleep(0)
    for task in tasks[1::3]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    returned = {n for n, o in enumerate(outcomes) if not isinstance(o, BaseException)}
    assert all(
        isinstance(o, asyncio.CancelledError) for o in outcomes if isinstance(o, BaseException)
    )
    assert len(returned) >= 40  # the ones never cancelled

    await db.sessions.append_event("s", {"n": "after"})  # the writer still works
    got = await db.sessions.get_session("s")
    assert got is not None
    logged = [e["n"] for e in got["events"][:-1]]
    assert returned <= set(logged)
    assert len(logged) == len(set(logged))  # nothing twice
    assert got["state"] == {f"k{n}": n for n in logged}  # each unit whole or not at all
    assert got["last_seq"] == len(logged) + 1


async def test_batches_wait_out_a_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    async with Database(path) as db:
        await db.sessions.create_session("s", "app", "u")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        writers = asyncio.gather(*(db.sessions.append_event("s", {"n": n}) for n in range(30)))
        await asyncio.sleep(0.3)
        assert not writers.done()
        other.execute("COMMIT")
        other.close()
        await writers
        got = await db.sessions.get_session("s")
        assert got is not None and sorted(e["n"] for e in got["events"]) == list(range(30))


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
