"""Database: URLs and paths, connection settings, transactions, health checks."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from abathur.db import storage as database_module
from abathur.db.errors import is_retryable
from abathur.db.url import to_url
from abathur.errors import ConfigurationError, DatabaseBusyError, DatabaseError, ValidationError
from abathur.infrastructure.database import Database


@pytest.mark.parametrize(
    ("given", "driver", "database"),
    [
        (Path("/tmp/x.db"), "sqlite+aiosqlite", "/tmp/x.db"),
        (Path(":memory:"), "sqlite+aiosqlite", ":memory:"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite", ":memory:"),
        ("sqlite:///rel.db", "sqlite+aiosqlite", "rel.db"),
        ("plain.db", "sqlite+aiosqlite", "plain.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg", "db"),
    ],
)
def test_to_url(given: object, driver: str, database: str) -> None:
    url = to_url(given)  # type: ignore[arg-type]
    assert url.drivername == driver
    assert url.database == database


@pytest.mark.parametrize(
    ("given", "expect"),
    [
        ("", "empty database URL"),
        ("   ", "empty database URL"),
        ("mysql://u@h/db", "unsupported database URL scheme 'mysql'"),
        ("mysql+aiomysql://u@h/db", "supports SQLite and PostgreSQL"),
        ("oracle://u@h/db", "supports SQLite and PostgreSQL"),
        ("://nothing", "malformed database URL"),
        (5, "a URL string or a Path"),
    ],
)
def test_to_url_refuses_what_is_not_a_supported_database(given: object, expect: str) -> None:
    with pytest.raises(ConfigurationError, match=expect):
        to_url(given)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=expect):
        Database(given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        "a\x00b.db",
        Path("a\x00b.db"),
        "\ud800.db",
        Path("/tmp/\udcff.db"),
        "sqlite+aiosqlite:///x\x00.db",
        "postgresql+asyncpg://u@h/d\ud800",
    ],
)
def test_to_url_refuses_a_path_no_driver_can_open(given: object) -> None:
    """Before: accepted, and ``initialize()`` raised ValueError ("embedded
    null byte") or UnicodeEncodeError."""
    with pytest.raises(ConfigurationError, match=r"NUL|not valid text"):
        Database(given)  # type: ignore[arg-type]


async def test_a_sqlite_file_that_cannot_be_opened_is_an_abathur_error(tmp_path: Path) -> None:
    """Before: ``initialize()`` and ``current_revision()`` let SQLAlchemy's
    OperationalError / DatabaseError through (a service call on the same
    Database raised abathur's DatabaseError)."""
    not_a_database = tmp_path / "text.db"
    not_a_database.write_text("not a database file, but long enough to have a header " * 10)
    for path in (tmp_path / "no" / "such" / "dir" / "x.db", not_a_database, tmp_path):
        db = Database(path)
        try:
            with pytest.raises(DatabaseError, match=r"unable to open|not a database"):
                await db.initialize()
            with pytest.raises(DatabaseError, match=r"unable to open|not a database"):
                await db.current_revision()
            with pytest.raises(DatabaseError, match=r"unable to open|not a database"):
                await db.sessions.get_session("s")
        finally:
            await db.close()


def test_default_url_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABATHUR_DATABASE_URL", "sqlite+aiosqlite:///from-env.db")
    assert Database().url.database == "from-env.db"
    monkeypatch.delenv("ABATHUR_DATABASE_URL")
    assert Database().url.database == "abathur.db"


@pytest.mark.parametrize("given", [Path(":memory:"), "sqlite+aiosqlite:///:memory:"])
async def test_memory_database_lives_as_long_as_the_object(given: object) -> None:
    async with Database(given) as db:  # type: ignore[arg-type]
        task = await db.tasks.create_task("kept in memory")
        # Many concurrent transactions on the single private connection.
        found = await asyncio.gather(*(db.tasks.get_task(task.id) for _ in range(20)))
        assert all(f is not None and f.id == task.id for f in found)
        assert await db.current_revision() is not None
    other = Database(Path(":memory:"))
    await other.initialize()
    assert await other.tasks.get_task(task.id) is None  # private, not shared
    await other.close()


async def test_sqlite_pragmas_on_every_pooled_connection(tmp_path: Path) -> None:
    async with Database(tmp_path / "p.db") as db:
        conns = [await db.engine.connect() for _ in range(3)]  # three pooled connections
        try:
            for conn in conns:
                row = (
                    await conn.execute(
                        text(
                            "SELECT * FROM pragma_journal_mode, pragma_synchronous, "
                            "pragma_foreign_keys, pragma_busy_timeout"
                        )
                    )
                ).one()
                assert tuple(row) == ("wal", 1, 1, 5000)
        finally:
            for conn in conns:
                await conn.close()


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO tasks (id, prompt, status, input_data, submitted_at, "
                    "last_updated_at) VALUES ('x', 'p', 'pending', '{}', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            raise Boom
    assert await db.tasks.get_task("x") is None


async def test_health_checks_on_a_fresh_database(db: Database) -> None:
    assert await db.integrity_check() == "ok"
    assert await db.validate_foreign_keys() == []


ORPHAN_AGENT = (
    "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at)"
    " VALUES ('a', 'n', 's', 'm', 'no-such-task', 'idle', '2026-01-01')"
)


async def test_validate_foreign_keys_reports_orphans(db: Database) -> None:
    async with db.engine.connect() as conn:
        if db.is_sqlite:  # foreign keys off, outside a transaction, on this connection only
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute("PRAGMA foreign_keys=OFF")
            await driver.execute(ORPHAN_AGENT)
            await driver.commit()
            await driver.execute("PRAGMA foreign_keys=ON")
        else:  # a superuser may switch the foreign-key triggers off for a transaction
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(ORPHAN_AGENT))
            await conn.commit()
    violations = await db.validate_foreign_keys()
    assert [(v["table"], v["parent"]) for v in violations] == [("agents", "tasks")]


async def test_integrity_check_reports_damage(db: Database, tmp_path: Path) -> None:
    if not db.is_sqlite:  # a constraint created NOT VALID and never validated
        async with db.transaction() as session:
            await session.execute(
                text("ALTER TABLE tasks ADD CONSTRAINT ck_probe CHECK (priority > 0) NOT VALID")
            )
        assert "ck_probe" in await db.integrity_check()
        return
    path = tmp_path / "damaged.db"
    async with Database(path) as damaged:
        for i in range(300):
            await damaged.tasks.create_task("x" * 200, id=f"t{i:04d}")
        async with damaged.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as raw:  # overwrite the header of the last b-tree page
        raw.seek(path.stat().st_size - 4096)
        raw.write(b"\x0d" + b"\xff" * 7)
    reopened = Database(path)
    try:
        report = await reopened.integrity_check()
    finally:
        await reopened.close()
    assert report != "ok" and "malformed" in report


async def test_explain_query_plan_named_and_positional(db: Database) -> None:
    named = await db.explain_query_plan("SELECT * FROM tasks WHERE id = :id", {"id": "x"})
    assert named and all(isinstance(line, str) for line in named)
    if db.is_sqlite:
        assert any("USING" in line and "INDEX" in line for line in named), named
        positional = await db.explain_query_plan("SELECT * FROM tasks WHERE id = ?", ["x"])
        assert positional == named


def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    """A sqlite3 error as the driver raises it, with its extended result code."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def test_is_retryable_recognises_lock_errors_by_their_codes() -> None:
    from sqlalchemy.exc import OperationalError

    assert is_retryable(OperationalError("x", {}, sqlite_error("database is locked", 5)))
    assert is_retryable(OperationalError("x", {}, sqlite_error("locked", 517)))  # BUSY_SNAPSHOT
    assert is_retryable(OperationalError("x", {}, sqlite_error("table is locked", 6)))
    assert not is_retryable(OperationalError("x", {}, sqlite_error("no such table", 1)))
    # the message alone decides nothing
    assert not is_retryable(OperationalError("x", {}, Exception("database is locked")))
    assert not is_retryable(ValueError("database is locked"))


async def test_run_retries_lock_contention_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    monkeypatch.setattr(database_module, "RETRY_FIRST_DELAY", 0.0001)
    async with Database(tmp_path / "r.db") as db:
        calls = 0

        def flaky(_session: object) -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise OperationalError("BEGIN", {}, sqlite_error("database is locked", 5))
            return "done"

        assert await db.run(flaky) == "done"
        assert calls == 3

        def always_locked(_session: object) -> None:
            raise OperationalError("BEGIN", {}, sqlite_error("database is locked", 5))

        with pytest.raises(DatabaseError, match="still busy"):
            await db.run(always_locked)


async def test_nul_in_any_text_is_refused_the_same_on_every_backend(db: Database) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        await db.sessions.create_session("a\x00b", "app", "u")
    with pytest.raises(ValidationError, match="NUL"):
        await db.sessions.get_session("a\x00b")
    with pytest.raises(ValidationError, match="NUL"):
        await db.tasks.create_task("prompt\x00")
    assert await db.sessions.list_sessions() == []


@pytest.mark.parametrize("name", ["stock.db", ":memory:"])
async def test_the_stock_aiosqlite_adapter_still_works(tmp_path: Path, name: str) -> None:
    """Without the lean adapter (an aiosqlite without ``Connection._execute``),
    units of work run through ``run_sync``, one crossing per statement, and
    no group commit: slower, with the same results."""
    import sqlite3

    import aiosqlite
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

    stock = AsyncAdapt_aiosqlite_dbapi(aiosqlite, sqlite3)
    path = Path(name) if name == ":memory:" else tmp_path / name
    async with Database(path, module=stock) as db:
        assert not db._direct and db._group is None
        await db.sessions.create_session("s", "app", "u")
        await asyncio.gather(
            *(db.sessions.append_event("s", {"n": n}, {f"k{n}": n}) for n in range(20))
        )
        got = await db.sessions.get_session("s")
        assert got is not None and sorted(e["n"] for e in got["events"]) == list(range(20))
        assert got["state"] == {f"k{n}": n for n in range(20)}
        task = await db.tasks.create_task("p")
        await db.memory.add_memory("user:u", "k", {"v": 1}, "semantic", "me", task.id)
        assert (await db.memory.get_memory("user:u", "k")) is not None


@pytest.mark.parametrize("memory", [False, True], ids=["file", "memory"])
async def test_a_unit_waiting_for_its_own_transaction_is_refused_not_a_hang(
    tmp_path: Path, memory: bool
) -> None:
    """On SQLite a write ``transaction()`` holds the Database's one write turn
    (an in-memory database's only connection) until its block ends. Before: a
    write unit, a nested write transaction or ``close()`` from inside the
    block, or from a task it started, waited for that turn forever. Now
    DatabaseBusyError at once; the block itself goes on and commits."""
    db = Database(Path(":memory:") if memory else tmp_path / "t.db")
    await db.initialize()
    await db.sessions.create_session("s1", "app", "u")
    calls = {
        "a write unit": lambda: db.sessions.append_event("s1", {"n": 1}),
        "a write unit in a task it started": lambda: asyncio.ensure_future(
            db.sessions.set_state("s1", "k", 1)
        ),
        "a nested write transaction": lambda: db.transaction().__aenter__(),
        "close": db.close,
    }
    async with db.transaction() as session:
        await session.execute(text("UPDATE sessions SET metadata = '{\"x\": 1}'"))
        for name, call in calls.items():
            with pytest.raises(DatabaseBusyError, match="transaction"):
                await asyncio.wait_for(call(), 10)  # a guard: the hang was forever
            assert not db.closed, name
        # Started in the block and left to run after it: it waits its turn.
        later = asyncio.ensure_future(_after_a_yield(db.sessions.set_state("s1", "k", 2)))
    await asyncio.wait_for(later, 10)
    got = await db.sessions.get_session("s1")
    assert got is not None and got["metadata"] == {"x": 1} and got["events"] == []
    assert got["state"] == {"k": 2}
    await db.close()


async def _after_a_yield(call: Awaitable[Any]) -> Any:
    await asyncio.sleep(0)  # the block ends before the call starts
    return await call
