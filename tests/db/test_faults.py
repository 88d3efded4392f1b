"""Faults reach callers as ``abathur.errors`` exceptions only: a closed
Database, a full disk, a PostgreSQL server that restarts under writers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from abathur.db import errors as db_errors
from abathur.db import storage as storage_module
from abathur.errors import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseClosedError,
    StorageFullError,
)
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.support.loop import until
from tests.support.pg_cluster import PrivateCluster
from tests.support.processes import ROOT


async def test_a_closed_database_refuses_every_call(db: Database) -> None:
    task = await db.tasks.create_task("before close")
    await db.close()
    calls = {
        "write": lambda: db.tasks.create_task("after close"),
        "read": lambda: db.tasks.get_task(task.id),
        "memory": lambda: db.memory.add_memory("user:a", "k", {}, "semantic", "a", task.id),
        "session": lambda: db.sessions.create_session("s-after-close", "app", "u"),
        "revision": db.current_revision,
        "upgrade": db.initialize,
        "integrity": db.integrity_check,
    }
    for name, call in calls.items():
        try:
            await call()
        except DatabaseClosedError as exc:
            assert "is closed" in str(exc), name
        else:
            pytest.fail(f"{name} ran on a closed database")
    with pytest.raises(DatabaseClosedError, match="closed"):
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
    with pytest.raises(DatabaseClosedError, match="closed"):
        async with db.transaction(write=False) as session:
            await session.execute(text("SELECT 1"))
    await db.close()  # closing twice is harmless


async def test_closing_one_database_leaves_another_on_the_same_file_open(
    make_db: DbFactory,
) -> None:
    first = await make_db()
    await first.initialize()
    second = await make_db(share_with=first)
    task = await first.tasks.create_task("kept")
    await first.close()
    found = await second.tasks.get_task(task.id)
    assert found is not None and found.id == task.id


def _opened_from_now_on(db: Database) -> set[int]:
    """The DBAPI connections this Database's engine opens from now on and has
    not closed yet (on every pool it has: ``dispose()`` makes a new one with
    the same listeners)."""
    live: set[int] = set()
    event.listen(db.engine.sync_engine, "connect", lambda dbapi, _record: live.add(id(dbapi)))
    for closing in ("close", "close_detached"):
        event.listen(db.engine.sync_engine, closing, lambda dbapi, *_: live.discard(id(dbapi)))
    return live


async def test_calls_in_flight_when_close_starts_finish_and_leave_no_connection_open(
    db: Database,
) -> None:
    """Reads under way, or waiting for their turn, when ``close()`` is called
    from another task: each one finishes (or raises DatabaseClosedError), close
    returns, and every connection opened is closed: none is opened afresh on
    the disposed engine and left in its new pool."""
    await db.sessions.create_session("s", "app", "u")
    live = _opened_from_now_on(db)
    if db._reader is not None:  # SQLite: readers that wait for their turn meanwhile
        reader = db._reader
        async with reader:
            calls = [asyncio.ensure_future(db.sessions.get_session("s")) for _ in range(3)]
            await until(lambda: len(getattr(reader, "_waiters", None) or ()) == 3)
            closing = asyncio.ensure_future(db.close())
            await until(lambda: db.closed)
    else:  # PostgreSQL: a read whose statement runs meanwhile
        sleep = "SELECT pg_sleep(0.2)"
        calls = [asyncio.ensure_future(db.read(lambda c: c.exec_driver_sql(sleep).all()))]
        await until(lambda: db.engine.pool.checkedout() > len(db._idle_autocommit))
        closing = asyncio.ensure_future(db.close())
    await asyncio.wait_for(closing, 30)  # a guard: nothing may hang
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, DatabaseClosedError), outcome
    assert not live, f"{len(live)} connection(s) left open"
    assert db.engine.pool.checkedin() == 0 and db.engine.pool.checkedout() == 0


async def test_a_close_cancelled_by_a_timeout_is_finished_by_the_next(db: Database) -> None:
    """``close()`` waits for a write under way; a timeout around it expires
    (TimeoutError, the cancellation, reaches the caller). The closing goes on
    regardless, and the next ``close()`` returns once it is complete: every
    connection closed, none left behind by a close that believed it had
    nothing left to do."""
    live = _opened_from_now_on(db)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(conn: Connection) -> None:
        loop.call_soon_threadsafe(started.set)  # SQLite: in the worker thread
        if db.is_sqlite:
            time.sleep(0.3)
        conn.exec_driver_sql("SELECT 1" if db.is_sqlite else "SELECT pg_sleep(0.3)").all()

    write = asyncio.ensure_future(db.write(slow))
    await started.wait()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await db.close()
    assert db.closed
    await asyncio.wait_for(db.close(), 30)  # a guard: nothing may hang
    assert write.done() and write.exception() is None
    assert not live, f"{len(live)} connection(s) left open"
    assert db.engine.pool.checkedin() == 0 and db.engine.pool.checkedout() == 0


# ---------------------------------------------------------------- the error seam


def _pg_error(sqlstate: str) -> DBAPIError:
    orig = Exception("server said no")
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return DBAPIError("COMMIT", {}, orig)


def _sqlite_error(code: int) -> OperationalError:
    orig = sqlite3.OperationalError("database or disk is full")
    orig.sqlite_errorcode = code  # type: ignore[attr-defined]
    return OperationalError("INSERT", {}, orig)


@pytest.mark.parametrize("code", ["08006", "08003", "08001", "57P01", "57P02", "57P03"])
def test_connection_faults_are_recognised_by_sqlstate(code: str) -> None:
    assert db_errors.is_connection_fault(_pg_error(code))
    assert isinstance(db_errors.translate(_pg_error(code)), ConnectionLostError)


def test_what_is_not_a_connection_fault() -> None:
    assert not db_errors.is_connection_fault(_pg_error("23505"))
    assert not db_errors.is_connection_fault(_pg_error("40001"))
    assert not db_errors.is_connection_fault(_sqlite_error(13))
    assert not db_errors.is_connection_fault(ValueError("connection refused"))


def test_refused_and_reset_connections_are_connection_faults() -> None:
    for exc in (ConnectionRefusedError(111, "refused"), ConnectionResetError(), TimeoutError()):
        assert db_errors.is_connection_fault(exc)
        assert isinstance(db_errors.translate(exc), ConnectionLostError)
    invalidated = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert db_errors.is_connection_fault(invalidated)


def test_a_host_name_that_does_not_resolve_is_a_connection_fault() -> None:
    """Before: socket.gaierror escaped raw from every call of a Database whose
    URL names an unknown host (initialize() and service calls alike)."""
    exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert db_errors.is_driver_fault(exc)
    assert isinstance(db_errors.translate(exc), ConnectionLostError)


async def test_initialize_against_an_unknown_host_is_connection_lost() -> None:
    pytest.importorskip("asyncpg")
    db = Database("postgresql+asyncpg://u@abathur-no-such-host.invalid/d")
    try:
        with pytest.raises(ConnectionLostError):
            await db.initialize()
    finally:
        await db.close()


def test_raw_asyncpg_faults_are_connection_faults() -> None:
    """SQLAlchemy 2.0.13 lets these through unwrapped during a restart."""
    asyncpg = pytest.importorskip("asyncpg")
    raw = [
        asyncpg.exceptions.InternalClientError("cannot switch to state 12"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
    ]
    for exc in raw:
        assert db_errors.is_connection_fault(exc), exc
        assert db_errors.is_driver_fault(exc)
        assert isinstance(db_errors.translate(exc), ConnectionLostError)
    assert not db_errors.is_driver_fault(asyncpg.exceptions.InterfaceError("misuse"))
    assert not db_errors.is_driver_fault(KeyError("a bug"))


def test_a_full_disk_is_recognised_by_code() -> None:
    assert isinstance(db_errors.translate(_sqlite_error(13)), StorageFullError)
    assert isinstance(db_errors.translate(_pg_error("53100")), StorageFullError)
    assert not isinstance(db_errors.translate(_sqlite_error(1)), StorageFullError)


# ---------------------------------------------------------------- SQLite: storage full


def _limit_pages(db: Database, pages: int) -> None:
    """Every connection ``db`` opens from now on may grow the file to
    ``pages`` pages; beyond that SQLite itself answers SQLITE_FULL."""

    @event.listens_for(db.engine.sync_engine, "connect")
    def _limit(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()  # aiosqlite's own execute() is a coroutine on 2.0
        try:
            cursor.execute(f"PRAGMA max_page_count={pages}")
        finally:
            cursor.close()


async def _migrated_pages(make_db: DbFactory) -> tuple[Database, int]:
    first = await make_db("full.db")
    await first.initialize()
    async with first.transaction(write=False) as session:
        pages = int(await session.scalar(text("PRAGMA page_count")) or 0)
    await first.close()
    return first, pages


# Four megabytes in one statement, in a transaction of the caller's.
FILLER = (
    "CREATE TABLE filler AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
    "FROM c WHERE n < 1000) SELECT randomblob(4000) AS x FROM c"
)


async def _fill(db: Database, writers: int) -> tuple[list[str], list[BaseException]]:
    """Writers create tasks until each has met an error; their acknowledged ids."""
    acked: list[str] = []
    errors: list[BaseException] = []

    async def writer(me: int) -> None:
        for n in range(5000):
            try:
                task = await db.tasks.create_task(f"{me}-{n} " + "x" * 2000)
            except Exception as exc:
                errors.append(exc)
                return
            acked.append(task.id)

    await asyncio.gather(*(writer(me) for me in range(writers)))
    return acked, errors


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("writers", [1, 8])
async def test_a_full_database_raises_storage_full_and_keeps_what_was_acknowledged(
    make_db: DbFactory, writers: int
) -> None:
    first, pages = await _migrated_pages(make_db)
    db = await make_db(share_with=first)
    _limit_pages(db, pages + 40)
    acked, errors = await _fill(db, writers)
    assert acked, "some writes fit"
    assert len(errors) == writers
    for exc in errors:
        assert isinstance(exc, StorageFullError), repr(exc)
        assert "full" in str(exc)
    with pytest.raises(StorageFullError):
        async with db.transaction() as session:
            await session.execute(text(FILLER))
    assert await db.integrity_check() == "ok"
    for task_id in acked:
        assert await db.tasks.get_task(task_id) is not None
    await db.close()
    again = await make_db(share_with=first)  # room again: the same file takes writes
    assert await again.integrity_check() == "ok"
    assert (await again.tasks.create_task("after the disk was freed")).id


def _tiny_filesystem(path: Path) -> None:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr!r}")


async def test_a_full_filesystem_raises_storage_full(tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    _tiny_filesystem(mount)
    try:
        db = Database(mount / "full.db")
        await db.initialize()
        acked, errors = await _fill(db, 4)
        assert acked and len(errors) == 4
        for exc in errors:
            assert isinstance(exc, StorageFullError), repr(exc)
        for task_id in acked:
            assert await db.tasks.get_task(task_id) is not None
        await db.close()
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mount)], check=False)


# ---------------------------------------------------------------- a process killed


KILLED_LOADER = """
import asyncio, sys, time
from pathlib import Path
from sqlalchemy import event
from abathur.infrastructure.database import Database

async def main(path, task_id, stall_at, marker):
    db = Database(Path(path))

    def stall(_conn, _cursor, sql, _params, _context, _many):
        if sql.startswith(stall_at):
            Path(marker).touch()
            time.sleep(120)  # SIGKILLed here, in the middle of the load's transaction

    event.listen(db.engine.sync_engine, "before_cursor_execute", stall)
    await db.memory.put_memories([
        {"namespace": "user:bulk", "key": f"k{i}", "value": {"i": i},
         "memory_type": "semantic", "by": "loader", "task_id": task_id}
        for i in range(20_000)
    ])

asyncio.run(main(*sys.argv[1:]))
"""


async def _indexes(db: Database) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
        )
        return [(str(name), str(sql)) for name, sql in rows]


@pytest.mark.parametrize(
    "stall_at",
    [
        "INSERT INTO audit",  # the versions of the first chunk written, indexes dropped
        "CREATE INDEX idx_audit_task_id",  # every row written, indexes half rebuilt
    ],
)
async def test_a_bulk_load_killed_midway_leaves_nothing_behind(
    tmp_path: Path, stall_at: str
) -> None:
    """A process SIGKILLed in the middle of a ``put_memories`` of 20,000
    items (a load that drops and rebuilds the indexes in its transaction):
    on reopening, none of the load is there, what was committed before is,
    every index exists, and the file passes ``PRAGMA integrity_check``."""
    path = tmp_path / "killed.db"
    async with Database(path) as db:
        await db.initialize()
        task_id = (await db.tasks.create_task("bulk load")).id
        await db.memory.put_memory("user:bulk", "before", {"kept": True}, "semantic",
                                   by="a", task_id=task_id)  # fmt: skip
        indexes = await _indexes(db)
    marker = tmp_path / "stalled"
    script = tmp_path / "loader.py"
    script.write_text(KILLED_LOADER)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(path), task_id, stall_at, str(marker),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        while not marker.exists():
            assert child.returncode is None, await child.communicate()
            await asyncio.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        await child.communicate()
    assert child.returncode == -signal.SIGKILL
    async with Database(path) as db:
        assert await db.integrity_check() == "ok"
        found = await db.memory.search_memories("user:bulk", limit=1000)
        assert [m["key"] for m in found] == ["before"]
        async with db.transaction(write=False) as session:
            audited = await session.scalar(text("SELECT count(*) FROM audit"))
        assert audited == 1
        assert await _indexes(db) == indexes
        await db.memory.put_memories(  # and the same load then goes through whole
            [{"namespace": "user:bulk", "key": f"k{i}", "value": {"i": i}, "memory_type":
              "semantic", "by": "again", "task_id": task_id} for i in range(20_000)]
        )  # fmt: skip
        assert len(await db.memory.search_memories("user:bulk", limit=1000)) == 1000
        assert await db.integrity_check() == "ok"
        assert await _indexes(db) == indexes


# ---------------------------------------------------------------- PostgreSQL: restarts


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)


async def test_writers_ride_through_postgresql_restarts(private_pg: PrivateCluster) -> None:
    db = Database(private_pg.url)
    await db.initialize()
    acked: list[str] = []
    after_restarts: list[str] = []
    unknown: list[CommitOutcomeUnknownError] = []
    restarted = False
    stop = asyncio.Event()
    progressed = asyncio.Event()

    async def writer(me: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                task = await db.tasks.create_task(f"writer {me} #{n}")
            except CommitOutcomeUnknownError as exc:  # allowed: it says what it is
                unknown.append(exc)
            else:
                (after_restarts if restarted else acked).append(task.id)
            finally:
                progressed.set()
            n += 1

    async def reader() -> None:
        while not stop.is_set():
            if acked:
                assert await db.tasks.get_task(acked[-1]) is not None
            await asyncio.sleep(0)

    workers: list[asyncio.Future[None]] = [asyncio.ensure_future(writer(me)) for me in range(6)]
    workers.append(asyncio.ensure_future(reader()))
    for round_ in (1, 2):
        await _until(lambda: len(acked) >= 20 * round_, progressed, workers)  # noqa: B023
        await asyncio.to_thread(private_pg.stop)  # ends every session: admin_shutdown
        await asyncio.to_thread(private_pg.resume)
    restarted = True
    await _until(lambda: len(after_restarts) >= 20, progressed, workers)
    stop.set()
    await asyncio.gather(*workers)  # a raw exception in any worker fails the test here
    for task_id in acked + after_restarts:  # nothing acknowledged was lost
        assert await db.tasks.get_task(task_id) is not None
    assert (await db.tasks.create_task("afterwards")).id
    await db.close()


async def _until(
    condition: Callable[[], bool], progressed: asyncio.Event, workers: list[asyncio.Future[None]]
) -> None:
    """Wait for ``condition``; a worker that ended (with a raw exception) ends the wait."""
    while not condition():
        for worker in workers:
            if worker.done():
                worker.result()  # re-raises what ended it
                raise AssertionError("a worker ended early")
        progressed.clear()
        await progressed.wait()


async def test_a_server_that_stays_down_gives_connection_lost(
    private_pg: PrivateCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(private_pg.url)
    await db.initialize()
    task = await db.tasks.create_task("before")
    monkeypatch.setattr(storage_module, "RECONNECT_SECONDS", 0.5)
    await asyncio.to_thread(private_pg.stop)
    with pytest.raises(ConnectionLostError, match="could not be reached"):
        await db.tasks.create_task("while down")
    with pytest.raises(ConnectionLostError, match="nothing of this call was committed"):
        await db.tasks.get_task(task.id)
    with pytest.raises(ConnectionLostError):
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
    await asyncio.to_thread(private_pg.resume)
    # The same Database works again: dead connections were dropped.
    assert await db.tasks.get_task(task.id) is not None
    assert (await db.tasks.create_task("after")).id
    await db.close()


KILL_AT_COMMIT = """
CREATE TABLE doomed (x int);
CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON doomed
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die();
"""


async def test_a_connection_lost_during_commit_is_not_replayed(
    private_pg: PrivateCluster,
) -> None:
    """The server ends the connection inside COMMIT (a deferred trigger kills
    its own backend): the unit may have committed, so it is not run again."""
    db = Database(private_pg.url)
    await db.initialize()
    async with db.transaction() as session:
        for statement in KILL_AT_COMMIT.split(";\n"):
            if statement.strip():
                await session.execute(text(statement))
    runs = 0

    def insert(conn: Connection) -> None:
        nonlocal runs
        runs += 1
        conn.exec_driver_sql("INSERT INTO doomed VALUES (1)")

    with pytest.raises(CommitOutcomeUnknownError, match="may or may not have been committed"):
        await db.write(insert)
    assert runs == 1
    with pytest.raises(CommitOutcomeUnknownError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO doomed VALUES (2)"))
    assert (await db.tasks.create_task("afterwards")).id  # the Database goes on
    await db.close()


class _DyingTransaction:
    """A transaction whose COMMIT loses the connection; like SQLAlchemy's, it
    commits on leaving its block unless committed or failed already."""

    def __init__(self) -> None:
        self.ended = False

    def __enter__(self) -> _DyingTransaction:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None and not self.ended:
            self.commit()

    def commit(self) -> None:
        self.ended = True
        raise DBAPIError("COMMIT", {}, Exception("gone"), connection_invalidated=True)


class _Conn:
    def begin(self) -> _DyingTransaction:
        return _DyingTransaction()


def test_a_lost_commit_is_ambiguous_for_a_write_only() -> None:
    """A write whose COMMIT lost the connection may have committed: not
    replayed. A read changed nothing: its lost COMMIT is an ordinary,
    retryable connection fault (a write's rule would fail readers during
    every restart)."""
    conn: Any = _Conn()
    with pytest.raises(CommitOutcomeUnknownError):
        storage_module._in_transaction(lambda _c: None, conn)
    with pytest.raises(DBAPIError) as raised:
        storage_module._in_read_transaction(lambda _c: None, conn)
    assert db_errors.is_connection_fault(raised.value)


# ------------------------------------------------------------------ one-statement writes
# On PostgreSQL a one-statement write runs in autocommit: the statement is its
# own COMMIT (``storage._as_one_write``).


async def test_a_connection_lost_during_a_one_statement_write_is_not_replayed(
    db: Database,
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's autocommit writes")
    runs = 0

    def dies(conn: Connection) -> None:
        nonlocal runs
        runs += 1
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(CommitOutcomeUnknownError, match="may or may not have been committed"):
        await db.write(dies, one_statement=True)
    assert runs == 1
    assert (await db.tasks.create_task("afterwards")).id  # the Database goes on


async def test_a_pooled_connection_closed_before_a_one_statement_write_is_replaced(
    db: Database,
) -> None:
    """The server ended an idle connection (a restart, an administrator): the
    next write finds it closed before sending anything, and runs once, on
    another connection."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's autocommit writes")

    def backend(conn: Connection) -> int:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    pid = await db.write(backend, one_statement=True)  # its connection stays idle
    async with db.transaction() as session:
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(100):  # until the client has read the server's goodbye
        await asyncio.sleep(0.01)
        if all(c.sync_connection is None or c.invalidated or
               c.sync_connection.connection.driver_connection.is_closed()  # type: ignore[union-attr]
               for c in db._idle_autocommit):  # fmt: skip
            break
    runs = 0

    def counted(conn: Connection) -> int:
        nonlocal runs
        runs += 1
        return backend(conn)

    assert await db.write(counted, one_statement=True) != pid
    assert runs == 1
