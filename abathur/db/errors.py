"""The one error seam: driver errors recognised by their codes, never by
their message text.

PostgreSQL errors carry a SQLSTATE (asyncpg's ``sqlstate``, kept by
SQLAlchemy's adapter); SQLite errors carry an extended result code
(``sqlite3.Error.sqlite_errorcode``, Python 3.11+), whose low byte is the
primary code. ``translate`` turns whatever a unit of work let through into an
``abathur.errors`` exception; repositories that expect a particular failure
(a duplicate key) test for it here and re-raise it with its subject.
"""

from __future__ import annotations

import socket
import sys

from sqlalchemy.exc import DBAPIError, IntegrityError

from abathur.errors import (
    AbathurError,
    AlreadyExistsError,
    ConnectionLostError,
    DatabaseBusyError,
    DatabaseError,
    StorageFullError,
    ValidationError,
)

# PostgreSQL SQLSTATEs a retry cures: serialization failure, deadlock, lock not available.
PG_RETRYABLE = frozenset({"40001", "40P01", "55P03"})
PG_UNIQUE_VIOLATION = "23505"
# The connection is gone or cannot be made yet: every SQLSTATE of class 08
# (connection exception: 08000, 08001, 08003, 08004, 08006, 08P01), and the
# server going down or not up yet: admin_shutdown, crash_shutdown,
# cannot_connect_now; too_many_connections clears as other clients leave.
PG_CONNECTION_CLASS = "08"
PG_CONNECTION_FAULTS = frozenset({"57P01", "57P02", "57P03", "53300"})
# read_only_sql_transaction, insufficient_privilege: writes refused.
PG_READ_ONLY = frozenset({"25006", "42501"})
# disk_full (class 53, insufficient resources).
PG_DISK_FULL = "53100"
# SQLite primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
SQLITE_CONSTRAINT = 19
# Extended codes of SQLITE_CONSTRAINT for a UNIQUE index and a PRIMARY KEY.
SQLITE_CONSTRAINT_UNIQUE = 2067
SQLITE_CONSTRAINT_PRIMARYKEY = 1555


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error, if it has one."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def error_detail(exc: BaseException) -> str | None:
    """The DETAIL field of a PostgreSQL error (asyncpg's ``detail``), looked
    for on the driver's exception and on what SQLAlchemy's adapter wrapped."""
    orig = getattr(exc, "orig", exc)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        detail = getattr(candidate, "detail", None)
        if isinstance(detail, str):
            return detail
    return None


def sqlite_code(exc: BaseException) -> int | None:
    """The SQLite extended result code of a driver error, if it has one."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def is_retryable(exc: BaseException) -> bool:
    """Contention that a retry of the whole transaction can cure."""
    if not isinstance(exc, DBAPIError):
        return False
    if sqlstate(exc) in PG_RETRYABLE:
        return True
    code = sqlite_code(exc)
    return code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


def is_connection_fault(exc: BaseException) -> bool:
    """The connection to the server was lost or could not be made.

    Recognised by SQLSTATE (on SQLAlchemy's wrapper or, as older SQLAlchemy
    2.0 releases let some through, on the driver's own exception), by
    SQLAlchemy's disconnect flag (set when the driver's error class says the
    connection is gone, e.g. "connection is closed"), by asyncpg's
    ``InternalClientError`` (a connection left mid-operation by a broken
    socket), or, for a connect that never reached the server, by the
    operating system's error class (refused, reset, timed out; a host name
    that did not resolve, ``socket.gaierror``: a typo, or DNS not answering).
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(PG_CONNECTION_CLASS) or code in PG_CONNECTION_FAULTS
    orig = getattr(exc, "orig", None) or exc
    return isinstance(orig, ConnectionError | TimeoutError | socket.gaierror) or (
        _asyncpg_client_fault(orig)
    )


def _asyncpg_client_fault(exc: BaseException) -> bool:
    """asyncpg's ``InternalClientError``, recognised by class; asyncpg is an
    optional dependency, imported only once it is loaded anyway."""
    asyncpg = sys.modules.get("asyncpg")
    internal = getattr(getattr(asyncpg, "exceptions", None), "InternalClientError", None)
    return isinstance(internal, type) and isinstance(exc, internal)


def is_driver_fault(exc: BaseException) -> bool:
    """An error of the driver or SQLAlchemy that ``translate`` turns into an
    ``abathur.errors`` exception."""
    return isinstance(exc, DBAPIError) or is_connection_fault(exc)


def is_storage_full(exc: BaseException) -> bool:
    """SQLITE_FULL (the disk, or ``max_page_count``) or PostgreSQL's disk_full."""
    if not isinstance(exc, DBAPIError):
        return False
    if sqlstate(exc) == PG_DISK_FULL:
        return True
    code = sqlite_code(exc)
    return code is not None and code & 0xFF == SQLITE_FULL


def is_read_only(exc: BaseException) -> bool:
    """Writes refused: SQLITE_READONLY (a read-only file, or a directory where
    WAL cannot create its -wal and -shm files; ``mode=ro``), or PostgreSQL's
    read-only transaction or missing privilege."""
    if not isinstance(exc, DBAPIError):
        return False
    if sqlstate(exc) in PG_READ_ONLY:
        return True
    code = sqlite_code(exc)
    return code is not None and code & 0xFF == SQLITE_READONLY


def is_duplicate_key(exc: BaseException) -> bool:
    """A UNIQUE or primary-key violation, not a CHECK, NOT NULL or foreign-key one."""
    if not isinstance(exc, IntegrityError):
        return False
    if sqlstate(exc) == PG_UNIQUE_VIOLATION:
        return True
    return sqlite_code(exc) in (SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY)


def translate(exc: BaseException) -> AbathurError:
    """The ``abathur.errors`` exception for a driver error no repository
    handled (a ``DBAPIError``, or the operating system's error of a connect)."""
    if isinstance(exc, AbathurError):
        return exc
    orig = getattr(exc, "orig", None)
    detail = str(orig) if orig is not None else str(exc)
    if is_duplicate_key(exc):
        return AlreadyExistsError(f"duplicate key: {detail}")
    if isinstance(exc, IntegrityError):
        return ValidationError(f"rejected by a database constraint: {detail}")
    if is_storage_full(exc):
        return StorageFullError(
            f"the database's storage is full; nothing of this call was committed: {detail}"
        )
    code = sqlite_code(exc)
    if code is not None and code & 0xFF == SQLITE_NOTADB:
        return DatabaseError(f"the file is not an SQLite database (or is damaged): {detail}")
    if code is not None and code & 0xFF == SQLITE_CANTOPEN:
        return DatabaseError(
            "the database file cannot be opened (its directory is missing or "
            f"unreadable, or the path is a directory): {detail}"
        )
    if is_read_only(exc):
        return DatabaseError(
            "the database refuses writes (a read-only file or directory, a read-only "
            f"connection, or missing privileges): {detail}"
        )
    if is_connection_fault(exc):
        return ConnectionLostError(
            f"the connection to the database server was lost or could not be made; "
            f"nothing of this call was committed: {detail}"
        )
    if is_retryable(exc):
        return DatabaseBusyError(f"the database is busy (locked by another writer): {detail}")
    return DatabaseError(f"database error: {detail}")
