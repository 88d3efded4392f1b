"""A file Database checkpoints its WAL in the background, not inside a COMMIT."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from abathur.db import background
from abathur.db.sqlite.worker import worker_connection
from abathur.infrastructure.database import Database


def autocheckpoint(_conn: Connection) -> int:
    raw = worker_connection()
    assert raw is not None
    return int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def size(path: Path) -> int:
    return path.stat().st_size


def events_in_main_file(path: Path, scratch: Path) -> int:
    """Rows of session_events in the database file alone, without its WAL."""
    copy = scratch / "main-file-only.db"
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM session_events").fetchone()[0])
    except sqlite3.OperationalError as exc:  # even the schema is still in the WAL
        assert "no such table" in str(exc)
        return 0
    finally:
        conn.close()


async def test_commits_leave_checkpoints_to_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "CHECKPOINT_EVERY", 25)
    path = tmp_path / "c.db"
    async with Database(path) as db:
        assert await db.read(autocheckpoint) == 0  # no checkpoint inside a COMMIT
        await db.sessions.create_session("s", "app", "u")
        for n in range(10):
            await db.sessions.append_event("s", {"n": n})
        # Ten committed appends live in the WAL only: nothing checkpointed them.
        assert events_in_main_file(path, tmp_path) == 0

        for n in range(10, 30):  # the 25th write unit starts a background checkpoint
            await db.sessions.append_event("s", {"n": n})
        checkpoint = db._checkpointer.running
        assert checkpoint is not None  # started by the 25th write, running in the background
        await checkpoint
        assert events_in_main_file(path, tmp_path) >= 24


async def test_memory_databases_keep_sqlite_defaults() -> None:
    async with Database(Path(":memory:")) as db:
        assert await db.read(autocheckpoint) == 1000


async def _append(db: Database, n: int) -> None:
    await db.sessions.append_event("s", {"n": n}, state_delta={"k": n})


async def _in_transaction(db: Database, n: int) -> None:
    async with db.transaction() as session:
        await session.execute(text("UPDATE sessions SET metadata = :m"), {"m": f"[{n}]"})


@pytest.mark.parametrize("write", [_append, _in_transaction], ids=["append", "transaction"])
async def test_the_wal_stays_bounded_under_sustained_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Any
) -> None:
    """SQLite rewrites the WAL from its start only after a checkpoint that
    copied every frame: writes that never pause must still get such
    checkpoints, or the WAL grows with every write, forever. Writes through
    ``transaction()`` count too (SQLite's own checkpoint is off)."""
    every = 50
    monkeypatch.setattr(background, "CHECKPOINT_EVERY", every)
    monkeypatch.setattr(background, "WAL_RESTART_FRAMES", 100)  # a few dozen writes
    path = tmp_path / "w.db"
    wal = Path(f"{path}-wal")
    async with Database(path) as db:
        await db.sessions.create_session("s", "app", "u")
        start = size(wal)
        for n in range(every - 1):
            await write(db, n)
        per_write = (size(wal) - start) / (every - 1)
        for n in range(30 * every):  # no pause: each write follows the last at once
            await write(db, n)
        # Unbounded, the WAL would hold all 1,500 writes; allow six rounds of 50.
        assert size(wal) < start + 6 * every * per_write


async def test_close_waits_for_a_write_in_flight_and_starts_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write still running when ``close()`` is called ends first; if it is
    the one that makes a checkpoint due, none starts on the disposed engine
    (it would leave a connection and its thread behind)."""
    monkeypatch.setattr(background, "CHECKPOINT_EVERY", 2)
    db = Database(tmp_path / "x.db")
    await db.initialize()
    await db.sessions.create_session("s", "app", "u")  # the first write; the next is due
    write = asyncio.ensure_future(db.sessions.append_event("s", {"n": 1}))
    await asyncio.sleep(0)  # the write is under way
    await db.close()
    assert write.done() and write.exception() is None
    assert db._checkpointer.running is None
    assert db.engine.pool.checkedin() == 0 and db.engine.pool.checkedout() == 0
    async with Database(tmp_path / "x.db") as again:
        got = await again.sessions.get_session("s")
        assert got is not None and [e["n"] for e in got["events"]] == [1]
