"""Database URLs: what ``Database(url_or_path)`` accepts and the default."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from abathur.domain.values import check_text
from abathur.errors import ConfigurationError, ValidationError

DEFAULT_URL = "sqlite+aiosqlite:///abathur.db"


def default_url() -> str:
    return os.environ.get("ABATHUR_DATABASE_URL", DEFAULT_URL)


SUPPORTED = "sqlite+aiosqlite:///FILE (or a file path) and postgresql+asyncpg://..."


def to_url(url_or_path: str | Path | URL) -> URL:
    """An async SQLAlchemy URL from a URL string, a URL or a filesystem path.

    ConfigurationError for an empty string (which would silently be a
    throwaway in-memory database: say ``sqlite+aiosqlite://`` or
    ``Path(":memory:")`` for that), a malformed URL, or a backend other than
    SQLite (aiosqlite) and PostgreSQL (asyncpg).
    """
    if isinstance(url_or_path, URL):
        url = url_or_path
    elif isinstance(url_or_path, Path):
        url = make_url(f"sqlite+aiosqlite:///{url_or_path}")
    elif not isinstance(url_or_path, str):
        raise ConfigurationError(
            f"a database is a URL string or a Path, not {type(url_or_path).__name__}"
        )
    elif not url_or_path.strip():
        raise ConfigurationError(
            f"empty database URL: give a file path or a URL ({SUPPORTED}); "
            "sqlite+aiosqlite:// is an in-memory database"
        )
    else:
        text = url_or_path if "://" in url_or_path else f"sqlite+aiosqlite:///{url_or_path}"
        try:
            url = make_url(text)
        except ArgumentError as exc:
            raise ConfigurationError(f"malformed database URL {url_or_path!r}: {exc}") from exc
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigurationError(
            f"unsupported database URL scheme {url.drivername!r}: abathur supports "
            f"SQLite and PostgreSQL ({SUPPORTED})"
        )
    _check_text(url)
    return url


def _check_text(url: URL) -> None:
    """ConfigurationError for a part no driver can pass on: a NUL (sqlite3:
    ValueError) or a lone surrogate (UnicodeEncodeError), found here rather
    than at the first connect."""
    parts: list[object] = [url.username, url.password, url.host, url.database]
    for value in url.query.values():
        parts.extend(value if isinstance(value, tuple) else (value,))
    for part in parts:
        if isinstance(part, str):
            try:
                check_text(part, "the database URL or path", max_bytes=None, empty=True)
            except ValidationError as exc:
                raise ConfigurationError(str(exc)) from exc


def is_memory_url(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
