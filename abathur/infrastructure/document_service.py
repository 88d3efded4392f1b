"""DocumentIndexService: keep ``document_index`` in step with a directory of files.

Paths: every row's ``file_path`` is the absolute POSIX path of the file, under
the synced directory with symlinks in the directory itself resolved
(``Path(directory).resolve() / relative``). Absolute paths keep rows of
different synced directories apart (two ``README.md`` never collide on the
UNIQUE ``file_path``) and let a sync of one directory judge "missing" only
for rows below that directory. Moving the directory therefore re-adds its
files under the new paths and reports the old ones missing.

Embeddings are not computed here (Milestone 3): a sync only queues work
(``pending`` for new rows, ``stale`` for changed ones), and an embedder takes
rows from ``pending_documents`` and reports back with ``mark_synced``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sqlalchemy import orm

from abathur.db.storage import Storage
from abathur.domain import count_arg
from abathur.domain.clock import utcnow
from abathur.domain.documents import (
    DocumentRecord,
    ScannedDocument,
    SyncProblem,
    SyncResult,
)
from abathur.domain.values import MAX_ROW_ID, check_text
from abathur.errors import AlreadyExistsError, ConflictError, NotFoundError, ValidationError
from abathur.infrastructure.document_scan import (
    MAX_DOCUMENT_BYTES,
    check_directory,
    check_pattern,
    list_files,
    resolve_directory,
    scan_batch,
)
from abathur.repositories.documents import DocumentIndexRepository

BATCH_SIZE = 200
"""Files per write transaction: big enough to be quick, small enough not to
hold SQLite's write lock for long."""
SYNC_ATTEMPTS = 5
"""Runs of one batch at most, when a concurrent sync inserts the same files first."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each batch of files."""


class DocumentIndexService:
    """The document index: directory sync, the embedding queue, and its results."""

    def __init__(self, db: Storage):
        self._db = db

    async def sync_directory(
        self,
        path: str | Path,
        pattern: str = "**/*.md",
        *,
        progress: ProgressCallback | None = None,
        batch_size: int = BATCH_SIZE,
        follow_external_symlinks: bool = False,
        max_file_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> SyncResult:
        """Bring the index in step with the files under ``path`` matching ``pattern``.

        New files get a ``pending`` row; a file whose SHA-256 changed becomes
        ``stale`` with its new hash, title and type; an unchanged file's row is
        not written at all. Indexed files below ``path`` that no longer exist
        are marked ``stale`` with ``{"missing": true}`` in their metadata and
        reported, never deleted; a missing file that reappears loses the flag
        and counts as changed. Rows of files that exist but fall outside
        ``pattern`` are left alone. Each batch of ``batch_size`` files is one
        transaction. ``progress(done, total)`` is called after each batch.

        Only regular files of at most ``max_file_bytes`` are read (never a
        FIFO, a device, a socket or a directory); a symlink that resolves
        outside ``path`` is not followed unless ``follow_external_symlinks``.
        Every matched file that is skipped for one of these reasons, cannot be
        read, is not UTF-8 text or has a path too long to index is listed in
        ``problems`` with the reason, and its row, if any, is left as it was.
        """
        directory = check_directory(path)
        check_pattern(pattern)
        count_arg(batch_size, "batch_size", least=1)
        count_arg(max_file_bytes, "max_file_bytes", least=0, most=MAX_DOCUMENT_BYTES * 64)
        if not isinstance(follow_external_symlinks, bool):
            raise ValidationError("follow_external_symlinks must be True or False")
        if progress is not None and not callable(progress):
            raise ValidationError("progress must be callable as progress(done, total)")
        root = await asyncio.to_thread(resolve_directory, directory)
        files = await asyncio.to_thread(list_files, root, pattern)
        total = len(files)
        added: list[str] = []
        changed: list[str] = []
        problems: list[SyncProblem] = []
        unchanged = 0
        if progress is not None:
            progress(0, total)

        for start in range(0, total, batch_size):
            batch = files[start : start + batch_size]
            scanned = await asyncio.to_thread(
                partial(
                    scan_batch,
                    batch,
                    root,
                    follow_external_symlinks=follow_external_symlinks,
                    max_bytes=max_file_bytes,
                )
            )
            documents = [s for s in scanned if isinstance(s, ScannedDocument)]
            problems.extend(s for s in scanned if isinstance(s, SyncProblem))
            new, updated, same = await self._apply_batch(documents)
            added.extend(new)
            changed.extend(updated)
            unchanged += same
            if progress is not None:
                progress(min(start + batch_size, total), total)

        seen = {f.as_posix() for f in files}
        indexed = await self.list_documents(root)
        unseen = [d.file_path for d in indexed if d.file_path not in seen]
        missing = await asyncio.to_thread(lambda: [p for p in unseen if not os.path.lexists(p)])
        await self._db.run(partial(self._mark_missing, paths=missing))
        return SyncResult(
            directory=root.as_posix(),
            pattern=pattern,
            added=len(added),
            changed=len(changed),
            unchanged=unchanged,
            missing=len(missing),
            added_files=added,
            changed_files=changed,
            missing_files=missing,
            problems=problems,
        )

    async def _apply_batch(
        self, documents: list[ScannedDocument]
    ) -> tuple[list[str], list[str], int]:
        """``_apply`` in one transaction. Another sync of the same files may
        insert one of them first (PostgreSQL runs syncs side by side): the
        batch is rolled back and run again, and then sees that row."""
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            try:
                return await self._db.run(partial(self._apply, documents=documents))
            except AlreadyExistsError:
                if attempt == SYNC_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _apply(
        session: orm.Session, documents: list[ScannedDocument]
    ) -> tuple[list[str], list[str], int]:
        repo = DocumentIndexRepository(session)
        existing = repo.by_paths(d.file_path for d in documents)
        now = utcnow()
        added: list[str] = []
        changed: list[str] = []
        unchanged = 0
        for doc in documents:
            row = existing.get(doc.file_path)
            if row is None:
                repo.add(doc, now)
                added.append(doc.file_path)
            elif row.content_hash != doc.content_hash or (row.metadata_ or {}).get("missing"):
                repo.mark_stale(row, doc, now)
                changed.append(doc.file_path)
            else:
                unchanged += 1
        return added, changed, unchanged

    @staticmethod
    def _mark_missing(session: orm.Session, paths: list[str]) -> None:
        repo = DocumentIndexRepository(session)
        now = utcnow()
        for row in (repo.by_paths(paths)).values():
            if not (row.metadata_ or {}).get("missing"):
                repo.mark_missing(row, now)

    async def get_document(self, document_id: int) -> DocumentRecord | None:
        """The row with this id, or None."""
        count_arg(document_id, "document_id", least=1, most=MAX_ROW_ID)

        def work(session: orm.Session) -> DocumentRecord | None:
            row = DocumentIndexRepository(session).get(document_id)
            return None if row is None else DocumentRecord.model_validate(row)

        return await self._db.run(work, write=False)

    async def list_documents(self, directory: str | Path) -> list[DocumentRecord]:
        """Every row below ``directory`` (resolved like ``sync_directory`` does), by path."""
        root = (await asyncio.to_thread(resolve_directory, check_directory(directory))).as_posix()

        def work(session: orm.Session) -> list[DocumentRecord]:
            rows = DocumentIndexRepository(session).under(root)
            return [DocumentRecord.model_validate(r) for r in rows]

        return await self._db.run(work, write=False)

    async def pending_documents(
        self, limit: int = 100, *, include_missing: bool = False
    ) -> list[DocumentRecord]:
        """Rows that need an embedding (``pending`` first, then ``stale``; oldest
        sync first), served by the partial index ``idx_document_sync_status``.
        Rows whose file is missing are left out unless ``include_missing``."""
        count_arg(limit, "limit", least=1)
        if not isinstance(include_missing, bool):
            raise ValidationError("include_missing must be True or False")

        def work(session: orm.Session) -> list[DocumentRecord]:
            rows = DocumentIndexRepository(session).pending(limit, include_missing=include_missing)
            return [DocumentRecord.model_validate(r) for r in rows]

        return await self._db.run(work, write=False)

    async def mark_synced(
        self,
        document_id: int,
        embedding_model: str,
        embedding: bytes,
        *,
        content_hash: str | None = None,
    ) -> DocumentRecord:
        """Store a document's embedding: ``synced``, ``last_synced_at`` now.

        ``content_hash``, when given, must still be the row's hash (the one
        the embedding was computed from); otherwise the file changed meanwhile
        and ConflictError leaves the row in the queue. ``updated_at`` keeps
        tracking content changes only and is not touched.
        """
        count_arg(document_id, "document_id", least=1, most=MAX_ROW_ID)
        check_text(embedding_model, "embedding_model")
        if content_hash is not None:
            check_text(content_hash, "content_hash")
        if not isinstance(embedding, bytes | bytearray | memoryview):
            raise ValidationError("embedding must be bytes")
        blob = bytes(embedding)

        def work(session: orm.Session) -> DocumentRecord:
            repo = DocumentIndexRepository(session)
            # Locked: a sync that changes the hash meanwhile must not be
            # overwritten with an embedding of the old content.
            row = repo.get(document_id, lock=True)
            if row is None:
                raise NotFoundError(f"document {document_id} not found")
            if content_hash is not None and row.content_hash != content_hash:
                raise ConflictError(
                    f"document {document_id} changed since it was read "
                    f"(hash {row.content_hash[:12]}, expected {content_hash[:12]})"
                )
            repo.mark_synced(row, embedding_model, blob, utcnow())
            return DocumentRecord.model_validate(row)

        return await self._db.run(work)
