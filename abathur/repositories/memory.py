"""MemoryRepository: the SQL of versioned memory rows.

Every query here is served by an index (``tests/repositories/test_memory_query_plans.py``
checks the plans on both backends):

- one key's rows: the UNIQUE (namespace, key, version) index;
- a subtree's current live versions: ``idx_memory_namespace_prefix``, a range
  scan over the namespace (see ``namespaces.in_subtree``), each candidate
  checked against newer versions of its key through the unique index;
- keys with several live versions: ``idx_memory_is_deleted`` (live rows only);
- stale episodic memories: ``idx_memory_type_updated`` (live rows only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, false, func, select, text, true, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from abathur.db.errors import is_duplicate_key
from abathur.db.sqlite.prepared import Executor, Prepared
from abathur.domain.memory import MemoryFields
from abathur.domain.namespaces import subtree_bounds
from abathur.errors import ConflictError
from abathur.repositories.base import dialect_name, insert_row
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import MemoryEntry

LIVE = MemoryEntry.is_deleted == false()

# Reads return plain rows whose fields carry the model's attribute names
# (``row.metadata_``), not ORM objects: building an ORM instance per row costs
# more than fetching it. The hot statements are built once; constructing a
# statement per call costs about as much as running it.
# A named tuple (fast path) or a Row: both read as row.field.
MemoryVersion = MemoryFields
VERSION_FIELDS = tuple(
    getattr(MemoryEntry, prop.key).label(prop.key) for prop in sa_inspect(MemoryEntry).column_attrs
)
_ONE_KEY = (MemoryEntry.namespace == bindparam("namespace"), MemoryEntry.key == bindparam("key"))
LATEST = Prepared(
    select(*VERSION_FIELDS).where(*_ONE_KEY).order_by(MemoryEntry.version.desc()).limit(1)
)
VERSION = Prepared(
    select(*VERSION_FIELDS).where(*_ONE_KEY, MemoryEntry.version == bindparam("version"))
)
HISTORY = Prepared(select(*VERSION_FIELDS).where(*_ONE_KEY).order_by(MemoryEntry.version))


def key_lock_id(namespace: str, key: str) -> int:
    """A signed 64-bit advisory lock id for one memory key.

    Namespaces never contain NUL, so ``namespace NUL key`` names the key
    unambiguously; a hash collision only serialises two unrelated keys.
    """
    digest = hashlib.blake2b(namespace.encode() + b"\x00" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _newer_version_exists() -> Any:
    newer = aliased(MemoryEntry)
    return exists().where(
        newer.namespace == MemoryEntry.namespace,
        newer.key == MemoryEntry.key,
        newer.version > MemoryEntry.version,
    )


# The current live version of every key in a subtree, newest first.
SEARCH = (
    select(*VERSION_FIELDS)
    .where(in_subtree(MemoryEntry.namespace), LIVE, ~_newer_version_exists())
    .order_by(MemoryEntry.updated_at.desc(), MemoryEntry.id.desc())
    .limit(bindparam("limit"))
)
SEARCH_OF_TYPE = Prepared(SEARCH.where(MemoryEntry.memory_type == bindparam("memory_type")))
SEARCH_ALL = Prepared(SEARCH)


class MemoryRepository:
    """The reads that return plain rows also run on a bare connection (``Database.read``)."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def lock_key(self, namespace: str, key: str) -> None:
        """Serialise writers of one key until the transaction ends.

        SQLite needs nothing: write transactions begin IMMEDIATE and so run one
        at a time. PostgreSQL takes a transaction-scoped advisory lock, which
        also covers a key that has no row yet.
        """
        if dialect_name(self.executor) == "postgresql":
            self.executor.execute(
                text("SELECT pg_advisory_xact_lock(:lock_id)"),
                {"lock_id": key_lock_id(namespace, key)},
            )

    def latest(self, namespace: str, key: str) -> MemoryVersion | None:
        """The highest version of the key, deleted or not."""
        return LATEST.first(self.executor, {"namespace": namespace, "key": key})

    def version(self, namespace: str, key: str, version: int) -> MemoryVersion | None:
        params = {"namespace": namespace, "key": key, "version": version}
        return VERSION.first(self.executor, params)

    def history(self, namespace: str, key: str) -> Sequence[MemoryVersion]:
        return HISTORY.all(self.executor, {"namespace": namespace, "key": key})

    def live_versions(self, namespace: str, key: str) -> Sequence[MemoryEntry]:
        """The rows of the key not deleted or superseded, ascending by version."""
        query = (
            select(MemoryEntry)
            .where(MemoryEntry.namespace == namespace, MemoryEntry.key == key, LIVE)
            .order_by(MemoryEntry.version)
        )
        return (self.executor.scalars(query)).all()

    def insert(self, row: MemoryEntry) -> MemoryEntry:
        try:
            insert_row(self.executor, row)
        except IntegrityError as exc:
            if is_duplicate_key(exc):
                raise ConflictError(
                    f"version {row.version} of {row.namespace!r}/{row.key!r} was written "
                    "concurrently"
                ) from exc
            raise
        return row

    def mark_deleted(self, namespace: str, key: str, *, below_version: int | None = None) -> int:
        """Set ``is_deleted`` on the key's live rows (only those below a version, if given)."""
        conditions = [MemoryEntry.namespace == namespace, MemoryEntry.key == key, LIVE]
        if below_version is not None:
            conditions.append(MemoryEntry.version < below_version)
        result = self.executor.execute(
            update(MemoryEntry)
            .where(*conditions)
            .values(is_deleted=true())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def search(self, root: str, memory_type: str | None, limit: int) -> Sequence[MemoryVersion]:
        """The current live version of every key in the subtree of ``root``, newest first."""
        params: dict[str, Any] = {**subtree_bounds(root), "limit": limit}
        if memory_type is None:
            return SEARCH_ALL.all(self.executor, params)
        params["memory_type"] = memory_type
        return SEARCH_OF_TYPE.all(self.executor, params)

    def keys_with_several_live_versions(self, root: str) -> list[tuple[str, str]]:
        query = (
            select(MemoryEntry.namespace, MemoryEntry.key)
            .where(in_subtree(MemoryEntry.namespace, root), LIVE)
            .group_by(MemoryEntry.namespace, MemoryEntry.key)
            .having(func.count() > 1)
            .order_by(MemoryEntry.namespace, MemoryEntry.key)
        )
        return [(ns, key) for ns, key in (self.executor.execute(query)).all()]

    def stale_current_versions(self, memory_type: str, cutoff: datetime) -> list[tuple[str, str]]:
        """Keys whose current version is live, of ``memory_type``, last written before cutoff."""
        query = (
            select(MemoryEntry.namespace, MemoryEntry.key)
            .where(
                and_(
                    MemoryEntry.memory_type == memory_type,
                    LIVE,
                    MemoryEntry.updated_at < cutoff,
                    ~_newer_version_exists(),
                )
            )
            .order_by(MemoryEntry.namespace, MemoryEntry.key)
        )
        return [(ns, key) for ns, key in (self.executor.execute(query)).all()]
