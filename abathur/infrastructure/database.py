"""The Database: Storage with its four services attached.

Services depend on ``Storage`` alone; only this module knows them all.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from abathur.db.storage import Storage
from abathur.embeddings.embedder import Embedder
from abathur.infrastructure.document_service import DocumentIndexService
from abathur.infrastructure.memory_service import MemoryService
from abathur.infrastructure.session_service import SessionService
from abathur.infrastructure.task_service import TaskService

__all__ = ["Database"]


class Database(Storage):
    """An abathur database: SQLite (file or memory) or PostgreSQL.

    ``Database(url_or_path)`` takes an SQLAlchemy URL (``sqlite+aiosqlite:///x.db``,
    ``postgresql+asyncpg://...``) or a filesystem ``Path``; ``Path(":memory:")``
    gives a private in-memory database. Extra keyword arguments go to
    ``create_async_engine``. ``async with Database(...) as db`` migrates it to
    the newest revision and closes it at the end. ``embedder`` (an
    ``abathur.embeddings.Embedder``) makes every memory write store an
    embedding and enables ``memory.search_memories(..., query=...)``.
    """

    def __init__(
        self,
        url_or_path: str | Path | URL | None = None,
        *,
        embedder: Embedder | None = None,
        **engine_options: Any,
    ):
        super().__init__(url_or_path, **engine_options)
        self.embedder = embedder

    async def __aenter__(self) -> Database:
        await self.initialize()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @cached_property
    def sessions(self) -> SessionService:
        """This database's SessionService."""
        return SessionService(self)

    @cached_property
    def memory(self) -> MemoryService:
        """This database's MemoryService (unscoped, no resolver, this database's embedder)."""
        return MemoryService(self, embedder=self.embedder)

    @cached_property
    def tasks(self) -> TaskService:
        """This database's TaskService: tasks, agents, checkpoints, audit rows."""
        return TaskService(self)

    @cached_property
    def documents(self) -> DocumentIndexService:
        """This database's DocumentIndexService."""
        return DocumentIndexService(self)
