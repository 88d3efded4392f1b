"""A leaner aiosqlite adapter for SQLAlchemy: one thread hop per unit of work.

aiosqlite runs SQLite in a worker thread; every call crosses to it and back.
SQLAlchemy's stock adapter makes four crossings per statement (open cursor,
execute, fetch, close) and one per COMMIT or ROLLBACK even when there is no
transaction to end (the pool's reset on return). This adapter runs open,
execute, fetch and close in one crossing and skips COMMIT/ROLLBACK when SQLite
says no transaction is open. Results are identical; only the round trips go.

``run_in_worker`` goes further: it runs a whole unit of work (a plain
function over a synchronous SQLAlchemy connection) in the worker thread, and
every statement, BEGIN, COMMIT and ROLLBACK the unit sends there calls sqlite3
directly: one crossing for the whole unit.

It uses ``aiosqlite.Connection._execute`` (run a function in the worker
thread) and other private parts; ``support.supports_fast_path()`` says whether
the installed releases are ones it was tested on. If not, ``lean_dbapi()``
returns None and the engine falls back to SQLAlchemy's stock adapter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import concurrency

from abathur.db.sqlite.support import supports_fast_path

T = TypeVar("T")
# SQLAlchemy 2.1 names it ``await_``; 2.0 has only ``await_only`` (2.1 keeps
# it as a deprecated alias).
_await: Any = getattr(concurrency, "await_", None) or concurrency.await_only

# Set while a unit of work runs inside aiosqlite's worker thread
# (``run_in_worker``): statements then call sqlite3 directly, no hop, no await.
_worker = threading.local()


def in_worker() -> bool:
    return worker_connection() is not None


def worker_connection() -> sqlite3.Connection | None:
    """The sqlite3 connection of the unit of work running in this thread, if any."""
    return getattr(_worker, "raw", None)


def execute_in_worker(sql: str) -> Any:
    """Run a statement without parameters (BEGIN, SAVEPOINT, a PRAGMA) on the
    unit's sqlite3 connection; its first row, if it returns any. Its errors
    become SQLAlchemy's, so that "database is locked" is retried like any other."""
    raw = worker_connection()
    assert raw is not None, "only inside a unit of work in the worker thread"
    try:
        cursor = raw.execute(sql)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


class LeanCursor:
    """A DBAPI cursor of its own, not derived from SQLAlchemy's aiosqlite
    cursor: that class's internals differ between SQLAlchemy 2.0 (a
    standalone class that awaits four times per statement) and 2.1 (built on
    ``connectors.asyncio.AsyncAdapt_dbapi_cursor``, with ``_execute_async``
    and the connection's ``_execute_mutex``). Only the DBAPI surface that
    SQLAlchemy calls is implemented here, and it is the same in both."""

    __slots__ = (
        "_adapt_connection",
        "_connection",
        "_description",
        "_lastrowid",
        "_rowcount",
        "_rows",
        "arraysize",
    )

    server_side = False

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection):
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows: collections.deque[Any] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def __enter__(self) -> LeanCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def _statement(
        self, operation: str, parameters: Any, many: bool
    ) -> tuple[Any, int, int | None, list[Any]]:
        cursor = self._connection._conn.cursor()
        try:
            if many:
                cursor.executemany(operation, parameters)
            elif parameters is None:
                cursor.execute(operation)
            else:
                cursor.execute(operation, parameters)
            rows = cursor.fetchall() if cursor.description else []
            return cursor.description, cursor.rowcount, cursor.lastrowid, rows
        finally:
            cursor.close()

    def _store(self, result: tuple[Any, int, int | None, list[Any]]) -> None:
        self._description, self._rowcount, self._lastrowid, rows = result
        self._rows = collections.deque(rows)

    def _direct(self, operation: str, parameters: Any, many: bool) -> None:
        """Inside a unit of work, in the worker thread: call sqlite3 right here."""
        try:
            self._store(self._statement(operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if in_worker():
            return self._direct(operation, parameters, many=False)
        return self._hop(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        if in_worker():
            return self._direct(operation, seq_of_parameters, many=True)
        return self._hop(operation, seq_of_parameters, many=True)

    def _hop(self, operation: str, parameters: Any, many: bool) -> None:
        """From the event loop's greenlet: one crossing to the worker thread."""
        try:
            _await(self._run(operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: str, parameters: Any, many: bool) -> None:
        # SQLAlchemy 2.1 serialises a connection's statements on this mutex;
        # 2.0 has none (aiosqlite's own queue orders them).
        mutex = getattr(self._adapt_connection, "_execute_mutex", None)
        async with mutex or contextlib.nullcontext():
            result = await self._connection._execute(self._statement, operation, parameters, many)
        self._store(result)


class LeanConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def cursor(self, server_side: bool = False) -> Any:
        # SQLAlchemy 2.1 picks the class from ``_cursor_cls``; 2.0 hardcodes
        # its own cursor class in ``cursor()``: override the method itself.
        if server_side:
            return super().cursor(server_side=True)
        return LeanCursor(self)

    def _in_transaction(self) -> bool:
        connection = self._connection
        return bool(connection._connection) and bool(connection.in_transaction)

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")

    def _end(self, how: str) -> None:
        """COMMIT or ROLLBACK, only when SQLite has a transaction open: sqlite3
        directly inside a unit of work, one crossing from the event loop."""
        if self._in_transaction():
            if in_worker():
                getattr(self._connection._conn, how)()
            else:
                getattr(super(), how)()


class LeanDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> LeanConnection:
        stock = super().connect(*arg, **kw)
        return LeanConnection(self, stock._connection)


def lean_dbapi() -> LeanDBAPI | None:
    """The lean adapter, or None when the fast path does not support the
    installed aiosqlite and SQLAlchemy (``support.supports_fast_path``)."""
    if not supports_fast_path():
        return None
    return LeanDBAPI(aiosqlite, sqlite3)


def future_safe(exc: Exception) -> Exception:
    """An exception an asyncio future can carry. A future refuses
    StopIteration (the hand-over itself fails, and the caller would wait
    forever), so it becomes a RuntimeError, as a coroutine would make it
    (PEP 479)."""
    if isinstance(exc, StopIteration):
        error = RuntimeError(f"a unit of work raised StopIteration: {exc!r}")
        error.__cause__ = exc
        return error
    return exc


async def run_in_worker(driver_connection: aiosqlite.Connection, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in the connection's worker thread, in one hop.

    Statements that ``fn`` sends through SQLAlchemy on this connection call
    sqlite3 directly (see ``LeanCursor.execute``): a whole unit of work costs
    one crossing instead of one per statement.
    """

    def direct() -> Any:
        _worker.raw = driver_connection._conn
        try:
            return fn(*args)
        except StopIteration as exc:
            raise future_safe(exc) from exc
        finally:
            _worker.raw = None

    return await driver_connection._execute(direct)  # type: ignore[no-untyped-call]


async def run_unit_in_worker(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
    """``fn(connection)`` in the SQLite connection's worker thread, in one crossing.

    A caller cancelled meanwhile cannot stop the unit, which runs to its end
    (commit or rollback) in that thread: it waits for that end before it lets
    go of the connection and of the Database's locks, so that no other unit
    ever shares the connection or the write lock with it.
    """
    sync = conn.sync_connection
    assert sync is not None
    driver = sync.connection.driver_connection
    assert driver is not None
    try:
        result: T = await run_in_worker(driver, fn, sync)
    except asyncio.CancelledError:
        # The worker runs its queue in order: a no-op sent now returns once
        # the unit is over. Further cancellations cannot cut this wait short.
        finished = asyncio.ensure_future(run_in_worker(driver, _nothing))
        while not finished.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(finished)
        raise
    return result


def _nothing() -> None:
    return None
