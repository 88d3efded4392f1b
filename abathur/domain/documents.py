"""Document index values: indexed rows and the outcome of a directory sync."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from abathur.domain import Record

SyncStatus = Literal["pending", "synced", "failed", "stale"]
SYNC_STATUSES: tuple[SyncStatus, ...] = get_args(SyncStatus)


class DocumentRecord(Record):
    """One row of ``document_index``. ``file_path`` is absolute (see DocumentIndexService)."""

    id: int
    file_path: str
    title: str
    document_type: str | None
    content_hash: str
    chunk_count: int | None
    embedding_model: str | None
    metadata: dict[str, Any] | None = Field(validation_alias="metadata_")
    last_synced_at: datetime | None
    sync_status: SyncStatus | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_missing(self) -> bool:
        """True when the last sync found the file gone."""
        return bool((self.metadata or {}).get("missing"))


class ScannedDocument(BaseModel):
    """What a sync learned from one file on disk, before it touches the database."""

    model_config = ConfigDict(frozen=True)

    file_path: str
    title: str
    document_type: str | None
    content_hash: str


class SyncProblem(BaseModel):
    """A file the sync could not index, and why; the sync goes on without it."""

    model_config = ConfigDict(frozen=True)

    file_path: str
    reason: str


class SyncResult(BaseModel):
    """The outcome of ``DocumentIndexService.sync_directory``.

    ``added``: new rows (``pending``); ``changed``: rows whose content hash
    changed, or whose file came back after being missing (now ``stale``);
    ``unchanged``: rows left untouched; ``missing``: indexed files under the
    directory that no longer exist (marked ``stale`` with ``{"missing": true}``
    in their metadata, never deleted). ``problems`` lists files that matched
    the pattern but were not indexed, each with the reason: not a regular
    file (a FIFO, a device, a directory...), a symlink leading outside the
    directory, over the size limit, unreadable, not UTF-8 text; their rows,
    if any, are left as they were.
    """

    model_config = ConfigDict(frozen=True)

    directory: str
    pattern: str
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    added_files: list[str] = Field(default_factory=list)
    changed_files: list[str] = Field(default_factory=list)
    missing_files: list[str] = Field(default_factory=list)
    problems: list[SyncProblem] = Field(default_factory=list)
