"""DocumentIndexRepository: the SQL of the ``document_index`` table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, literal_column, or_, orm, select, text
from sqlalchemy.sql.elements import ColumnElement

from abathur.domain.documents import ScannedDocument
from abathur.repositories.base import flush_new
from abathur.schema.models import DocumentIndex

# Literals, not bound parameters: a partial index is only usable when the
# query's WHERE visibly implies the index's WHERE.
# Paths bound in one ``IN (...)``: well below every driver's limit on bound values.
PATHS_PER_LOOKUP = 1000
NEEDS_SYNC = DocumentIndex.sync_status.in_([literal_column("'pending'"), literal_column("'stale'")])


def under_directory(root: str) -> ColumnElement[bool]:
    """SQL: ``file_path`` lies below the absolute POSIX directory ``root``.

    A byte-wise range (``'0'`` follows ``'/'`` in ASCII) rather than LIKE, so
    ``%`` and ``_`` in directory names are ordinary characters.
    """
    prefix = root.rstrip("/") + "/"
    return and_(DocumentIndex.file_path >= prefix, DocumentIndex.file_path < prefix[:-1] + "0")


class DocumentIndexRepository:
    def __init__(self, session: orm.Session):
        self.session = session

    def get(self, document_id: int, *, lock: bool = False) -> DocumentIndex | None:
        """The row with this id, or None; ``lock`` holds it against other writers
        until the transaction ends (PostgreSQL; SQLite writers are serial)."""
        return self.session.get(DocumentIndex, document_id, with_for_update=lock)

    def by_paths(self, paths: Iterable[str]) -> dict[str, DocumentIndex]:
        """The existing rows among ``paths``, keyed by file path; looked up
        ``PATHS_PER_LOOKUP`` at a time (asyncpg binds at most 32,767 values)."""
        wanted = list(paths)
        found: dict[str, DocumentIndex] = {}
        for start in range(0, len(wanted), PATHS_PER_LOOKUP):
            chunk = wanted[start : start + PATHS_PER_LOOKUP]
            query = select(DocumentIndex).where(DocumentIndex.file_path.in_(chunk))
            found.update((row.file_path, row) for row in self.session.scalars(query))
        return found

    def under(self, root: str) -> Sequence[DocumentIndex]:
        """Every row below the directory ``root``, by path."""
        query = select(DocumentIndex).where(under_directory(root)).order_by(DocumentIndex.file_path)
        return (self.session.scalars(query)).all()

    def add(self, scanned: ScannedDocument, now: datetime) -> DocumentIndex:
        """Insert a new ``pending`` row for a scanned file."""
        row = DocumentIndex(
            file_path=scanned.file_path,
            title=scanned.title,
            document_type=scanned.document_type,
            content_hash=scanned.content_hash,
            sync_status="pending",
            metadata_={},
            created_at=now,
            updated_at=now,
        )
        flush_new(self.session, row, f"document {scanned.file_path!r}")
        return row

    def mark_stale(self, row: DocumentIndex, scanned: ScannedDocument, now: datetime) -> None:
        """The file's content changed (or it came back): new hash, back in the queue."""
        row.content_hash = scanned.content_hash
        row.title = scanned.title
        row.document_type = scanned.document_type
        row.sync_status = "stale"
        row.metadata_ = {k: v for k, v in (row.metadata_ or {}).items() if k != "missing"}
        row.updated_at = now
        self.session.flush()

    def mark_missing(self, row: DocumentIndex, now: datetime) -> None:
        """The file is gone: ``stale`` with ``{"missing": true}``; the row stays."""
        row.sync_status = "stale"
        row.metadata_ = {**(row.metadata_ or {}), "missing": True}
        row.updated_at = now
        self.session.flush()

    def mark_synced(
        self, row: DocumentIndex, embedding_model: str, embedding: bytes, now: datetime
    ) -> None:
        """Store the embedding: ``synced`` as of ``now``."""
        row.embedding_model = embedding_model
        row.embedding_blob = embedding
        row.sync_status = "synced"
        row.last_synced_at = now
        self.session.flush()

    def _not_missing(self) -> ColumnElement[bool]:
        dialect = self.session.get_bind().dialect.name
        if dialect == "sqlite":
            flag = text("coalesce(json_extract(document_index.metadata, '$.missing'), 0) = 0")
        else:
            flag = text("coalesce((document_index.metadata ->> 'missing')::boolean, false) = false")
        return or_(DocumentIndex.metadata_.is_(None), flag)

    def _pending_query(self, limit: int, include_missing: bool) -> Select[Any]:
        query = select(DocumentIndex).where(NEEDS_SYNC)
        if not include_missing:
            query = query.where(self._not_missing())
        return query.order_by(
            DocumentIndex.sync_status,
            DocumentIndex.last_synced_at.nulls_first(),
            DocumentIndex.id,
        ).limit(limit)

    def pending(self, limit: int, *, include_missing: bool = False) -> Sequence[DocumentIndex]:
        """Rows waiting for an embedding: ``pending`` and ``stale``, oldest sync first."""
        query = self._pending_query(limit, include_missing)
        return (self.session.scalars(query)).all()
