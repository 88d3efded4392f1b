"""The fast path's one seam: does it support the installed versions?

The fast path (``worker``, ``prepared``, ``group_commit``) uses private parts
of aiosqlite (``Connection._execute``, ``_conn``) and of SQLAlchemy's aiosqlite
adapter (the adapted connection's ``_connection``, ``_handle_exception``,
``await_``/``await_only``). A release may change any of them without notice.
So the fast path runs only on the releases it was tested with; on any other
(or when ``ABATHUR_SQLITE_FAST_PATH=0`` asks for it) SQLite runs on
SQLAlchemy's stock aiosqlite adapter: slower, never broken.
"""

from __future__ import annotations

import os
import re

import aiosqlite
import sqlalchemy
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.util import concurrency

# The release lines the fast path was tested on, (major, minor) inclusive.
# The lowest are the floors of pyproject.toml (tested by `make test-lowest`).
SQLALCHEMY_TESTED = ((2, 0), (2, 1))
AIOSQLITE_TESTED = ((0, 19), (0, 22))
ENVIRONMENT = "ABATHUR_SQLITE_FAST_PATH"

_AIOSQLITE_NEEDS = ("_execute", "_conn", "in_transaction")
_ADAPTER_NEEDS = ("_handle_exception", "commit", "rollback", "cursor")


def _release(version: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else None


def _within(version: str, tested: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    release = _release(version)
    return release is not None and tested[0] <= release <= tested[1]


def fast_path_problem() -> str | None:
    """Why the fast path is off, or None when it can run."""
    if os.environ.get(ENVIRONMENT, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENVIRONMENT}={os.environ[ENVIRONMENT]}"
    if not _within(sqlalchemy.__version__, SQLALCHEMY_TESTED):
        return f"SQLAlchemy {sqlalchemy.__version__} is not a release the fast path was tested on"
    version = getattr(aiosqlite, "__version__", "")
    if not _within(version, AIOSQLITE_TESTED):
        return f"aiosqlite {version or '(unknown)'} is not a release the fast path was tested on"
    missing = [n for n in _AIOSQLITE_NEEDS if not hasattr(aiosqlite.Connection, n)]
    adapter = getattr(sa_aiosqlite, "AsyncAdapt_aiosqlite_connection", None)
    missing += [n for n in _ADAPTER_NEEDS if not hasattr(adapter, n)]
    if not hasattr(concurrency, "await_") and not hasattr(concurrency, "await_only"):
        missing.append("sqlalchemy.util.concurrency.await_")
    if missing:
        return "missing: " + ", ".join(missing)
    return None


def supports_fast_path() -> bool:
    """True when the installed aiosqlite and SQLAlchemy run the fast path."""
    return fast_path_problem() is None
