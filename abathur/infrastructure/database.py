"""The Database object: one engine, its connection settings, migrations and transactions.

Services never build engines or sessions themselves; they ask the Database for
a transaction (``db.run(work, write=...)``), which on SQLite starts write
transactions with ``BEGIN IMMEDIATE`` so that a read-then-write never dies with
"database is locked" halfway, and which retries the whole unit of work when the
database reports contention that a retry can cure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import URL, event, inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import StaticPool

from abathur.errors import DatabaseError, MigrationError, ValidationError
from abathur.infrastructure.group_commit import GROUPED, GroupCommit
from abathur.infrastructure.sqlite_driver import (
    LeanDBAPI,
    execute_in_worker,
    in_worker,
    lean_dbapi,
    run_in_worker,
)
from abathur.infrastructure.types import dumps

if TYPE_CHECKING:
    from alembic.config import Config

    from abathur.infrastructure.document_service import DocumentIndexService
    from abathur.infrastructure.memory_service import MemoryService
    from abathur.infrastructure.session_service import SessionService
    from abathur.infrastructure.task_service import TaskService

T = TypeVar("T")

DEFAULT_URL = "sqlite+aiosqlite:///abathur.db"
SQLITE_PRAGMAS = (
    # busy_timeout first: the journal_mode switch below may have to wait for a lock.
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA wal_autocheckpoint=1000",
)
LOG = logging.getLogger("abathur")
# A file Database checkpoints its WAL in the background, off the commit path
# (``Database._checkpoint``), after this many write units; SQLite's own
# automatic checkpoint, which runs inside whichever COMMIT crosses 1000 pages
# and makes every writer queued behind that COMMIT wait for its fsync, is off
# on its connections.
CHECKPOINT_EVERY = 500
# A WAL of this many frames (16 MB of 4 KB pages; SQLite's own automatic
# checkpoint restarts it at 1000) is checkpointed to its end under the writer
# lock, so that it starts over (``Database._checkpoint``).
WAL_RESTART_FRAMES = 4000
RETRY_ATTEMPTS = 12
RETRY_FIRST_DELAY = 0.005
RETRY_MAX_DELAY = 0.5
# PostgreSQL SQLSTATEs a retry cures: serialization failure, deadlock, lock not available.
PG_RETRYABLE = {"40001", "40P01", "55P03"}
# Connections a SQLite Database keeps open between units of work, per kind
# (readers; writers, whose transactions begin IMMEDIATE): opening one costs as
# much as dozens of reads. Units take turns (see Database.__init__), so one of
# each is the norm; more appear only beside ``transaction()`` users.
IDLE_CONNECTIONS = 4


def default_url() -> str:
    return os.environ.get("ABATHUR_DATABASE_URL", DEFAULT_URL)


def to_url(url_or_path: str | Path | URL) -> URL:
    """An async SQLAlchemy URL from a URL string, a URL or a filesystem path."""
    if isinstance(url_or_path, URL):
        url = url_or_path
    elif isinstance(url_or_path, Path):
        url = make_url(f"sqlite+aiosqlite:///{url_or_path}")
    elif "://" in url_or_path:
        url = make_url(url_or_path)
    else:
        url = make_url(f"sqlite+aiosqlite:///{url_or_path}")
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    return url


def is_memory_url(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _refuse_nul(_conn: Any, _cursor: Any, _sql: str, params: Any, _ctx: Any, many: bool) -> None:
    """No text sent to the database may contain NUL, on any backend.

    PostgreSQL cannot store it at all (a driver error deep in a transaction);
    SQLite can, which would make the same call succeed on one backend and fail
    on the other. Checked once here, at the boundary, for every statement.
    """
    rows = params if many else (params,)
    for row in rows:
        values = row.values() if isinstance(row, dict) else row or ()
        for value in values:
            if isinstance(value, str) and "\x00" in value:
                raise ValidationError(f"text may not contain the NUL character: {value!r}")


def create_engine(url: URL, **options: Any) -> AsyncEngine:
    """An AsyncEngine with abathur's connection settings attached to it alone."""
    engine = _create_engine(url, **options)
    event.listen(engine.sync_engine, "before_cursor_execute", _refuse_nul)
    return engine


def _create_engine(url: URL, **options: Any) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        if is_memory_url(url):
            # One private connection for the object's whole life; Database
            # serialises transactions on it.
            options.setdefault("poolclass", StaticPool)
        if url.drivername == "sqlite+aiosqlite" and "module" not in options:
            module = lean_dbapi()
            if module is not None:
                options["module"] = module
        engine = create_async_engine(url, **options)
        _attach_sqlite_hooks(engine, file_backed=not is_memory_url(url))
        return engine
    options.setdefault("json_serializer", dumps)
    options.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **options)


def _attach_sqlite_hooks(engine: AsyncEngine, *, file_backed: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            if file_backed:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if in_worker():  # inside a unit of work in the worker thread
            execute_in_worker(f"BEGIN {mode}")
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")


def script_location() -> Path:
    """The Alembic scripts: packaged in a wheel, or the repository's ``alembic/``."""
    package_dir = Path(__file__).resolve().parent.parent
    packaged = package_dir / "_alembic"
    return packaged if packaged.is_dir() else package_dir.parent / "alembic"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


@asynccontextmanager
async def migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection fit for running migrations.

    On SQLite, batch migrations copy tables; with foreign keys enforced, the
    DROP of the old copy would cascade (``ON DELETE SET NULL`` would wipe
    references) or fail. ``PRAGMA foreign_keys`` is a no-op inside a
    transaction, so it is switched off here, before Alembic begins, and the
    migration itself runs ``PRAGMA foreign_key_check`` before it commits.
    ``BEGIN IMMEDIATE`` makes concurrent migrators queue instead of racing.
    """
    async with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            yield conn
            return
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("PRAGMA foreign_keys=OFF")
        try:
            yield await conn.execution_options(sqlite_begin="IMMEDIATE")
        finally:
            if conn.in_transaction():
                await conn.rollback()
            # Outside any transaction now, so the pragma takes effect before
            # the connection goes back to the pool.
            await driver.execute("PRAGMA foreign_keys=ON")


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def _reflect_foreign_keys(connection: Connection) -> list[tuple[str, str, str, str]]:
    """(table, column, parent table, parent column) of every single-column foreign key."""
    inspector = inspect(connection)
    return [
        (table, fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0])
        for table in inspector.get_table_names()
        for fk in inspector.get_foreign_keys(table)
        if len(fk["constrained_columns"]) == 1
    ]


def _in_transaction(work: Callable[[Connection], T], conn: Connection) -> T:
    with conn.begin():
        return work(conn)


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


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    """Connect hook of file Databases, which checkpoint in the background."""
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0").close()


def _checkpoint(conn: Connection) -> int:
    """In the worker thread: copy committed WAL frames into the database file;
    the number of frames the WAL holds.

    PASSIVE: it neither waits for nor blocks readers and writers; frames it
    cannot copy yet (a reader still needs them) wait for the next run.
    """
    _busy, frames, _copied = execute_in_worker("PRAGMA wal_checkpoint(PASSIVE)")
    return int(frames)


def _with_orm_session(work: Callable[[OrmSession], T], conn: Connection) -> T:
    """``work`` over an ORM session inside ``conn``'s transaction.

    Inside a group commit batch (``GROUPED``) the session works in a
    SAVEPOINT of its own: if its flush fails it rolls back only that, never
    the transaction the batch shares with other units. A unit alone in its
    transaction (every read, a solo write, PostgreSQL) spends no savepoint.
    """
    session = OrmSession(
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


async def _in_worker(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
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


def is_retryable(exc: BaseException) -> bool:
    """Contention that a retry of the whole transaction can cure."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in PG_RETRYABLE:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


class Database:
    """An abathur database: SQLite (file or memory) or PostgreSQL.

    ``Database(url_or_path)`` takes an SQLAlchemy URL (``sqlite+aiosqlite:///x.db``,
    ``postgresql+asyncpg://...``) or a filesystem ``Path``; ``Path(":memory:")``
    gives a private in-memory database. Extra keyword arguments go to
    ``create_async_engine``.
    """

    def __init__(self, url_or_path: str | Path | URL | None = None, **engine_options: Any):
        self.url = to_url(default_url() if url_or_path is None else url_or_path)
        self.engine = create_engine(self.url, **engine_options)
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._serial: asyncio.Lock | None = asyncio.Lock() if self.is_memory else None
        # SQLite has one writer at a time. Queueing this process's writers on an
        # asyncio lock (FIFO, no sleeping) keeps them off SQLite's busy handler,
        # whose back-off sleeps would dominate latency under contention. Other
        # processes still meet the busy timeout and the retry in run().
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
        # is in use (always, unless this aiosqlite lacks what it needs).
        self._direct = isinstance(self.engine.dialect.dbapi, LeanDBAPI)
        self._idle: dict[bool, list[AsyncConnection]] = {False: [], True: []}
        self._closed = False
        # A file database on the direct path: writers that queue on the writer
        # lock commit together (group_commit), and WAL checkpoints run in the
        # background, off the commit path.
        self._group: GroupCommit | None = (
            GroupCommit(self._writer, self._write_batch, is_retryable)
            if self._writer is not None and self._direct
            else None
        )
        if self._group is not None:  # background checkpoints: see _wrote
            event.listen(self.engine.sync_engine, "connect", _no_autocheckpoint)
        self._writes_since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ identity

    @property
    def dialect(self) -> str:
        """The dialect name: "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite (file or memory)."""
        return self.dialect == "sqlite"

    @property
    def is_memory(self) -> bool:
        """True for a private in-memory SQLite database."""
        return is_memory_url(self.url)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------ lifecycle

    async def initialize(self) -> None:
        """Bring the schema to the newest revision by running the migrations."""
        await self.upgrade("head")

    async def close(self) -> None:
        """Close this Database's connections and dispose of the engine.

        Queued writes and a running background checkpoint finish first;
        connections still in use by a unit are closed when it ends.
        """
        self._closed = True  # from now on no write starts a checkpoint
        if self._writer is not None:
            async with self._writer:  # a unit writing alone, a batch, a transaction: ended
                pass
        while pending := [
            t for t in (self._checkpointing, self._group and self._group.committer) if t
        ]:
            await asyncio.wait(pending)
        for idle in self._idle.values():
            while idle:
                await idle.pop().close()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        await self.initialize()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ migrations

    async def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema up to ``revision`` (default: the newest)."""
        from alembic import command

        await self._migrate(lambda config: command.upgrade(config, revision))

    async def downgrade(self, revision: str) -> None:
        """Migrate the schema down to ``revision`` (``"base"`` drops every table)."""
        from alembic import command

        await self._migrate(lambda config: command.downgrade(config, revision))

    async def current_revision(self) -> str | None:
        """The database's Alembic revision, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        def read(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        async with self._exclusive(), self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def _migrate(self, step: Callable[[Config], None]) -> None:
        # Alembic keeps the running migration in module globals: one at a time
        # per process. Other processes queue on the database's own lock.
        async with _process_migration_lock(), self._exclusive():
            await self._migrate_locked(step)

    async def _migrate_locked(self, step: Callable[[Config], None]) -> None:
        async with migration_connection(self.engine) as conn:
            try:
                await conn.run_sync(lambda sync_conn: step(alembic_config(sync_conn)))
            except MigrationError:
                raise
            except Exception as exc:
                raise MigrationError(f"migration failed: {exc}") from exc

    # ------------------------------------------------------------ transactions

    def _exclusive(self) -> AbstractAsyncContextManager[Any]:
        """In-memory databases share one connection: one transaction at a time."""
        return self._serial if self._serial is not None else nullcontext()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """An AsyncSession inside one transaction, committed on success.

        ``write=True`` on SQLite takes the write lock at BEGIN (``BEGIN
        IMMEDIATE``): the busy timeout then applies at the start, and a
        transaction that read a row can always write it.
        """
        writer = self._writer if write and self._writer is not None else nullcontext()
        async with (
            self._exclusive(),
            writer,
            self._sessionmaker() as session,
            session.begin(),
        ):
            options = self._transaction_options(write)
            if options:
                await session.connection(execution_options=options)
            yield session
        if write:  # committed: it counts toward the next checkpoint like any write
            self._wrote()

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

    async def run(self, work: Callable[[OrmSession], T], *, write: bool = True) -> T:
        """Run ``work(session)`` in one transaction, retrying it whole on lock contention.

        ``work`` is a plain function over a synchronous ORM ``Session``; see
        ``read()`` for where it runs.
        """
        return await self._unit(partial(_with_orm_session, work), write=write)

    async def read(self, work: Callable[[Connection], T], *, one_statement: bool = False) -> T:
        """Run ``work(connection)``, a plain function of Core reads, in one transaction.

        On SQLite the whole unit runs in the connection's worker thread, in
        one crossing: its statements call sqlite3 directly (see
        ``sqlite_driver`` and ``prepared``). On PostgreSQL it runs through
        ``run_sync``. ``one_statement=True`` promises that ``work`` sends a
        single statement: SQLite then runs it without BEGIN and COMMIT, since
        one statement is atomic and reads one snapshot on its own.
        """
        return await self._unit(work, write=False, one_statement=one_statement)

    async def write(self, work: Callable[[Connection], T], *, one_statement: bool = False) -> T:
        """Run ``work(connection)``, a plain function of Core statements, in one
        write transaction, retrying it whole on lock contention, like ``run()``.
        ``one_statement`` as for ``read()``."""
        return await self._unit(work, write=True, one_statement=one_statement)

    async def _unit(
        self, work: Callable[[Connection], T], *, write: bool, one_statement: bool = False
    ) -> T:
        body = partial(
            _as_one_statement if one_statement and self._direct else _in_transaction, work
        )
        if not write:
            return await self._retrying(lambda: self._on_connection(body, write=False))
        if self._group is not None:
            result = await self._group.submit(work, body)
        else:
            result = await self._retrying(lambda: self._on_connection(body, write=True))
        self._wrote()
        return result

    def _wrote(self) -> None:
        """Count a committed write unit; start a background checkpoint when due."""
        if self._group is None or self._closed:
            return
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._writes_since_checkpoint = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        """A PASSIVE checkpoint on a connection of its own, holding no lock of
        this Database: writers and readers carry on while it copies and syncs.

        SQLite starts the WAL over from its beginning only after a checkpoint
        that copied every frame, and writers that never pause leave every
        such checkpoint short of what they committed meanwhile: the WAL would
        grow with every write, forever. So once it holds ``WAL_RESTART_FRAMES``
        frames, a second pass takes the writer lock (between two batches of
        group commit) and copies the rest; the next write restarts the WAL.
        """
        assert self._writer is not None  # file databases only
        try:
            async with self.engine.connect() as conn:
                frames = await _in_worker(conn, _checkpoint)
                if frames >= WAL_RESTART_FRAMES:
                    async with self._writer:
                        await _in_worker(conn, _checkpoint)
        except Exception as exc:  # a missed checkpoint is retried after the next write
            LOG.warning("background WAL checkpoint failed: %s", exc)
            self._writes_since_checkpoint = CHECKPOINT_EVERY
        finally:
            self._checkpointing = None

    async def _on_connection(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        turn = self._writer if write else self._reader
        async with self._exclusive(), turn or nullcontext():
            if self._direct:
                return await self._in_worker(fn, write=write)
            async with self.engine.connect() as conn:
                options = self._transaction_options(write)
                if options:
                    conn = await conn.execution_options(**options)
                return await conn.run_sync(fn)

    async def _in_worker(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """``fn`` on one of this Database's SQLite connections, in its worker thread."""
        conn = await self._checkout(write)
        try:
            return await _in_worker(conn, fn)
        finally:
            await self._checkin(conn, write)

    async def _write_batch(self, body: Callable[[Connection], T]) -> T:
        """Group commit's runner: the writer lock is already held."""
        return await self._retrying(lambda: self._in_worker(body, write=True))

    async def _checkout(self, write: bool) -> AsyncConnection:
        """A connection of this Database's own: SQLAlchemy's pool checkout costs
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

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = RETRY_FIRST_DELAY
        for number in range(RETRY_ATTEMPTS):
            try:
                return await attempt()
            except DBAPIError as exc:
                if not is_retryable(exc):
                    raise
                if number == RETRY_ATTEMPTS - 1:
                    raise DatabaseError(
                        f"database still busy after {RETRY_ATTEMPTS} attempts: {exc.orig}"
                    ) from exc
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RETRY_MAX_DELAY)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ health

    async def integrity_check(self) -> str:
        """``"ok"``, or a description of every problem found.

        SQLite: ``PRAGMA integrity_check``; a file too damaged for the check
        to run is reported, not raised. PostgreSQL: constraints that were
        created NOT VALID and never validated.
        """
        if self.is_sqlite:
            try:
                async with self.transaction(write=False) as session:
                    result = await session.execute(text("PRAGMA integrity_check"))
                    return "\n".join(str(r) for r in result.scalars().all())
            except DBAPIError as exc:
                return f"integrity check could not run: {exc.orig}"
        async with self.transaction(write=False) as session:
            rows = (
                (
                    await session.execute(
                        text(
                            "SELECT conrelid::regclass::text || '.' || conname "
                            "FROM pg_constraint WHERE NOT convalidated "
                            "AND connamespace = current_schema()::regnamespace"
                        )
                    )
                )
                .scalars()
                .all()
            )
            return "ok" if not rows else "not validated: " + ", ".join(rows)

    async def validate_foreign_keys(self) -> list[dict[str, Any]]:
        """Every row whose foreign key points at nothing; ``[]`` when consistent."""
        async with self.transaction(write=False) as session:
            if self.is_sqlite:
                result = await session.execute(text("PRAGMA foreign_key_check"))
                return [
                    {"table": r[0], "rowid": r[1], "parent": r[2], "fkid": r[3]} for r in result
                ]
            conn = await session.connection()
            foreign_keys = await conn.run_sync(_reflect_foreign_keys)
            violations: list[dict[str, Any]] = []
            for table, column, parent, parent_column in foreign_keys:
                orphans = await conn.exec_driver_sql(
                    f'SELECT DISTINCT c."{column}" FROM "{table}" c '
                    f'LEFT JOIN "{parent}" p ON p."{parent_column}" = c."{column}" '
                    f'WHERE c."{column}" IS NOT NULL AND p."{parent_column}" IS NULL'
                )
                violations.extend(
                    {"table": table, "value": value, "parent": parent} for (value,) in orphans
                )
            return violations

    async def explain_query_plan(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> list[str]:
        """The plan lines of ``sql``: SQLite's EXPLAIN QUERY PLAN details, or
        PostgreSQL's EXPLAIN text. Named parameters (``:name``) take a mapping;
        a driver-level statement (``?`` or ``$1``) takes a sequence."""
        prefix = "EXPLAIN QUERY PLAN " if self.is_sqlite else "EXPLAIN "
        async with self.transaction(write=False) as session:
            conn = await session.connection()
            if params is None or isinstance(params, Mapping):
                result = await conn.execute(text(prefix + sql), dict(params or {}))
            else:
                result = await conn.exec_driver_sql(prefix + sql, tuple(params))
            rows = result.all()
        return [str(row[-1] if self.is_sqlite else row[0]) for row in rows]

    # ------------------------------------------------------------ services

    @cached_property
    def sessions(self) -> SessionService:
        """This database's SessionService."""
        from abathur.infrastructure.session_service import SessionService

        return SessionService(self)

    @cached_property
    def memory(self) -> MemoryService:
        """This database's MemoryService (unscoped, no resolver)."""
        from abathur.infrastructure.memory_service import MemoryService

        return MemoryService(self)

    @cached_property
    def tasks(self) -> TaskService:
        """This database's TaskService: tasks, agents, checkpoints, audit rows."""
        from abathur.infrastructure.task_service import TaskService

        return TaskService(self)

    @cached_property
    def documents(self) -> DocumentIndexService:
        """This database's DocumentIndexService."""
        from abathur.infrastructure.document_service import DocumentIndexService

        return DocumentIndexService(self)
