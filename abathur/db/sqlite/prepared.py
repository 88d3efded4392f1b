"""Hot statements: compiled once, sent to sqlite3 directly inside a unit of work.

SQLAlchemy's execution path (execution context, parameter and result
processing, the result object) costs more per statement than SQLite's own
work on an indexed row, several times over. ``Prepared`` wraps a Core
statement that the hot paths run on every call. On SQLite, inside a unit of
work running in the connection's worker thread (``Database.read/write/run``),
it runs the statement's compiled SQL on the sqlite3 connection itself, with
the very bind and result processors SQLAlchemy would apply (JSON text, UTC
datetimes, booleans), and fires the engine's ``before_cursor_execute``
listeners (NUL refusal, statement recorders) as SQLAlchemy would. Anywhere
else (PostgreSQL, the stock aiosqlite adapter) it is plain ``execute``.

Rows come back as named tuples whose fields carry the statement's labels, so
callers read ``row.state`` either way. sqlite3 errors become the SQLAlchemy
exceptions the rest of the code expects (``IntegrityError`` and so on).
Columns left out of an INSERT or UPDATE get their Python-side defaults, and an
ORM session flushes its pending changes first, as SQLAlchemy would do.

Limits, by design: listeners receive no cursor and no execution context, and
a listener registered with ``retval=True`` cannot rewrite the statement;
statements with expanding (``IN``) or literal-execute parameters are refused.
Plans are cached per statement and set of columns, not per engine: the bind
and result processors of abathur's column types do not depend on engine
options.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NoReturn, TypeVar

from sqlalchemy import orm
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

from abathur.db.engine import NulChecked
from abathur.db.postgres import direct
from abathur.db.sqlite.worker import worker_connection

Executor = orm.Session | Connection
Params = Mapping[str, Any]
T = TypeVar("T")
_MISSING = object()


def identity(value: Any) -> Any:
    """The value itself (a result or bind processor that converts nothing)."""
    return value


class _Computed:
    """A column default computed afresh for every row (``default=utcnow``)."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[], Any]):
        self.compute = compute


def _python_default(default: Any, name: str) -> Any:
    """The value, or a ``_Computed``, of a column's Python-side default."""
    if default is not None and default.is_scalar:
        return default.arg
    if default is not None and default.is_callable:
        # SQLAlchemy wraps the callable to take an execution context; ours ignore it.
        return _Computed(lambda: default.arg(None))
    raise ValueError(f"Prepared cannot compute the default of column {name!r}")


def _keeps_none(process: Callable[[Any], Any]) -> bool:
    """Whether the bind processor ``process`` turns None into None (asked
    once per plan: processors are pure functions of their value)."""
    if process is identity:
        return True
    try:
        return process(None) is None
    except Exception:
        return False


class _Plan:
    """One compilation of a statement for SQLite: its SQL, how to build its
    positional parameters, and how to turn a fetched tuple into a row."""

    __slots__ = ("_types", "binds", "results", "row_type", "sql")

    def __init__(self, statement: Executable, dialect: Dialect, keys: Sequence[str] | None):
        compiled = statement.compile(dialect=dialect, column_keys=keys)  # type: ignore[attr-defined]
        assert isinstance(compiled, SQLCompiler)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("Prepared cannot run statements with expanding parameters")
        self.sql = compiled.string
        # Columns left out of an INSERT or UPDATE whose default is computed in
        # Python ("prefetch"): SQLAlchemy's execution context fills them in.
        defaults = {c.key: c.default for c in compiled.insert_prefetch}
        defaults |= {c.key: c.onupdate for c in compiled.update_prefetch}
        # Each parameter: its name, its default, its bind processor, whether
        # that processor turns None into None (a None then skips it), and
        # whether the default is no value (required) or one computed per row.
        self.binds: list[tuple[str, Any, Callable[[Any], Any], bool, bool]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if name in defaults:
                default = _python_default(defaults[name], name)
            else:
                default = _MISSING if bind.required else bind.effective_value
            process = bind.type._cached_bind_processor(dialect) or identity
            special = default is _MISSING or isinstance(default, _Computed)
            self.binds.append((name, default, process, _keeps_none(process), special))
        columns = compiled._result_columns
        self.row_type: Any = namedtuple(  # type: ignore[misc]
            "PreparedRow", [c.keyname for c in columns], rename=True
        )
        self._types = [c.type for c in columns]
        # Only the columns that need converting (JSON, timestamps, booleans).
        # PostgreSQL's depend on the type each column arrives as (``described``).
        self.results: list[tuple[int, Callable[[Any], Any]]] | None = None
        if dialect.name != "postgresql":
            self.described(dialect, [None] * len(columns))

    def described(self, dialect: Dialect, wire_types: Sequence[Any]) -> None:
        """The result processors, for columns that arrive as ``wire_types``
        (PostgreSQL: type OIDs; SQLite: None)."""
        processors = [
            t._cached_result_processor(dialect, wire)
            for t, wire in zip(self._types, wire_types, strict=True)
        ]
        self.results = [(i, p) for i, p in enumerate(processors) if p is not None]

    def args(self, params: Params) -> tuple[Any, ...]:
        values: list[Any] = []
        get = params.get
        for name, default, process, keeps_none, special in self.binds:
            value = get(name, default)
            if value is None and keeps_none:
                values.append(None)
                continue
            if special and value is default:
                if value is _MISSING:
                    raise KeyError(f"no value for parameter {name!r} of: {self.sql}")
                value = value.compute()
            # Most binds convert nothing (text, ints): no call for those.
            values.append(value if process is identity else process(value))
        return tuple(values)

    def args_many(self, rows: Sequence[Params]) -> list[tuple[Any, ...]]:
        """``args`` of every row, built column by column: a bulk insert's rows
        share values (one timestamp, one actor), and a value repeated from the
        row before is processed once."""
        columns = []
        for name, default, process, _keeps, _special in self.binds:
            if default is _MISSING:
                try:
                    values = [row[name] for row in rows]
                except KeyError:
                    raise KeyError(f"no value for parameter {name!r} of: {self.sql}") from None
            else:
                values = [row.get(name, default) for row in rows]
            if isinstance(default, _Computed):
                values = [v.compute() if isinstance(v, _Computed) else v for v in values]
            columns.append(_processed(process, values))
        return list(zip(*columns, strict=True))

    def args_columns(self, columns: Mapping[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
        """``args_many`` of rows given column by column (each a sequence of
        one value per row, all the same length; a column left out takes its
        default): no row objects built, and as there a value repeated from
        the row before processed once."""
        count = len(next(iter(columns.values())))
        processed = []
        for name, default, process, _keeps, _special in self.binds:
            values = columns.get(name)
            if values is None:
                if default is _MISSING:
                    raise KeyError(f"no value for parameter {name!r} of: {self.sql}")
                if isinstance(default, _Computed):
                    values = [default.compute() for _ in range(count)]
                else:
                    values = [default] * count
            processed.append(_processed(process, values))
        return list(zip(*processed, strict=True))

    def rows(self, fetched: Sequence[Sequence[Any]]) -> list[Any]:
        make, results = self.row_type._make, self.results
        assert results is not None
        if not results:
            return [make(raw) for raw in fetched]
        converted = []
        for raw in fetched:
            values = list(raw)
            for index, process in results:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            converted.append(make(values))
        return converted


def _processed(process: Callable[[Any], Any], values: Sequence[Any]) -> Sequence[Any]:
    """``process`` of each value (``values`` itself when it converts nothing),
    a value that is the very object of the one before processed once."""
    if process is identity:
        return values
    processed = []
    last: Any = _MISSING
    done: Any = None
    for value in values:
        if value is not last:
            last, done = value, process(value)
        processed.append(done)
    return processed


# The attribute of a dialect instance holding its plans, by (Prepared, keys).
_PLANS = "_abathur_prepared_plans"


class Prepared:
    """A Core statement run on the fast path when it can be (see the module)."""

    __slots__ = ("statement",)

    def __init__(self, statement: Executable):
        self.statement = statement

    # ------------------------------------------------------------ results

    def all(self, executor: Executor, params: Params) -> list[Any]:
        """Every row."""
        raw = worker_connection()
        if raw is None:
            direct = self._direct(executor, params)
            if direct is not None:
                plan, fetched = direct
                return plan.rows(fetched)
            return list(_autoflushed(executor).execute(self.statement, params).all())
        plan, fetched = self._fetch_all(raw, executor, params)
        return plan.rows(fetched)

    def raw(self, executor: Executor, params: Params) -> tuple[list[Any], list[Any]]:
        """SQLite only: every row as the driver returns it, no column
        converted, and the result processor of each column (None for those
        without): for a caller that builds its own objects from the rows in
        one pass. In a unit of work's worker thread on the fast path, else
        through the connection's ``exec_driver_sql`` (the same SQL, parameters
        and listeners)."""
        raw = worker_connection()
        if raw is None:
            connection = _connection(executor)
            plan = self._plan(connection.dialect, params)
            args = plan.args(params)
            fetched = list(connection.exec_driver_sql(plan.sql, args).all())
        else:
            plan, fetched = self._fetch_all(raw, executor, params)
        processors: list[Any] = [None] * len(plan.row_type._fields)
        for index, process in plan.results or ():
            processors[index] = process
        return fetched, processors

    def column(self, executor: Executor, params: Params) -> list[Any]:
        """The first column of every row (converted as ``all`` does), no row objects."""
        raw = worker_connection()
        if raw is None:
            direct = self._direct(executor, params)
            if direct is None:
                return list(_autoflushed(executor).execute(self.statement, params).scalars().all())
            plan, fetched = direct
        else:
            plan, fetched = self._fetch_all(raw, executor, params)
        process = next((p for i, p in plan.results or () if i == 0), None)
        if process is None:
            return [row[0] for row in fetched]
        return [None if row[0] is None else process(row[0]) for row in fetched]

    def first(self, executor: Executor, params: Params) -> Any | None:
        """The first row, or None."""
        raw = worker_connection()
        if raw is None:
            direct = self._direct(executor, params)
            if direct is not None:
                plan, fetched = direct
                return plan.rows(fetched[:1])[0] if fetched else None
            return _autoflushed(executor).execute(self.statement, params).first()
        plan, cursor = self._run(raw, executor, params)
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()
        return None if found is None else plan.rows([found])[0]

    def scalar(self, executor: Executor, params: Params) -> Any:
        """The first column of the first row, or None."""
        found = self.first(executor, params)
        return None if found is None else found[0]

    def execute(self, executor: Executor, params: Params) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        raw = worker_connection()
        if raw is None:
            result = _autoflushed(executor).execute(self.statement, params)
            return int(getattr(result, "rowcount", 0) or 0)
        _plan, cursor = self._run(raw, executor, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def execute_many(self, executor: Executor, rows: Sequence[Params]) -> None:
        """Run the statement once per parameter set (all sets have the same keys)."""
        if len(rows) == 1:  # the common single event: cheaper as a plain execute
            self.execute(executor, rows[0])
            return
        raw = worker_connection()
        if raw is None:
            _autoflushed(executor).execute(self.statement, list(rows))
            return
        connection = _connection(executor)
        plan = self._plan(connection.dialect, rows[0])
        args = plan.args_many(rows)
        _fire(connection, plan.sql, args, many=True)
        try:
            raw.executemany(plan.sql, args).close()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(plan.sql, args, exc, sqlite3.Error) from exc

    def execute_columns(
        self, executor: Executor, columns: Mapping[str, Sequence[Any]], *, nul_checked: bool = False
    ) -> None:
        """``execute_many`` of rows given column by column (``args_columns``):
        for a bulk write that builds no dict per row. ``nul_checked``: the
        caller vouches that no text among the values, once bound, contains
        NUL (every one validated by rules that refuse it, or made by
        ``dumps``), and the engine's NUL guard skips them (``NulChecked``);
        every other listener sees them as ever."""
        if not columns or not len(next(iter(columns.values()))):
            return
        raw = worker_connection()
        if raw is None:
            names = list(columns)
            rows = [
                dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)
            ]
            _autoflushed(executor).execute(self.statement, rows)
            return
        connection = _connection(executor)
        plan = self._plan(connection.dialect, columns)
        args = plan.args_columns(columns)
        if nul_checked:
            args = NulChecked(args)
        _fire(connection, plan.sql, args, many=True)
        try:
            raw.executemany(plan.sql, args).close()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(plan.sql, args, exc, sqlite3.Error) from exc

    # ------------------------------------------------------------ plumbing

    def _plan(self, dialect: Dialect, params: Params) -> _Plan:
        """Inserts and updates compile per set of columns given, as SQLAlchemy
        does. The plans are kept on the dialect instance, that is per engine
        (as SQLAlchemy keeps its compiled cache): a plan holds its dialect's
        bind and result processors, and two engines of one backend may
        process values differently (a JSON serialiser of their own)."""
        keys = tuple(sorted(params)) if self.statement.is_dml else None
        plans = dialect.__dict__.get(_PLANS)
        if plans is None:
            plans = dialect.__dict__[_PLANS] = {}
        plan: _Plan | None = plans.get((self, keys))
        if plan is None:
            plan = plans[self, keys] = _Plan(self.statement, dialect, keys)
        return plan

    def native(self, connection: Connection, params: Params) -> tuple[_Plan, tuple[Any, ...]]:
        """The plan and positional arguments of the statement on PostgreSQL's
        native path (``OneStatement.run_native``), the engine's listeners
        fired: the same plan, bind processors and listeners as the direct
        path ``_direct`` takes inside a unit's greenlet. The plan's result
        processors are None until ``describe_native`` fills them in."""
        plan = self._plan(connection.dialect, params)
        args = plan.args(params)
        _fire(connection, plan.sql, args, many=False)
        return plan, args

    @staticmethod
    async def describe_native(plan: _Plan, connection: Connection, driver: Any) -> None:
        """A plan's result processors, from the column types the server
        describes (once per plan; see ``_Plan.described``)."""
        dialect = connection.dialect
        plan.described(dialect, await direct.column_types_async(connection, driver, plan.sql))

    def _direct(self, executor: Executor, params: Params) -> tuple[_Plan, list[Any]] | None:
        """PostgreSQL in autocommit: the statement sent to asyncpg directly
        (``db.postgres.direct``), its plan and raw rows; None elsewhere."""
        if isinstance(executor, orm.Session):
            return None
        driver = direct.autocommit_driver(executor)
        if driver is None:
            return None
        plan = self._plan(executor.dialect, params)
        if plan.results is None:
            plan.described(executor.dialect, direct.column_types(executor, driver, plan.sql))
        args = plan.args(params)
        _fire(executor, plan.sql, args, many=False)
        return plan, direct.fetch(executor, driver, plan.sql, args)

    def _fetch_all(
        self, raw: sqlite3.Connection, executor: Executor, params: Params
    ) -> tuple[_Plan, list[Any]]:
        """``_run``, then every row as the driver returns it (the cursor closed)."""
        plan, cursor = self._run(raw, executor, params)
        try:
            return plan, cursor.fetchall()
        finally:
            cursor.close()

    def _run(
        self, raw: sqlite3.Connection, executor: Executor, params: Params
    ) -> tuple[_Plan, sqlite3.Cursor]:
        connection = _connection(executor)
        plan = self._plan(connection.dialect, params)
        args = plan.args(params)
        _fire(connection, plan.sql, args, many=False)
        try:
            return plan, raw.execute(plan.sql, args)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(plan.sql, args, exc, sqlite3.Error) from exc


class OneStatement(Generic[T]):
    """A unit of work that is one ``Prepared`` statement, in three parts: the
    statement and its parameters; ``then``, the unit's result from the row
    (``first=True``: ``Prepared.first``'s row or None) or rows (``all``); and
    ``failed``, which turns a driver error into the unit's own exception (it
    raises it) or returns to let the driver error go on.

    Called with a connection it is an ordinary unit of work (``work(conn)``,
    any backend, any path). ``Storage.read/write(..., one_statement=True)``
    on PostgreSQL awaits it natively instead (``run_native``): the statement
    goes to asyncpg from the event loop, without SQLAlchemy's greenlet, and
    ``then`` / ``failed`` are the same functions either way, so the values and
    the errors are the same.
    """

    __slots__ = ("failed", "first", "params", "prepared", "then")

    def __init__(
        self,
        prepared: Prepared,
        params: Params,
        then: Callable[[Any], T],
        *,
        first: bool = True,
        failed: Callable[[DBAPIError], None] | None = None,
    ):
        self.prepared = prepared
        self.params = params
        self.then = then
        self.first = first
        self.failed = failed

    def __call__(self, executor: Executor) -> T:
        try:
            if self.first:
                found = self.prepared.first(executor, self.params)
            else:
                found = self.prepared.all(executor, self.params)
        except DBAPIError as exc:
            self._failed(exc)
        return self.then(found)

    async def run_native(self, connection: Connection, driver: Any) -> T:
        """The unit on ``driver``, an asyncpg connection in autocommit (see
        ``db.postgres.direct.autocommit_driver``), awaited from the event loop:
        no greenlet, no SQLAlchemy execution context. The statement goes to
        ``driver.fetch`` from this coroutine itself (no coroutine in between:
        every one is a frame more to suspend and resume); a driver error
        becomes SQLAlchemy's exception as on the direct path
        (``direct.translated``), then goes to ``failed``."""
        plan, args = self.prepared.native(connection, self.params)
        try:
            if plan.results is None:
                await Prepared.describe_native(plan, connection, driver)
            fetched = await driver.fetch(plan.sql, *args)
        except DBAPIError as exc:  # the description's, translated already
            self._failed(exc)
        except Exception as exc:
            error = direct.translated(connection, driver, plan.sql, args, exc)
            if error is exc:
                raise
            if isinstance(error, DBAPIError):
                error.__cause__ = exc  # as ``raise error from exc`` would
                self._failed(error)
            raise error from exc
        if self.first:
            return self.then(plan.rows(fetched[:1])[0] if fetched else None)
        return self.then(plan.rows(fetched))

    def _failed(self, exc: DBAPIError) -> NoReturn:
        if self.failed is not None:
            self.failed(exc)
        raise exc


def _autoflushed(executor: Executor) -> Executor:
    """The executor, its ORM session's pending changes flushed first.

    SQLAlchemy 2.1 autoflushes before any statement a Session executes; 2.0
    only before ORM statements (``select(Model)``), not before Core ones over
    a ``Table`` such as ``Prepared``'s: flush here, whatever the version."""
    if isinstance(executor, orm.Session) and executor.autoflush:
        executor.flush()
    return executor


def _connection(executor: Executor) -> Connection:
    """The connection to send a statement on; an ORM session first flushes its
    pending changes, as its autoflush would before a query of its own."""
    if isinstance(executor, orm.Session):
        if executor.autoflush:
            executor.flush()
        return executor.connection()
    return executor


def _fire(connection: Connection, sql: str, args: Any, *, many: bool) -> None:
    """The engine's ``before_cursor_execute`` listeners see every statement sent."""
    connection.dispatch.before_cursor_execute(connection, None, sql, args, None, many)
