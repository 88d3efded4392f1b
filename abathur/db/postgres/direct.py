"""PostgreSQL's fast path: a hot statement sent to asyncpg directly.

Inside a one-statement unit of work (``Storage.read`` / ``write`` with
``one_statement=True``), which runs in autocommit, ``Prepared`` sends its
statement, compiled once for the asyncpg dialect, to the asyncpg connection
itself (``asyncpg.Connection.fetch``, from inside SQLAlchemy's greenlet),
with the bind and result processors SQLAlchemy would apply. That skips
SQLAlchemy's execution context, cursor adapter and result objects, which
cost several times what the server spends on an indexed read.

Only in autocommit: SQLAlchemy's asyncpg adapter sends BEGIN lazily, at a
transaction's first statement, so a statement sent around it inside a
transaction would run outside that transaction. Everywhere else ``Prepared``
is plain ``execute``.

The connection's codecs are the ones SQLAlchemy's dialect installed (JSON as
text, parsed by its deserializer; timestamps as aware datetimes), so values
come back exactly as through SQLAlchemy. Driver errors become the same
SQLAlchemy exceptions, carrying the SQLSTATE (``db.errors``); a connection
found closed afterwards is invalidated, so the pool drops it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import concurrency

# SQLAlchemy 2.1 names it ``await_``; 2.0 has only ``await_only``.
_await: Any = getattr(concurrency, "await_", None) or concurrency.await_only

# SQLSTATE classes and the DB-API exception each maps to (as psycopg does);
# anything else with a SQLSTATE is a DatabaseError, a client-side failure
# without one an InterfaceError.
_CLASSES = {
    "22": "DataError",
    "23": "IntegrityError",
    "42": "ProgrammingError",
    "0A": "NotSupportedError",
    "XX": "InternalError",
    "08": "OperationalError",
    "40": "OperationalError",
    "53": "OperationalError",
    "55": "OperationalError",
    "57": "OperationalError",
    "58": "OperationalError",
}


def autocommit_driver(connection: Connection) -> Any | None:
    """The asyncpg connection under ``connection`` when a statement can go to
    it directly: an asyncpg connection in autocommit, outside any transaction."""
    if connection.dialect.driver != "asyncpg":
        return None
    if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        return None
    driver = connection.connection.driver_connection
    if driver is None or driver.is_in_transaction():
        return None
    return driver


def column_types(connection: Connection, driver: Any, sql: str) -> list[int]:
    """The type OID of each result column of ``sql``, as the server describes
    them (once per statement: SQLAlchemy's numeric result processors depend
    on them)."""
    try:
        statement = _await(driver.prepare(sql))
    except Exception as exc:
        raise translated(connection, driver, sql, (), exc) from exc
    return [attribute.type.oid for attribute in statement.get_attributes()]


async def column_types_async(connection: Connection, driver: Any, sql: str) -> list[int]:
    """``column_types``, awaited from the event loop (``Prepared.describe_native``)."""
    try:
        statement = await driver.prepare(sql)
    except Exception as exc:
        raise translated(connection, driver, sql, (), exc) from exc
    return [attribute.type.oid for attribute in statement.get_attributes()]


def fetch(connection: Connection, driver: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """The rows of one statement on ``driver``, errors as SQLAlchemy's."""
    try:
        return list(_await(driver.fetch(sql, *args)))
    except Exception as exc:
        raise translated(connection, driver, sql, args, exc) from exc


def translated(
    connection: Connection, driver: Any, sql: str, args: tuple[Any, ...], exc: Exception
) -> BaseException:
    dbapi = connection.dialect.loaded_dbapi
    if isinstance(exc, dbapi.Error):
        return exc
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str):
        name = _CLASSES.get(code[:2], "DatabaseError")
    elif isinstance(exc, ConnectionError | TimeoutError | OSError):
        name = "OperationalError"
    else:
        name = "InterfaceError"
    orig = getattr(dbapi, name)(f"{type(exc)}: {exc}")
    orig.pgcode = orig.sqlstate = code
    orig.__cause__ = exc
    closed = bool(driver.is_closed())
    if closed:
        connection.invalidate()
    error: BaseException = DBAPIError.instance(
        sql, args, orig, dbapi.Error, connection_invalidated=closed
    )
    return error
