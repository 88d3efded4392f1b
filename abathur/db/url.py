"""Database URLs: what ``Database(url_or_path)`` accepts and the default."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import URL, make_url

DEFAULT_URL = "sqlite+aiosqlite:///abathur.db"


def default_url() -> str:
    return os.environ.get("ABATHUR_DATABASE_URL", DEFAULT_URL)


def to_url(url_or_path: str | Path | URL) -> URL:
    """An async SQLAlchemy URL from a URL string, a URL or a filesystem path."""
    if isinstance(url_or_path, URL):
        url = url_or_path
    elif isinstance(url_or_path, Path):
        url = make_url(f"sqlite+aiosqlite:///{url_or_path}")
    elif "://" in url_or_path:
        url = make_url(url_or_path)
    else:
        url = make_url(f"sqlite+aiosqlite:///{url_or_path}")
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    return url


def is_memory_url(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
