"""The fast path (prepared.py) returns what SQLAlchemy returns and fails as it fails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Text, TypeDecorator, bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from abathur.db.engine import NulChecked, _refuse_nul
from abathur.db.sqlite.prepared import _MISSING, Prepared, _Computed
from abathur.db.sqlite.worker import worker_connection
from abathur.errors import AlreadyExistsError, ValidationError
from abathur.infrastructure.database import Database
from abathur.repositories.memory import HISTORY, LATEST, SEARCH_PG, WRITE_MEMORY
from abathur.repositories.sessions import CREATES, GET_WITH_LAST_SEQ
from abathur.schema.models import MemoryEntry
from abathur.schema.types import UTCDateTime


async def test_rows_match_sqlalchemy(db: Database, task_id: str) -> None:
    await db.memory.add_memory("user:u", "k", {"v": [1, 2.5, None]}, "semantic", "me", task_id)
    await db.memory.update_memory("user:u", "k", {"v": "two"}, "me", task_id)
    await db.memory.delete_memory("user:u", "k", "me", task_id)
    await db.sessions.create_session("s", "app", "u", initial_state={"a": {"b": None}})
    cases: list[tuple[Prepared, dict[str, Any]]] = [
        (LATEST, {"namespace": "user:u", "key": "k"}),
        (HISTORY, {"namespace": "user:u", "key": "k"}),
        (GET_WITH_LAST_SEQ, {"id": "s"}),
    ]
    for prepared, params in cases:

        def fast(conn: Connection, p: Prepared = prepared, a: dict[str, Any] = params) -> Any:
            return [tuple(r) for r in p.all(conn, a)], worker_connection() is not None

        fast_rows, used_fast_path = await db.read(fast)
        assert used_fast_path == db.is_sqlite
        async with db.transaction(write=False) as session:
            slow_rows = [tuple(r) for r in (await session.execute(prepared.statement, params))]
        assert fast_rows == slow_rows
        for row in fast_rows:
            for value in row:
                if isinstance(value, datetime):
                    assert value.tzinfo is UTC  # aware, as SQLAlchemy's path returns it
    history = await db.memory.get_memory_history("user:u", "k")
    assert [h["is_deleted"] for h in history] == [True, True]  # booleans, not 0/1


async def test_field_names_are_the_labels(db: Database) -> None:
    await db.sessions.create_session("s", "app", "u")

    def read(conn: Connection) -> Any:
        return GET_WITH_LAST_SEQ.first(conn, {"id": "s"})

    row = await db.read(read)
    assert row.id == "s" and row.metadata_ == {} and row.state == {}


async def test_errors_are_sqlalchemys(db: Database) -> None:
    await db.sessions.create_session("s", "app", "u")
    now = datetime.now(UTC)
    values: dict[str, Any] = {"id": "s", "app_name": "a", "user_id": "u"}
    if db.is_sqlite:
        values |= {"status": "created", "state": {}, "metadata": {}}
        values |= {"created_at": now, "last_update_time": now}
    else:  # PostgreSQL's lean INSERT: the constants in its SQL, the state as text
        values |= {"project_id": None, "state": "{}", "now": now}

    def insert(conn: Connection) -> None:
        with pytest.raises(IntegrityError) as raised:  # inside the unit: SQLAlchemy's
            CREATES[conn.dialect.name].execute(conn, values)
        raise raised.value

    with pytest.raises(AlreadyExistsError):  # leaving the unit: abathur's
        await db.write(insert)

    def insert_nul(conn: Connection) -> None:
        CREATES[conn.dialect.name].execute(conn, {**values, "id": "a\x00b"})

    with pytest.raises(ValidationError, match="NUL"):  # the engine's listener still runs
        await db.write(insert_nul)
    assert [s["id"] for s in await db.sessions.list_sessions()] == ["s"]


async def test_missing_parameter_and_expanding_parameters_are_refused(db: Database) -> None:
    def no_key(conn: Connection) -> Any:
        return LATEST.first(conn, {"namespace": "user:u"})

    with pytest.raises(Exception, match="key"):
        await db.read(no_key)

    if not db.is_sqlite:
        return  # the fast path exists on SQLite only
    expanding = Prepared(
        select(MemoryEntry.id).where(MemoryEntry.key.in_(bindparam("keys", expanding=True)))
    )

    def expand(conn: Connection) -> Any:
        return expanding.all(conn, {"keys": ["a", "b"]})

    with pytest.raises(ValueError, match="expanding"):
        await db.read(expand)


async def test_statement_recorders_see_fast_path_statements(db: Database) -> None:
    from sqlalchemy import event

    seen: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await db.sessions.create_session("s", "app", "u")
        await db.sessions.get_state("s", "k")
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert any(s.lstrip().upper().startswith("INSERT INTO SESSIONS") for s in seen)
    assert any("FROM sessions" in s for s in seen)


async def test_python_side_column_defaults_apply_on_the_fast_path(db: Database) -> None:
    """A row that leaves out columns with ``default=`` gets those defaults, as
    SQLAlchemy's execution context would give them (is_deleted False,
    metadata {}, timestamps now)."""
    from abathur.repositories.base import insert_row

    def insert(conn: Connection) -> Any:
        row = MemoryEntry(
            namespace="user:u", key="d", value={"v": 1}, memory_type="semantic", version=1
        )
        insert_row(conn, row)
        return row.id

    entry_id = await db.write(insert)
    got = await db.memory.get_memory("user:u", "d")
    assert got is not None and got["id"] == entry_id
    assert got["is_deleted"] is False and got["metadata"] == {}
    assert got["created_at"].tzinfo is UTC and got["updated_at"].tzinfo is UTC


async def test_an_orm_unit_sees_its_own_pending_rows(db: Database) -> None:
    """Fast-path reads inside an ORM unit flush the session first, as its
    autoflush would before a query of its own."""
    from sqlalchemy.orm import Session as OrmSession

    from abathur.repositories.base import require
    from abathur.schema.models import Task

    def work(session: OrmSession) -> None:
        now = datetime.now(UTC)
        session.add(Task(id="t", prompt="p", status="pending", input_data={},
                         submitted_at=now, last_updated_at=now))  # fmt: skip
        require(session, Task, "t", "task")  # raises NotFoundError if not flushed

    await db.run(work)
    assert (await db.tasks.get_task("t")) is not None


async def test_execute_many_processes_each_row_as_sqlalchemy_would(db: Database) -> None:
    """Arguments built column by column (a value shared by the rows processed
    once): every row stored as its own, defaults computed per row, a missing
    parameter refused."""
    from sqlalchemy import insert

    many = Prepared(insert(MemoryEntry))
    shared = {"same": "object"}
    now = datetime(2030, 1, 1, tzinfo=UTC)
    rows = [
        {"namespace": "user:m", "key": f"k{i}", "value": shared if i < 2 else {"i": i},
         "memory_type": "semantic", "version": 1, "created_at": now, "updated_at": now}
        for i in range(4)
    ]  # fmt: skip

    def write(conn: Connection) -> None:
        many.execute_many(conn, rows)

    await db.write(write)
    for i in range(4):
        got = await db.memory.get_memory("user:m", f"k{i}")
        assert got is not None
        assert got["value"] == (shared if i < 2 else {"i": i})
        assert got["metadata"] == {} and got["is_deleted"] is False  # column defaults
        assert got["created_at"] == now
    with pytest.raises(Exception, match="value"):
        await db.write(lambda conn: many.execute_many(conn, [{**rows[0], "key": "x"}, {
            k: v for k, v in rows[1].items() if k != "value"}]))  # fmt: skip


async def test_column_is_the_first_value_of_each_row_as_all_gives_it(
    db: Database, task_id: str
) -> None:
    await db.memory.add_memory("user:u", "k", {"v": 1}, "semantic", "me", task_id)
    await db.memory.update_memory("user:u", "k", {"v": 2}, "me", task_id)
    params = {"namespace": "user:u", "key": "k"}
    for prepared in (
        HISTORY,  # first column an id
        Prepared(select(MemoryEntry.updated_at, MemoryEntry.id)),  # converted (timestamps)
        Prepared(select(MemoryEntry.value).where(MemoryEntry.id < 0)),  # no rows
    ):

        def both(conn: Connection, p: Prepared = prepared) -> tuple[list[Any], list[Any]]:
            return p.column(conn, params), [row[0] for row in p.all(conn, params)]

        column, first_values = await db.read(both)
        assert column == first_values


class _NoneAsText(TypeDecorator[Any]):
    """A bind processor that turns None into a value (none of abathur's do)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return "was None" if value is None else value


def _reference_args(plan: Any, params: dict[str, Any]) -> tuple[Any, ...]:
    """``_Plan.args`` as it was: every value through its processor, None too."""
    values = []
    for name, default, process, *_ in plan.binds:
        value = params.get(name, default)
        if value is _MISSING:
            raise KeyError(f"no value for parameter {name!r} of: {plan.sql}")
        if isinstance(value, _Computed):
            value = value.compute()
        values.append(process(value))
    return tuple(values)


@pytest.mark.parametrize("dialect", [sqlite_dialect(), asyncpg_dialect()], ids=["sqlite", "pg"])
def test_args_skip_only_processors_that_keep_none(dialect: Any) -> None:
    """A None skips the processors that return None for it, and only those:
    the arguments are the ones every value through its processor gives."""
    odd = Prepared(select(bindparam("a", type_=_NoneAsText()), bindparam("b", type_=UTCDateTime())))
    plan = odd._plan(dialect, {})
    assert plan.args({"a": None, "b": None}) == ("was None", None)
    now = datetime.now(UTC)
    for prepared in (WRITE_MEMORY, SEARCH_PG, LATEST, odd):
        plan = prepared._plan(dialect, {})
        names = [name for name, *_ in plan.binds]
        nones = dict.fromkeys(names)
        assert plan.args(nones) == _reference_args(plan, nones)
        some = {name: (now if name.endswith("_at") or name == "now" else None) for name in names}
        assert plan.args(some) == _reference_args(plan, some)
        del nones[names[0]]  # a required parameter left out: the same error
        with pytest.raises(KeyError) as fast:
            plan.args(nones)
        with pytest.raises(KeyError) as slow:
            _reference_args(plan, nones)
        assert str(fast.value) == str(slow.value)


def test_each_dialect_has_its_own_plans() -> None:
    """A plan holds its dialect's bind processors (on PostgreSQL a JSON
    column's serialiser among them), so two engines of one backend do not
    share plans: one whose dialect serialises JSON otherwise (a bare
    dialect: ``json.dumps``) must not hand its plans to ours, nor ours to
    it. (Plans keyed by the dialect's name did: a plan built on a bare
    dialect sent our ``JSONText`` values as JSON strings.)"""
    import json

    from abathur.schema.types import JSONDocument
    from abathur.strict_json import JSONText, dumps

    statement = Prepared(select(bindparam("v", type_=JSONDocument())))
    text = JSONText('{"a":1}')
    bare, ours = asyncpg_dialect(), asyncpg_dialect(json_serializer=dumps)
    assert statement._plan(bare, {}).args({"v": text}) == (json.dumps(text),)
    assert statement._plan(ours, {}).args({"v": text}) == ('{"a":1}',)
    assert statement._plan(bare, {}).args({"v": text}) == (json.dumps(text),)


async def test_execute_columns_stores_what_execute_many_stores(db: Database) -> None:
    """Rows given column by column are bound as the same rows given as dicts
    (the same processors, a column left out taking its default) on every
    path: SQLite's fast path and SQLAlchemy's elsewhere."""
    from sqlalchemy import insert

    many = Prepared(insert(MemoryEntry))
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def rows(prefix: str) -> list[dict[str, Any]]:
        return [
            {"namespace": "user:c", "key": f"{prefix}{i}", "value": {"i": i, "é": [None, 1.5]},
             "memory_type": "semantic", "version": 1, "created_at": now, "updated_at": now,
             "is_current": i % 2 == 0}
            for i in range(3)
        ]  # fmt: skip

    def write(conn: Connection) -> None:
        many.execute_many(conn, rows("dict"))
        given = rows("column")
        many.execute_columns(conn, {name: [row[name] for row in given] for name in given[0]})

    await db.write(write)
    for i in range(3):
        by_dict = await db.memory.get_memory("user:c", f"dict{i}")
        by_column = await db.memory.get_memory("user:c", f"column{i}")
        assert by_dict is not None and by_column is not None
        assert by_column["value"] == {"i": i, "é": [None, 1.5]}
        assert by_column["metadata"] == {} and by_column["is_deleted"] is False  # defaults
        assert {**by_column, "id": 0, "key": ""} == {**by_dict, "id": 0, "key": ""}
    given = rows("missing")
    with pytest.raises(Exception, match="value"):
        await db.write(
            lambda conn: many.execute_columns(
                conn, {name: [row[name] for row in given] for name in given[0] if name != "value"}
            )
        )


async def test_execute_columns_is_scanned_for_nul_unless_the_caller_vouches(
    db: Database,
) -> None:
    """The engine's NUL guard scans rows given column by column, as any
    others; ``nul_checked=True`` (the caller validated every text) skips that
    scan alone: the engine's other listeners still see the statement."""
    from sqlalchemy import event, insert

    many = Prepared(insert(MemoryEntry))
    now = datetime(2030, 1, 1, tzinfo=UTC)
    columns: dict[str, list[Any]] = {
        "namespace": ["user:n", "user:n"], "key": ["fine", "a\x00b"], "value": [{}, {}],
        "memory_type": ["semantic"] * 2, "version": [1, 1], "created_at": [now] * 2,
        "updated_at": [now] * 2,
    }  # fmt: skip
    with pytest.raises(ValidationError, match="NUL"):
        await db.write(lambda conn: many.execute_columns(conn, columns))
    assert await db.memory.get_memory("user:n", "fine") is None
    if not db.is_sqlite:
        return  # the skip is the fast path's (SQLite); elsewhere SQLAlchemy's scan runs
    seen: list[Any] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        seen.append((sql, params))

    columns["key"] = ["fine", "checked"]
    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await db.write(lambda conn: many.execute_columns(conn, columns, nul_checked=True))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert [type(params) for sql, params in seen if sql.startswith("INSERT")] == [NulChecked]
    assert await db.memory.get_memory("user:n", "checked") is not None


def test_the_nul_guard_skips_only_rows_marked_checked() -> None:
    bad = [("fine", "a\x00b")]
    _refuse_nul(None, None, "INSERT", NulChecked(bad), None, True)  # vouched for: not scanned

    class OtherList(list[Any]):
        pass

    for params in (bad, OtherList(bad), [{"k": "a\x00b"}]):
        with pytest.raises(ValidationError, match="NUL"):
            _refuse_nul(None, None, "INSERT", params, None, True)
    with pytest.raises(ValidationError, match="NUL"):
        _refuse_nul(None, None, "INSERT", NulChecked(bad)[0], None, False)  # one row: scanned
