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
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import orm

from abathur.db.storage import Storage
from abathur.domain.clock import utcnow
from abathur.domain.documents import (
    DocumentRecord,
    ScannedDocument,
    SyncProblem,
    SyncResult,
)
from abathur.errors import AlreadyExistsError, ConflictError, NotFoundError, ValidationError
from abathur.repositories.documents import DocumentIndexRepository

BATCH_SIZE = 200
"""Files per write transaction: big enough to be quick, small enough not to
hold SQLite's write lock for long."""
SYNC_ATTEMPTS = 5
"""Runs of one batch at most, when a concurrent sync inserts the same files first."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each batch of files."""

_FRONT_MATTER_FIELD = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$")
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """The ``key: value`` fields of a leading ``---`` block, and the text after it.

    Only flat scalar fields are read (YAML-ish, no YAML library): nested or
    list values are ignored, quotes around a value are removed.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    fields: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return fields, "\n".join(lines[number + 1 :])
        match = _FRONT_MATTER_FIELD.match(line)
        if match and match.group(2):
            fields.setdefault(match.group(1).lower(), _unquote(match.group(2)))
    return {}, text  # no closing fence: not front matter after all


def first_heading(text: str) -> str | None:
    """The text of the first level-1 ATX heading (``# Title``) outside code fences."""
    fenced = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            match = _HEADING.match(stripped)
            if match:
                return match.group(1)
    return None


def describe(path: Path, text: str) -> tuple[str, str | None]:
    """(title, document_type) of a document: front matter ``title:`` or the
    first ``# `` heading or the file name without extension; ``type:`` or
    ``document_type:`` from front matter, else None."""
    fields, body = parse_front_matter(text)
    title = fields.get("title") or first_heading(body) or path.stem or path.name
    document_type = fields.get("document_type") or fields.get("type") or None
    return title, document_type


def scan_file(path: Path) -> ScannedDocument | SyncProblem:
    """Read one file: its hash, title and type, or the reason it cannot be indexed."""
    file_path = path.as_posix()
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        return SyncProblem(file_path=file_path, reason="unreadable: is a directory")
    except OSError as exc:
        return SyncProblem(file_path=file_path, reason=f"unreadable: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SyncProblem(file_path=file_path, reason=f"not valid UTF-8 (byte {exc.start})")
    title, document_type = describe(path, text.removeprefix("\ufeff"))
    return ScannedDocument(
        file_path=file_path,
        title=title,
        document_type=document_type,
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def _check_pattern(pattern: Any) -> None:
    """A glob relative to the synced directory that cannot leave it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"pattern must be a non-empty glob, not {pattern!r}")
    if PurePath(pattern).is_absolute() or ".." in PurePath(pattern).parts:
        raise ValidationError(
            f"pattern {pattern!r} must stay inside the directory: no absolute path, no '..'"
        )


def _resolve_directory(path: str | Path) -> Path:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise NotFoundError(f"directory {str(path)!r} not found")
    return root


def scan_batch(paths: Sequence[Path]) -> list[ScannedDocument | SyncProblem]:
    """``scan_file`` of each path, in order (run in a worker thread)."""
    return [scan_file(p) for p in paths]


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
    ) -> SyncResult:
        """Bring the index in step with the files under ``path`` matching ``pattern``.

        New files get a ``pending`` row; a file whose SHA-256 changed becomes
        ``stale`` with its new hash, title and type; an unchanged file's row is
        not written at all. Indexed files below ``path`` that no longer exist
        are marked ``stale`` with ``{"missing": true}`` in their metadata and
        reported, never deleted; a missing file that reappears loses the flag
        and counts as changed. Files that cannot be read or are not UTF-8 are
        listed in ``problems`` and skipped; rows of files that exist but fall
        outside ``pattern`` are left alone. Each batch of ``batch_size`` files
        is one transaction. ``progress(done, total)`` is called after each batch.
        """
        if batch_size < 1:
            raise ValidationError("batch_size must be at least 1")
        _check_pattern(pattern)
        root = await asyncio.to_thread(_resolve_directory, path)
        files = await asyncio.to_thread(lambda: sorted(root.glob(pattern)))
        total = len(files)
        added: list[str] = []
        changed: list[str] = []
        problems: list[SyncProblem] = []
        unchanged = 0
        if progress is not None:
            progress(0, total)

        for start in range(0, total, batch_size):
            batch = files[start : start + batch_size]
            scanned = await asyncio.to_thread(scan_batch, batch)
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

        def work(session: orm.Session) -> DocumentRecord | None:
            row = DocumentIndexRepository(session).get(document_id)
            return None if row is None else DocumentRecord.model_validate(row)

        return await self._db.run(work, write=False)

    async def list_documents(self, directory: str | Path) -> list[DocumentRecord]:
        """Every row below ``directory`` (resolved like ``sync_directory`` does), by path."""
        root = (await asyncio.to_thread(_resolve_directory, directory)).as_posix()

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
        if limit < 1:
            raise ValidationError("limit must be at least 1")

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
        if not embedding_model:
            raise ValidationError("embedding_model must not be empty")
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
