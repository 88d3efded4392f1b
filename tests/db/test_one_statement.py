"""``OneStatement`` units: on PostgreSQL, ``Storage.read/write(...,
one_statement=True)`` awaits them on the asyncpg connection from the event
loop (``Storage._native``); everywhere else, and when called as a plain
function, they are ordinary units of work. Both ways give the same values
and the same errors, and the native path keeps the one-statement write's
rules: a connection lost while the statement ran is an unknown outcome, one
closed before it began is replaced."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from typing import Any

import pytest
from greenlet import getcurrent
from sqlalchemy import Integer, column, event, text
from sqlalchemy.engine import Connection

from abathur.db.sqlite.prepared import OneStatement, Prepared
from abathur.domain.clock import utcnow
from abathur.domain.memory import parse_filter
from abathur.domain.sessions import NewSession
from abathur.errors import (
    AbathurError,
    AlreadyExistsError,
    CommitOutcomeUnknownError,
    NotFoundError,
)
from abathur.infrastructure.database import Database
from abathur.repositories.memory import (
    latest_with_expiry_statement,
    search_statement,
    write_memory_statement,
)
from abathur.repositories.sessions import append_statement, create_statement, whole_statement


def in_greenlet() -> bool:
    """Inside a greenlet SQLAlchemy spawned: any but the thread's main greenlet
    (``sqlalchemy.util.concurrency.in_greenlet`` is 2.0.23+; the floor is 2.0.13)."""
    return getcurrent().parent is not None


PID = Prepared(text("SELECT pg_backend_pid() AS pid").columns(column("pid", Integer())))
DIES = Prepared(
    text("SELECT pg_terminate_backend(pg_backend_pid())::int AS gone").columns(
        column("gone", Integer())
    )
)
DIVIDES = Prepared(
    text("SELECT 1 / CAST(:zero AS integer) AS one").columns(column("one", Integer()))
)


def _as_plain(unit: OneStatement[Any]) -> Any:
    """The same unit as an ordinary function: the greenlet / worker path."""

    def work(conn: Connection) -> Any:
        return unit(conn)

    return work


def _rows(row: Any) -> Any:
    return None if row is None else tuple(row)


def _create(db: Database, session_id: str) -> OneStatement[Any]:
    new = NewSession(id=session_id, app_name="app", user_id="u", project_id=None, state={})
    return create_statement(new, "{}", db.dialect, lambda created, seen: (created, seen))


def _write(task_id: str, rule: str, key: str, value: Any) -> OneStatement[Any]:
    return write_memory_statement(
        rule,
        task_id=task_id,
        namespace="user:u",
        key=key,
        value=value,
        memory_type="semantic",
        metadata=None,
        by="me",
        now=utcnow(),
        expiry=None,
        audit_extra={},
    )


async def test_values_are_those_of_the_plain_unit(db: Database, task_id: str) -> None:
    await db.memory.add_memory("user:u", "k", {"v": [1, 2.5, None]}, "semantic", "me", task_id)
    await db.memory.update_memory("user:u", "k", {"v": "two"}, "me", task_id)
    reads = [latest_with_expiry_statement("user:u", k, _rows) for k in ("k", "absent")]
    if not db.is_sqlite:
        await db.sessions.create_session("s", "app", "u", initial_state={"a": {"b": None}})
        await db.sessions.append_event("s", {"type": "x", "text": "é"}, {"n": 1})
        reads += [whole_statement("s", as_text, _rows) for as_text in (False, True)]
        reads.append(whole_statement("absent", False, _rows))
    for unit in reads:
        native = await db.read(unit, one_statement=True)
        assert native == await db.read(_as_plain(unit), one_statement=True)
        assert native == await db.read(_as_plain(unit))
    made = [
        await db.write(run, one_statement=True)
        for run in (_create(db, "n1"), _as_plain(_create(db, "n2")))
    ]
    assert made[0][1:] == made[1][1:] == ({},)
    if db.is_sqlite:
        return  # the memory write function is PostgreSQL's
    written = await db.write(_write(task_id, "put", "w", {"x": 1}), one_statement=True)
    again = await db.write(_as_plain(_write(task_id, "put", "w", {"x": 1})), one_statement=True)
    assert (written.version, again.version) == (1, 2)
    assert written._fields == again._fields
    assert [type(v) for v in written] == [type(v) for v in again]
    assert (written.value, written.metadata_) == (again.value, again.metadata_) == ({"x": 1}, {})


async def test_postgresql_awaits_the_unit_outside_any_greenlet(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's native path")
    seen: list[bool] = []

    def then(row: Any) -> int:
        seen.append(in_greenlet())
        return int(row.pid)

    await db.read(OneStatement(PID, {}, then), one_statement=True)
    await db.read(_as_plain(OneStatement(PID, {}, then)), one_statement=True)
    assert seen == [False, True]


async def test_refusals_are_the_units_own_errors(db: Database, task_id: str) -> None:
    await db.write(_create(db, "s"), one_statement=True)
    for run in (_create(db, "s"), _as_plain(_create(db, "s"))):
        with pytest.raises(AlreadyExistsError, match="session 's' already exists"):
            await db.write(run, one_statement=True)
    if db.is_sqlite:
        return  # the functions below are PostgreSQL's
    failures = []
    units = [
        _write("no-such-task", "put", "k", {}),
        _write(task_id, "update", "absent", {}),
        (
            append_statement(
                session_id="absent", documents=[], delta={}, expected_seq=None, now=utcnow()
            )
        ),
    ]
    for unit in units:
        for run in (unit, _as_plain(unit)):
            with pytest.raises(NotFoundError) as raised:
                await db.write(run, one_statement=True)
            failures.append(str(raised.value))
    assert failures[0::2] == failures[1::2]
    await db.write(_write(task_id, "create", "c", {}), one_statement=True)
    for run in (_write(task_id, "create", "c", {}), _as_plain(_write(task_id, "create", "c", {}))):
        with pytest.raises(AlreadyExistsError, match="already exists"):
            await db.write(run, one_statement=True)


async def test_other_driver_errors_are_translated_alike(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's SQL: division by zero is NULL on SQLite")
    unit = OneStatement(DIVIDES, {"zero": 0}, _rows)
    errors = []
    for run in (unit, _as_plain(unit)):
        with pytest.raises(AbathurError) as raised:
            await db.read(run, one_statement=True)
        errors.append((type(raised.value), str(raised.value).split("\n")[0]))
    assert errors[0] == errors[1]
    assert await db.read(OneStatement(DIVIDES, {"zero": 1}, _rows), one_statement=True) == (1,)


async def test_a_connection_lost_during_a_native_write_is_not_replayed(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's autocommit writes")
    sent: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        with pytest.raises(CommitOutcomeUnknownError, match="may or may not have been committed"):
            await db.write(OneStatement(DIES, {}, _rows), one_statement=True)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert sum("pg_terminate_backend" in s for s in sent) == 1
    assert (await db.tasks.create_task("afterwards")).id  # the Database goes on


async def _closed_by_the_server(db: Database, pid: int) -> None:
    async with db.transaction() as session:
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(100):  # until the client has read the server's goodbye
        await asyncio.sleep(0.01)
        if all(c.sync_connection is None or c.invalidated or
               c.sync_connection.connection.driver_connection.is_closed()  # type: ignore[union-attr]
               for c in db._idle_autocommit):  # fmt: skip
            break


@pytest.mark.parametrize("write", [True, False])
async def test_a_pooled_connection_closed_before_a_native_unit_is_replaced(
    db: Database, write: bool
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's autocommit units")
    unit = OneStatement(PID, {}, lambda row: int(row.pid))
    run = db.write if write else db.read
    pid = await run(unit, one_statement=True)  # its connection stays idle
    await _closed_by_the_server(db, pid)
    sent = 0

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        nonlocal sent
        sent += "pg_backend_pid" in statement

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await run(unit, one_statement=True) != pid
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    if write:
        assert sent == 1  # nothing was sent on the closed connection
    assert all(not c.invalidated for c in db._idle_autocommit)


@pytest.mark.parametrize("write", [True, False])
async def test_a_revalidated_connection_gets_its_new_driver(db: Database, write: bool) -> None:
    """``Storage._native`` remembers the asyncpg connection under each idle
    connection; one that SQLAlchemy invalidated and revalidated (a new
    server connection under the same ``Connection``) must be used with its
    new driver, not the closed one remembered (which would fail the unit and
    send it to yet another connection)."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's autocommit units")
    unit = OneStatement(PID, {}, lambda row: int(row.pid))
    run = db.write if write else db.read
    pid = await run(unit, one_statement=True)
    (idle,) = db._idle_autocommit
    await idle.invalidate()
    revalidated = await idle.run_sync(
        lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    )
    assert revalidated != pid
    assert await run(unit, one_statement=True) == revalidated
    assert db._idle_autocommit == [idle]


async def test_get_memory_refuses_an_invalid_key_every_time(db: Database, task_id: str) -> None:
    """``get_memory`` caches the validated reference of a key it read; a
    refused one is refused again (nothing cached), a str subclass validated."""
    from abathur.errors import ValidationError

    for _ in range(2):
        with pytest.raises(ValidationError):
            await db.memory.get_memory("user:u", "bad\x00key")
        with pytest.raises(ValidationError):
            await db.memory.get_memory("no-scope-namespace:", "k")
    await db.memory.add_memory("user:u", "k", {"v": 1}, "semantic", "me", task_id)

    class Text(str):
        pass

    for namespace, key in [("user:u", "k"), ("user:u", "k"), (Text("user:u"), Text("k"))]:
        found = await db.memory.get_memory(namespace, key)
        assert found is not None and found["value"] == {"v": 1}


def _search(
    root: str,
    limit: int = 50,
    *,
    memory_type: str | None = None,
    offset: int = 0,
    filter: dict[str, Any] | None = None,
) -> OneStatement[Any]:
    return search_statement(
        root,
        memory_type,
        limit,
        now=utcnow(),
        offset=offset,
        terms=parse_filter(filter),
        then=lambda rows: [tuple(r) for r in rows],
    )


async def test_searches_are_those_of_the_plain_unit(db: Database, task_id: str) -> None:
    """A search as a ``OneStatement`` (PostgreSQL's search function, filtered
    or not) gives the very rows of the same unit run as an ordinary function,
    in autocommit or inside a transaction, and what ``search_memories`` says."""
    if db.is_sqlite:
        pytest.skip("the search function is PostgreSQL's")
    m = db.memory
    for i in range(12):
        await m.add_memory(
            f"user:u:n{i % 3}", f"k{i}", {"i": i, "tag": "odd" if i % 2 else "even"},
            "semantic" if i % 4 else "episodic", "me", task_id, {"m": i} if i % 5 else None,
            ttl=timedelta(hours=1) if i % 3 == 0 else None,
        )  # fmt: skip
    await m.update_memory("user:u:n0", "k3", {"i": "three", "tag": "odd"}, "me", task_id)
    await m.delete_memory("user:u:n1", "k4", "me", task_id)
    units = [
        _search("user:u"),
        _search("user:u", 5, offset=3),
        _search("user:u:n0", memory_type="semantic"),
        _search("user", filter={"tag": "odd"}),
        _search("user:u", 4, filter={"i": {"$gte": 5}}, memory_type="semantic", offset=1),
        _search("user:nobody"),
    ]
    for unit in units:
        native = await db.read(unit, one_statement=True)
        assert native == await db.read(_as_plain(unit), one_statement=True)
        assert native == await db.read(_as_plain(unit))
        assert [[type(v) for v in row] for row in native] == [
            [type(v) for v in row] for row in await db.read(_as_plain(unit))
        ]
    everything = await db.read(units[0], one_statement=True)
    assert len(everything) == 11
    assert all(row[10].tzinfo is UTC for row in everything)  # created_at
    found = await m.search_memories("user:u", limit=4, filter={"i": {"$gte": 5}}, offset=1,
                                    memory_type="semantic")  # fmt: skip
    assert [(f["namespace"], f["key"]) for f in found] == [r[1:3] for r in
                                                           await db.read(units[4])]  # fmt: skip


async def test_search_memories_awaits_postgresqls_search_outside_any_greenlet(
    db: Database, task_id: str
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's native path")
    await db.memory.add_memory("user:u", "k", {"v": 1}, "semantic", "me", task_id)
    seen: list[bool] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "abathur_search_memories" in statement:
            seen.append(in_greenlet())

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert len(await db.memory.search_memories("user:u")) == 1
        assert len(await db.memory.search_memories("user:u", filter={"v": 1})) == 1
        assert len(await db.memory.search_memories("user:u", refresh_ttl=True)) == 1
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    # without refresh_ttl, one call each, outside any greenlet; refresh_ttl's
    # search is a statement of its write transaction
    assert seen == [False, False, True]


async def test_search_errors_are_those_of_the_plain_unit(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("the search function is PostgreSQL's")
    unit = _search("user:u", -1)  # the function's LIMIT refuses a negative count
    errors = []
    for run in (unit, _as_plain(unit)):
        with pytest.raises(AbathurError) as raised:
            await db.read(run, one_statement=True)
        errors.append((type(raised.value), str(raised.value).split("\n")[0]))
    assert errors[0] == errors[1]
    assert "LIMIT" in errors[0][1]
