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

from sqlalchemy.exc import DBAPIError, IntegrityError

from abathur.errors import AbathurError, AlreadyExistsError, DatabaseError, ValidationError

# PostgreSQL SQLSTATEs a retry cures: serialization failure, deadlock, lock not available.
PG_RETRYABLE = frozenset({"40001", "40P01", "55P03"})
PG_UNIQUE_VIOLATION = "23505"
# SQLite primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_CONSTRAINT = 19
# Extended codes of SQLITE_CONSTRAINT for a UNIQUE index and a PRIMARY KEY.
SQLITE_CONSTRAINT_UNIQUE = 2067
SQLITE_CONSTRAINT_PRIMARYKEY = 1555


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error, if it has one."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


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


def is_duplicate_key(exc: BaseException) -> bool:
    """A UNIQUE or primary-key violation, not a CHECK, NOT NULL or foreign-key one."""
    if not isinstance(exc, IntegrityError):
        return False
    if sqlstate(exc) == PG_UNIQUE_VIOLATION:
        return True
    return sqlite_code(exc) in (SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY)


def translate(exc: DBAPIError) -> AbathurError:
    """The ``abathur.errors`` exception for a driver error no repository handled."""
    detail = str(exc.orig) if exc.orig is not None else str(exc)
    if is_duplicate_key(exc):
        return AlreadyExistsError(f"duplicate key: {detail}")
    if isinstance(exc, IntegrityError):
        return ValidationError(f"rejected by a database constraint: {detail}")
    return DatabaseError(f"database error: {detail}")
