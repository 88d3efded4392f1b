"""The engine: one per Database, with abathur's connection settings attached
to it alone (pragmas, ``BEGIN`` under our control, the NUL guard)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

from abathur.db.sqlite.worker import execute_in_worker, in_worker, lean_dbapi
from abathur.db.url import is_memory_url
from abathur.errors import ValidationError
from abathur.strict_json import dumps, loads

SQLITE_PRAGMAS = (
    # busy_timeout first: the journal_mode switch below may have to wait for a lock.
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA wal_autocheckpoint=1000",
)


class NulChecked(list[Any]):
    """An executemany's parameter rows whose producer vouches that none of
    their texts contains NUL: each was validated by rules that refuse it
    (``check_text``, ``check_key``, ``parse_namespace``, ``check_json``) or
    written by ``dumps``, which refuses it. ``_refuse_nul`` does not scan
    them again. Made only by ``Prepared.execute_columns(..., nul_checked=True)``,
    for ``put_memories``' versions and audit rows (``refuse_nul`` checks the
    few values they take from stored rows)."""

    __slots__ = ()


def refuse_nul(values: Any) -> None:
    """ValidationError if any of ``values`` is a text containing NUL."""
    for value in values:
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError(f"text may not contain the NUL character: {value!r}")


def _refuse_nul(_conn: Any, _cursor: Any, _sql: str, params: Any, _ctx: Any, many: bool) -> None:
    """No text sent to the database may contain NUL, on any backend.

    PostgreSQL cannot store it at all (a driver error deep in a transaction);
    SQLite can, which would make the same call succeed on one backend and fail
    on the other. Checked once here, at the boundary, for every statement
    (but the rows of a ``NulChecked``, checked before).
    """
    if type(params) is NulChecked:
        return
    rows = params if many else (params,)
    for row in rows:
        values: Any
        if isinstance(row, dict):
            values = row.values()
        elif isinstance(row, list | tuple):
            values = row
        else:
            # SQLAlchemy's "insertmanyvalues" (an executemany with RETURNING on
            # PostgreSQL) reports each batch as ``many`` with one flat row.
            values = (row,)
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
            # One private connection for the object's whole life; Storage
            # serialises transactions on it.
            options.setdefault("poolclass", StaticPool)
        else:
            # SQLAlchemy's own default for a file is AsyncAdaptedQueuePool
            # only since 2.0.38 (NullPool before: a new connection, and a new
            # aiosqlite thread, per checkout): the same pool on every version.
            options.setdefault("poolclass", AsyncAdaptedQueuePool)
        if url.drivername == "sqlite+aiosqlite" and "module" not in options:
            module = lean_dbapi()
            if module is not None:
                options["module"] = module
        engine = create_async_engine(url, **options)
        _attach_sqlite_hooks(engine, file_backed=not is_memory_url(url))
        return engine
    options.setdefault("json_serializer", dumps)
    # asyncpg's json/jsonb codecs (installed by SQLAlchemy's dialect) parse
    # with this: ``json.loads``' results and errors, without its per-call
    # layers (one call per JSON value read, not three; issue 16).
    options.setdefault("json_deserializer", loads)
    # No ping before every checkout (a round trip per unit of work): a pooled
    # connection that died fails its first statement, which is a connection
    # fault, and a unit that has not committed is run again on a new one
    # (``Storage._retrying``).
    options.setdefault("pool_pre_ping", False)
    connect_args = dict(options.get("connect_args") or {})
    server_settings = dict(connect_args.get("server_settings") or {})
    # Every execution gets a plan for its own parameters. asyncpg prepares
    # each statement once per connection, and after five executions
    # PostgreSQL may switch a prepared statement to a generic plan, chosen
    # without the parameters: for a namespace range that can be a backward
    # walk of the whole updated_at index (26 ms instead of 0.3 ms). Planning
    # these statements costs microseconds; a wrong generic plan, milliseconds.
    server_settings.setdefault("plan_cache_mode", "force_custom_plan")
    # No JIT: every statement here is an index probe or a short walk, but a
    # plan whose cost the planner cannot bound (the search's walk branch,
    # which stops after one page) crosses jit_above_cost and spends 70 ms
    # (10k rows) to 1.2 s (100k rows) compiling what runs in a millisecond.
    server_settings.setdefault("jit", "off")
    # No parallel workers either: launching one costs milliseconds, more than
    # these statements, and the search's branch that a one-time filter skips
    # would still launch its workers (the filter sits below the Gather).
    server_settings.setdefault("max_parallel_workers_per_gather", "0")
    connect_args["server_settings"] = server_settings
    options["connect_args"] = connect_args
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


def no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    """Connect hook of file Databases, which checkpoint in the background."""
    # Through a cursor: SQLAlchemy 2.0's aiosqlite adapter returns aiosqlite's
    # own cursor from ``connection.execute()``, whose ``close()`` is a coroutine.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    finally:
        cursor.close()
