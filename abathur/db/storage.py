"""Storage: one engine, its locks, and the units of work services run on it.

Services never build engines or sessions themselves; they hand a plain
function to ``read`` / ``write`` (Core, over a ``Connection``) or ``run`` (ORM,
over an ``orm.Session``). On SQLite write transactions start with ``BEGIN
IMMEDIATE`` so that a read-then-write never dies with "database is locked"
halfway, and the whole unit is retried when the database reports contention
that a retry can cure. Driver errors leave a unit only as ``abathur.errors``
exceptions (``db.errors.translate``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from sqlalchemy import URL, event, orm
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from abathur.db import errors as db_errors
from abathur.db import health, migrate
from abathur.db.background import Checkpointer
from abathur.db.engine import create_engine, no_autocheckpoint
from abathur.db.postgres import direct
from abathur.db.sqlite.group_commit import GROUPED, GroupCommit
from abathur.db.sqlite.prepared import OneStatement
from abathur.db.sqlite.worker import LeanDBAPI, run_unit_in_worker
from abathur.db.url import default_url, is_memory_url, to_url
from abathur.errors import (
    AbathurError,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseBusyError,
    DatabaseClosedError,
)

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

RETRY_ATTEMPTS = 12
RETRY_FIRST_DELAY = 0.005
RETRY_MAX_DELAY = 0.5
# Connections a SQLite Storage keeps open between units of work, per kind
# (readers; writers, whose transactions begin IMMEDIATE): opening one costs as
# much as dozens of reads. Units take turns (see Storage.__init__), so one of
# each is the norm; more appear only beside ``transaction()`` users. A
# PostgreSQL Storage keeps as many in autocommit, for one-statement units
# (they count toward the engine's pool size).
IDLE_CONNECTIONS = 4
# A unit whose connection was lost (or could not be made) before it committed
# is run again, for this long at most: long enough for a server restart.
RECONNECT_SECONDS = 30.0
RECONNECT_MAX_DELAY = 1.0


class _Turn:
    """A ``transaction()`` block holding a Storage's one write turn (a SQLite
    file's writer lock, an in-memory database's only connection) until
    ``held`` turns False."""

    __slots__ = ("held", "storage")

    def __init__(self, storage: int):
        self.storage = storage
        self.held = True


# The turns held by the ``transaction()`` blocks of this context; tasks
# started inside a block inherit them (and see them released when it ends).
_HOLDING: ContextVar[tuple[_Turn, ...]] = ContextVar("abathur_holding", default=())


def _in_transaction(work: Callable[[Connection], T], conn: Connection) -> T:
    """A write unit: a connection lost at its COMMIT leaves the outcome unknown."""
    with conn.begin() as transaction:
        result = work(conn)
        _commit(transaction)
    return result


def _in_read_transaction(work: Callable[[Connection], T], conn: Connection) -> T:
    """A read unit: it changed nothing, so a connection lost even at its
    COMMIT is retried like any other connection fault."""
    with conn.begin():
        return work(conn)


def _commit_unknown(exc: BaseException) -> CommitOutcomeUnknownError:
    return CommitOutcomeUnknownError(
        "the connection to the database server was lost during COMMIT: the "
        f"transaction may or may not have been committed: {getattr(exc, 'orig', None) or exc}"
    )


def _commit(transaction: Any) -> None:
    """COMMIT; a connection lost during it leaves the outcome unknown.

    The server may have committed before the connection went, so the unit
    is not run again: the caller hears ``CommitOutcomeUnknownError``.
    """
    try:
        transaction.commit()
    except Exception as exc:
        if db_errors.is_connection_fault(exc):
            raise _commit_unknown(exc) from exc
        raise


def _as_one_statement(work: Callable[[Connection], T], conn: Connection) -> T:
    """A unit of one statement, without BEGIN/COMMIT (SQLite, worker thread).

    Sent straight to sqlite3 (``prepared``), the statement commits on its own;
    one that went through SQLAlchemy began a transaction, which is ended here.
    """
    try:
        result = work(conn)
    except BaseException:
        if conn.in_transaction():
            conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()
    return result


def _as_one_write(work: Callable[[Connection], T], conn: Connection) -> T:
    """A write unit of one statement on PostgreSQL, in autocommit: the
    statement is its own transaction, and its own COMMIT.

    A connection already closed when the unit starts sent nothing: that is an
    ordinary connection fault, retried on a new connection. A connection lost
    while the statement ran leaves its outcome unknown, as a COMMIT lost would
    (``CommitOutcomeUnknownError``): the unit is not run again.
    """
    driver = conn.connection.driver_connection
    closed = getattr(driver, "is_closed", None)
    if closed is not None and closed():
        conn.invalidate()
        raise ConnectionResetError("the pooled connection was closed before the unit began")
    try:
        return _as_one_statement(work, conn)
    except Exception as exc:
        if db_errors.is_connection_fault(exc):
            raise _commit_unknown(exc) from exc
        raise


def _with_orm_session(work: Callable[[orm.Session], T], conn: Connection) -> T:
    """``work`` over an ORM session inside ``conn``'s transaction.

    Inside a group commit batch (``GROUPED``) the session works in a
    SAVEPOINT of its own: if its flush fails it rolls back only that, never
    the transaction the batch shares with other units. A unit alone in its
    transaction (every read, a solo write, PostgreSQL) spends no savepoint.
    """
    session = orm.Session(
        bind=conn,
        expire_on_commit=False,
        join_transaction_mode=(
            "create_savepoint" if conn.info.get(GROUPED) else "conditional_savepoint"
        ),
    )
    try:
        result = work(session)
        session.commit()  # flushes and releases the savepoint; the outer transaction goes on
        return result
    finally:
        session.close()


def _raise_translated(exc: Exception) -> NoReturn:
    """Raise ``exc`` again, a driver's fault (``is_driver_fault``) as its
    ``abathur.errors`` exception; anything else (abathur's own errors, the
    caller's) as it is. Called from a unit's ``except`` clause."""
    if not isinstance(exc, AbathurError) and db_errors.is_driver_fault(exc):
        raise db_errors.translate(exc) from exc
    raise exc


class Storage:
    """An abathur database's engine room: SQLite (file or memory) or PostgreSQL.

    ``Storage(url_or_path)`` takes an SQLAlchemy URL (``sqlite+aiosqlite:///x.db``,
    ``postgresql+asyncpg://...``) or a filesystem ``Path``; ``Path(":memory:")``
    gives a private in-memory database. Extra keyword arguments go to
    ``create_async_engine``.
    """

    def __init__(self, url_or_path: str | Path | URL | None = None, **engine_options: Any):
        self.url = to_url(default_url() if url_or_path is None else url_or_path)
        self.engine = create_engine(self.url, **engine_options)
        # Read on every unit of work: the engine's dialect is fixed at creation.
        self._dialect: str = self.engine.dialect.name
        self._is_sqlite = self._dialect == "sqlite"
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._serial: asyncio.Lock | None = asyncio.Lock() if self.is_memory else None
        # SQLite has one writer at a time. Queueing this process's writers on an
        # asyncio lock (FIFO, no sleeping) keeps them off SQLite's busy handler,
        # whose back-off sleeps would dominate latency under contention. Other
        # processes still meet the busy timeout and the retry in _retrying().
        self._writer: asyncio.Lock | None = (
            asyncio.Lock() if self.is_sqlite and not self.is_memory else None
        )
        # Readers take turns too: threads cannot run Python side by side under
        # the GIL, and readers contending for it are slower together than one
        # after the other (measured: 50 concurrent get_session).
        self._reader: asyncio.Lock | None = (
            asyncio.Lock() if self.is_sqlite and not self.is_memory else None
        )
        # Units of work run in aiosqlite's worker thread when the lean adapter
        # is in use: the fast path, on the releases it supports
        # (db.sqlite.support.supports_fast_path); SQLAlchemy's stock path otherwise.
        self._direct = isinstance(self.engine.dialect.dbapi, LeanDBAPI)
        self._idle: dict[bool, list[AsyncConnection]] = {False: [], True: []}
        # PostgreSQL: connections already in autocommit, for one-statement
        # units (``_autocommit``): a pool checkout, the isolation switch and its
        # reset cost more than the unit's statement on the direct path.
        self._idle_autocommit: list[AsyncConnection] = []
        # The asyncpg connection under each of those, with the pool's
        # connection it was found under (``_native``): a Connection given a
        # new one (invalidated, then revalidated) is looked up afresh.
        self._drivers: dict[Connection, tuple[Any, Any]] = {}
        self._closed = False
        self._closing: asyncio.Task[None] | None = None  # ``close()``'s work
        # Units of work under way (``_unit``, ``outside_transaction``), and,
        # while ``close()`` waits for them to end, the event that says so:
        # one still running after the engine was disposed would open a new
        # connection on it, which nothing would ever close.
        self._units = 0
        self._units_ended: asyncio.Event | None = None
        # A file database on the direct path: writers that queue on the writer
        # lock commit together (group_commit), and WAL checkpoints run in the
        # background, off the commit path.
        self._group: GroupCommit | None = None
        self._checkpointer: Checkpointer | None = None
        if self._writer is not None and self._reader is not None and self._direct:
            self._group = GroupCommit(
                self._writer, self._write_batch, lambda exc: db_errors.is_retryable(exc)
            )
            self._checkpointer = Checkpointer(self.engine, self._writer, self._reader)
            event.listen(self.engine.sync_engine, "connect", no_autocheckpoint)

    # ------------------------------------------------------------ identity

    @property
    def dialect(self) -> str:
        """The dialect name: "sqlite" or "postgresql"."""
        return self._dialect

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite (file or memory)."""
        return self._is_sqlite

    @property
    def fast_path(self) -> bool:
        """True when SQLite runs on abathur's fast path (``db.sqlite``); False
        on PostgreSQL, or on SQLite through SQLAlchemy's stock aiosqlite adapter
        (installed releases the fast path does not support, or
        ``ABATHUR_SQLITE_FAST_PATH=0``)."""
        return self._direct

    @property
    def is_memory(self) -> bool:
        """True for a private in-memory SQLite database."""
        return is_memory_url(self.url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------ lifecycle

    async def initialize(self) -> None:
        """Bring the schema to the newest revision by running the migrations
        (``upgrade("head")``, whose errors it raises)."""
        await self.upgrade("head")

    async def close(self) -> None:
        """Close this Database's connections and dispose of the engine.

        Units of work under way when it is called (reads, queued writes)
        and a running background checkpoint finish first; calls made after
        it began raise ``DatabaseClosedError``. Connections still in use by a
        ``transaction()`` block are closed when it ends. Closing again waits
        for the first close to end; a close whose caller was cancelled (a
        timeout) still completes, and the next ``close()`` waits for it.
        """
        if self._closing is not None and self._closing.done():
            await self._closing  # closed already (its error, if it failed)
            return
        self._refuse_own_turn(True)  # the closing would wait for this task's block forever
        if self._closing is None:
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stopped = True  # from now on no write starts a checkpoint
            self._closing = asyncio.ensure_future(self._close())
        # A caller cancelled meanwhile (a timeout around ``close()``) does not
        # stop the closing half way: it goes on, and the next ``close()``
        # waits for its end instead of finding nothing left to do.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        """``close()``'s work, in a task of its own."""
        if self._writer is not None:
            async with self._writer:  # a unit writing alone, a batch, a transaction: ended
                pass
        while pending := [
            t
            for t in (
                self._checkpointer and self._checkpointer.running,
                self._group and self._group.committer,
            )
            if t
        ]:
            await asyncio.wait(pending)
        while self._units:  # reads under way, a unit waiting to retry
            self._units_ended = asyncio.Event()
            await self._units_ended.wait()
        for idle in (*self._idle.values(), self._idle_autocommit):
            while idle:
                await idle.pop().close()
        self._drivers.clear()
        await self.engine.dispose()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called; every later call raises
        ``DatabaseClosedError``."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError(f"the database {self!r} is closed; open a new one")

    # ------------------------------------------------------------ migrations

    async def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema up to ``revision`` (default: the newest).

        Raises ``MigrationError`` when the database is at a revision this code
        does not know (a newer abathur migrated it), has abathur's tables but
        no ``alembic_version``, refuses writes, or the migration fails (it is
        rolled back whole); ``ValidationError`` for an unknown ``revision`` or
        one older than the database's. Nothing is changed in either case.
        """
        from alembic import command

        await self._migrate(lambda config: command.upgrade(config, revision), revision, False)

    async def downgrade(self, revision: str) -> None:
        """Migrate the schema down to ``revision`` (``"base"`` drops every table).

        Raises as ``upgrade`` does; ``ValidationError`` for a ``revision``
        newer than the database's.
        """
        from alembic import command

        await self._migrate(lambda config: command.downgrade(config, revision), revision, True)

    async def current_revision(self) -> str | None:
        """The database's Alembic revision, or None for an empty database."""
        self._check_open()
        self._refuse_own_turn(False)
        try:
            async with self._exclusive(), self.engine.connect() as conn:
                return await conn.run_sync(migrate.current_revision)
        except Exception as exc:
            _raise_translated(exc)

    async def _migrate(
        self, step: Callable[[Config], None], revision: str, downgrade: bool
    ) -> None:
        # One migration at a time per process; other processes queue on the
        # database's own lock.
        self._check_open()
        self._refuse_own_turn(True)
        try:
            async with migrate.process_migration_lock(), self._exclusive():
                await migrate.run_migration(self.engine, step, revision, downgrade=downgrade)
        except Exception as exc:  # the connect, before the migration's own handler
            _raise_translated(exc)

    # ------------------------------------------------------------ transactions

    def _exclusive(self) -> AbstractAsyncContextManager[Any]:
        """In-memory databases share one connection: one transaction at a time."""
        return self._serial if self._serial is not None else nullcontext()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """An AsyncSession inside one transaction, committed on success.

        ``write=True`` on SQLite takes the write lock at BEGIN (``BEGIN
        IMMEDIATE``): the busy timeout then applies at the start, and a
        transaction can always write it.

        It is not retried (its body is the caller's); a driver error in it,
        or at its COMMIT, reaches the caller as an ``abathur.errors`` exception
        (``CommitOutcomeUnknownError`` for a connection lost during COMMIT).

        On SQLite a write block holds the database's one write turn (an
        in-memory database's only connection) until it ends: a call from the
        block, or from a task started in it, that needs the turn (a service
        write, another write block, ``close()``) raises DatabaseBusyError
        instead of waiting for the block forever.
        """
        self._check_open()
        self._refuse_own_turn(write)
        writer = self._writer if write and self._writer is not None else nullcontext()
        exclusive = (write and self._writer is not None) or self._serial is not None
        committing = False
        try:
            async with (
                self._exclusive(),
                writer,
                self._sessionmaker() as session,
                session.begin(),
            ):
                options = self._transaction_options(write)
                if options:
                    await session.connection(execution_options=options)
                turn = _Turn(id(self))
                token = _HOLDING.set((*_HOLDING.get(), turn)) if exclusive else None
                try:
                    yield session
                finally:
                    turn.held = False
                    if token is not None:
                        _HOLDING.reset(token)
                committing = True
        except AbathurError:
            raise
        except Exception as exc:
            if not db_errors.is_driver_fault(exc):
                raise  # the caller's own
            if committing and write and db_errors.is_connection_fault(exc):
                raise _commit_unknown(exc) from exc
            raise db_errors.translate(exc) from exc
        if write:  # committed: it counts toward the next checkpoint like any write
            self._wrote()

    def _refuse_own_turn(self, write: bool) -> None:
        """DatabaseBusyError, rather than a wait that never ends, for a call
        that needs the write turn (``write``; any call on an in-memory
        database) which a ``transaction()`` block of this context holds."""
        mine = any(t.held and t.storage == id(self) for t in _HOLDING.get())
        if mine and (write or self._serial is not None):
            raise DatabaseBusyError(
                f"{self!r}: a db.transaction() block of this task holds the database's "
                "write turn (SQLite runs one writer at a time), and this call would wait "
                "for the block forever; write through the block's session, or after it"
            )

    def _transaction_options(self, write: bool) -> dict[str, str]:
        """How a transaction begins.

        SQLite: writers take the write lock at BEGIN (``BEGIN IMMEDIATE``); a
        reader's BEGIN gives it a snapshot already (WAL). PostgreSQL: writers
        lock what they change; a reader gets ``REPEATABLE READ`` so that its
        statements see one snapshot (a session row and its events agree), which
        READ COMMITTED would not guarantee. Read-only transactions never fail
        serialization under it.
        """
        if self.is_sqlite:
            return {"sqlite_begin": "IMMEDIATE"} if write else {}
        return {} if write else {"isolation_level": "REPEATABLE READ"}

    # ------------------------------------------------------------ units of work

    async def run(self, work: Callable[[orm.Session], T], *, write: bool = True) -> T:
        """Run ``work(session)`` in one transaction, retrying it whole on lock contention.

        ``work`` is a plain function over a synchronous ORM ``Session``; see
        ``read()`` for where it runs.
        """
        return await self._unit(partial(_with_orm_session, work), write=write)

    async def read(self, work: Callable[[Connection], T], *, one_statement: bool = False) -> T:
        """Run ``work(connection)``, a plain function of Core reads, in one transaction.

        On SQLite the whole unit runs in the connection's worker thread, in
        one crossing: its statements call sqlite3 directly (see
        ``db.sqlite.worker`` and ``db.sqlite.prepared``). On PostgreSQL it runs
        through ``run_sync``. ``one_statement=True`` promises that ``work``
        sends a single statement: SQLite then runs it without BEGIN and
        COMMIT, since one statement is atomic and reads one snapshot on its own.
        """
        return await self._unit(work, write=False, one_statement=one_statement)

    async def write(self, work: Callable[[Connection], T], *, one_statement: bool = False) -> T:
        """Run ``work(connection)``, a plain function of Core statements, in one
        write transaction, retrying it whole on lock contention, like ``run()``.
        ``one_statement`` as for ``read()``; on PostgreSQL a connection lost
        while that one statement ran is ``CommitOutcomeUnknownError``."""
        return await self._unit(work, write=True, one_statement=one_statement)

    async def outside_transaction(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` outside any transaction block, for the
        statements that cannot run inside one (PostgreSQL's ``VACUUM``).

        On PostgreSQL it runs on a connection in autocommit: each statement
        is its own transaction, and ``work`` is run again whole after a fault
        a retry can cure (contention, a connection lost), so it must be
        maintenance that can be repeated, never writes whose outcome matters.
        On SQLite, which has no such statement in use here, it is ``write()``.
        """
        if self.is_sqlite:
            return await self.write(work)
        self._check_open()
        body = partial(_as_one_statement, work)
        self._units += 1
        try:
            return await self._retrying(
                lambda: self._on_connection(body, write=True, autocommit=True)
            )
        except Exception as exc:
            _raise_translated(exc)
        finally:
            self._unit_ended()

    def _unit_ended(self) -> None:
        self._units -= 1
        if not self._units and self._units_ended is not None:
            self._units_ended.set()  # ``close()`` waits for it

    async def _unit(
        self, work: Callable[[Connection], T], *, write: bool, one_statement: bool = False
    ) -> T:
        if self._closed:  # ``_check_open``, without its call on every unit
            self._check_open()
        if _HOLDING.get():  # inside a SQLite ``transaction()`` block, or a task it started
            self._refuse_own_turn(write)
        self._units += 1
        try:
            if one_statement and not self._is_sqlite and isinstance(work, OneStatement):
                # PostgreSQL, a unit that is one Prepared statement: awaited on
                # the asyncpg connection from the event loop (``_native``),
                # here rather than in ``_unit_raw``: two coroutines fewer on
                # the path of every such call (issue 16).
                # The first attempt is awaited here, not through ``_retrying``
                # (one coroutine and a loop lookup fewer on every such call);
                # a failure goes to ``_retrying`` as its first attempt's.
                unit: OneStatement[T] = work
                try:
                    result = await self._native(unit, write)
                except Exception as exc:
                    failed: Exception | None = exc
                else:
                    failed = None
                if failed is not None:  # retried outside the except clause: no chained context
                    result = await self._retrying(partial(self._native, unit, write), failed)
                if write and self._checkpointer is not None:  # ``_wrote``, without its call
                    self._checkpointer.wrote()
                return result
            return await self._unit_raw(work, write=write, one_statement=one_statement)
        except Exception as exc:
            _raise_translated(exc)
        finally:
            self._unit_ended()

    async def _unit_raw(
        self, work: Callable[[Connection], T], *, write: bool, one_statement: bool
    ) -> T:
        # One statement is atomic and reads one snapshot on its own: SQLite's
        # fast path sends it without BEGIN/COMMIT, and on PostgreSQL it runs in
        # autocommit (two round trips fewer). A write there is its own COMMIT:
        # a connection lost while it ran leaves its outcome unknown
        # (``_as_one_write``), as a lost COMMIT does.
        # (A ``OneStatement`` unit on PostgreSQL never comes here: ``_unit``
        # awaits it natively.)
        autocommit = one_statement and not self.is_sqlite
        if autocommit and write:
            body = partial(_as_one_write, work)
        elif (one_statement and self._direct) or autocommit:
            body = partial(_as_one_statement, work)
        else:
            body = partial(_in_transaction if write else _in_read_transaction, work)
        if not write:
            return await self._retrying(
                lambda: self._on_connection(body, write=False, autocommit=autocommit)
            )
        if self._group is not None:
            result = await self._group.submit(work, body)
        else:
            result = await self._retrying(
                lambda: self._on_connection(body, write=True, autocommit=autocommit)
            )
        self._wrote()
        return result

    def _wrote(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    async def _on_connection(
        self, fn: Callable[[Connection], T], *, write: bool, autocommit: bool = False
    ) -> T:
        turn = self._writer if write else self._reader
        async with self._exclusive(), turn or nullcontext():
            if self._direct:
                return await self._in_worker(fn, write=write)
            if autocommit:
                return await self._autocommit(fn)
            async with self.engine.connect() as conn:
                options = self._transaction_options(write)
                if options:
                    conn = await conn.execution_options(**options)
                return await conn.run_sync(fn)

    async def _in_worker(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """``fn`` on one of this Storage's SQLite connections, in its worker thread."""
        conn = await self._checkout(write)
        if conn.get_transaction() is not None:
            # A transaction SQLite ended by itself (SQLITE_FULL rolls back the
            # whole transaction) can leave SQLAlchemy's transaction object
            # behind, inactive: the next BEGIN would fail. Clear it first.
            await conn.rollback()
        try:
            return await run_unit_in_worker(conn, fn)
        finally:
            await self._checkin(conn, write)

    @asynccontextmanager
    async def _autocommit_connection(self) -> AsyncIterator[AsyncConnection]:
        """One of this Storage's PostgreSQL connections in autocommit, outside
        any transaction; kept idle afterwards (``_idle_autocommit``) unless it
        was closed or enough are kept."""
        conn = await self._take_autocommit()
        try:
            yield conn
        finally:
            await self._give_back_autocommit(conn)

    async def _take_autocommit(self) -> AsyncConnection:
        """``_autocommit_connection``'s checkout (``_native`` calls it without
        the context manager's generator)."""
        idle = self._idle_autocommit
        if idle:
            conn = idle.pop()
        else:
            conn = await self.engine.connect()
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            # The synchronous connection's own state, read directly: each
            # property of AsyncConnection is two calls more (issue 16).
            sync = conn.sync_connection
            if sync is None or sync.get_transaction() is not None:
                await conn.rollback()
        except BaseException:
            await self._give_back_autocommit(conn)
            raise
        return conn

    async def _give_back_autocommit(self, conn: AsyncConnection) -> None:
        """``_autocommit_connection``'s checkin: the connection kept idle,
        unless it was closed or enough are kept."""
        if not self._keep_autocommit(conn):
            await conn.close()

    def _keep_autocommit(self, conn: AsyncConnection) -> bool:
        """``_give_back_autocommit`` without its coroutine: the connection
        kept idle (True), or False if it was closed or enough are kept (the
        caller then closes it)."""
        idle = self._idle_autocommit
        sync = conn.sync_connection  # as in ``_take_autocommit``
        if (
            self._closed
            or sync is None
            or sync.closed
            or sync.invalidated
            or len(idle) >= IDLE_CONNECTIONS
        ):
            if sync is not None:
                self._drivers.pop(sync, None)
            return False
        idle.append(conn)
        return True

    async def _autocommit(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on one of this Storage's PostgreSQL connections in autocommit."""
        async with self._autocommit_connection() as conn:
            return await conn.run_sync(fn)

    async def _native(self, unit: OneStatement[T], write: bool) -> T:
        """A ``OneStatement`` unit on one of this Storage's PostgreSQL
        connections in autocommit, awaited from the event loop: no greenlet,
        no SQLAlchemy execution context (``OneStatement.run_native``).

        It behaves as the same unit through ``_autocommit`` does: a write
        whose connection was closed before it began sent nothing (a
        connection fault, retried); one whose connection was lost while its
        statement ran has an unknown outcome (``CommitOutcomeUnknownError``);
        a connection found closed is invalidated, so it is not kept. A
        connection that cannot take the statement directly (another driver,
        a transaction left open) runs it through ``run_sync`` as before.
        """
        # ``_autocommit_connection``'s checkout and checkin, without its
        # generator-based context manager (on every native unit), and in
        # the common case (an idle connection outside any transaction; kept
        # idle again afterwards) without their coroutines either.
        idle = self._idle_autocommit
        last = idle[-1].sync_connection if idle else None
        if last is not None and last.get_transaction() is None:
            conn = idle.pop()
        else:
            conn = await self._take_autocommit()
        try:
            sync = conn.sync_connection
            # ``direct.autocommit_driver(sync)``, its lookups done once per
            # connection (five SQLAlchemy properties and calls a unit, the
            # costliest step of a checkout when the caches are cold): every
            # connection here is in autocommit (``_take_autocommit``), so
            # what can change is the pool's connection under ``sync``
            # (invalidated, revalidated: then looked up again) and whether a
            # transaction is open on the driver (asked every time).
            driver = None
            if sync is not None:
                known = self._drivers.get(sync)
                if known is not None and known[0] is sync._dbapi_connection:
                    driver = None if known[1].is_in_transaction() else known[1]
                else:
                    driver = direct.autocommit_driver(sync)
                    if driver is not None:
                        self._drivers[sync] = (sync._dbapi_connection, driver)
            if sync is None or driver is None:
                body: Callable[[Connection], T] = partial(
                    _as_one_write if write else _as_one_statement, unit
                )
                return await conn.run_sync(body)
            if write and driver.is_closed():
                await conn.invalidate()
                raise ConnectionResetError("the pooled connection was closed before the unit began")
            try:
                return await unit.run_native(sync, driver)
            except Exception as exc:
                if write and db_errors.is_connection_fault(exc):
                    raise _commit_unknown(exc) from exc
                raise
        finally:
            if not self._keep_autocommit(conn):
                await conn.close()

    async def _write_batch(self, body: Callable[[Connection], T]) -> T:
        """Group commit's runner: the writer lock is already held."""
        return await self._retrying(lambda: self._in_worker(body, write=True))

    async def _checkout(self, write: bool) -> AsyncConnection:
        """A connection of this Storage's own: SQLAlchemy's pool checkout costs
        as much as a whole indexed read, so idle connections are kept here."""
        idle = self._idle[write]
        if idle:
            return idle.pop()
        conn = await self.engine.connect()
        options = self._transaction_options(write)
        return await conn.execution_options(**options) if options else conn

    async def _checkin(self, conn: AsyncConnection, write: bool) -> None:
        idle = self._idle[write]
        if self._closed or conn.closed or conn.invalidated or len(idle) >= IDLE_CONNECTIONS:
            await conn.close()
        else:
            idle.append(conn)

    async def _retrying(
        self, attempt: Callable[[], Awaitable[T]], failed: Exception | None = None
    ) -> T:
        """Run ``attempt`` until it succeeds, again after each fault a retry
        can cure: contention (``RETRY_ATTEMPTS`` times) and a connection
        lost before the unit committed (for ``RECONNECT_SECONDS``; the pool
        drops the dead connection, ``pool_pre_ping`` any other one).
        ``failed``: the exception a first attempt made by the caller raised
        (it is judged as this loop's own first attempt's would be)."""
        delay = RETRY_FIRST_DELAY
        busy = 0
        reconnect_until: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                return await attempt()
            except AbathurError:
                raise
            except Exception as exc:
                if db_errors.is_retryable(exc):
                    busy += 1
                    if busy == RETRY_ATTEMPTS:
                        raise DatabaseBusyError(
                            f"database still busy after {RETRY_ATTEMPTS} attempts: "
                            f"{getattr(exc, 'orig', exc)}"
                        ) from exc
                    limit = RETRY_MAX_DELAY
                elif db_errors.is_connection_fault(exc):
                    self._check_open()
                    if reconnect_until is None:
                        reconnect_until = loop.time() + RECONNECT_SECONDS
                    elif loop.time() >= reconnect_until:
                        raise ConnectionLostError(
                            "the database server could not be reached for "
                            f"{RECONNECT_SECONDS:g} s; nothing of this call was committed: "
                            f"{getattr(exc, 'orig', None) or exc}"
                        ) from exc
                    limit = RECONNECT_MAX_DELAY
                else:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, limit)

    # ------------------------------------------------------------ health

    async def integrity_check(self) -> str:
        """``"ok"``, or a description of every problem found.

        SQLite: ``PRAGMA integrity_check``; a file too damaged for the check
        to run is reported, not raised. PostgreSQL: constraints that were
        created NOT VALID and never validated.
        """
        return await health.integrity_check(self)

    async def validate_foreign_keys(self) -> list[dict[str, Any]]:
        """Every row whose foreign key points at nothing; ``[]`` when consistent."""
        return await health.validate_foreign_keys(self)

    async def explain_query_plan(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> list[str]:
        """The plan lines of ``sql``: SQLite's EXPLAIN QUERY PLAN details, or
        PostgreSQL's EXPLAIN text. Named parameters (``:name``) take a mapping;
        a driver-level statement (``?`` or ``$1``) takes a sequence."""
        return await health.explain_query_plan(self, sql, params)
