"""MemoryService: versioned, namespaced, audited long-term memory.

Rows are immutable versions. A key is *live* when its highest version row has
``is_deleted`` false and its expiry (``memory_expiry``, set by a ``ttl``) has
not passed. Writes insert version ``max + 1`` (the maximum over all
rows of the key, deleted ones included, so version numbers are never reused);
the only UPDATE of a version is of ``is_deleted``, by delete, consolidation and
expiry. A key past its expiry is invisible at once; the write that next
touches it (or ``sweep_expired``) soft-deletes its rows.
Every write runs in one transaction with exactly one ``audit`` row, after the
key's writers have been serialised (``MemoryRepository.lock_key``).

Results are plain dicts: ``value`` and ``metadata`` parsed, ``is_deleted`` a
bool, timestamps timezone-aware UTC.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any, Literal

from sqlalchemy import orm
from sqlalchemy.engine import Connection

from abathur.db.engine import refuse_nul
from abathur.db.sqlite.prepared import Executor, identity
from abathur.db.storage import Storage
from abathur.domain import clock, text_arg, validated
from abathur.domain.core import MemoryOperation, NewAuditEntry, NewTask
from abathur.domain.memory import (
    CONSOLIDATION_STRATEGIES,
    MAX_NAMESPACE_LIST_LIMIT,
    AccessContext,
    BulkPut,
    Consolidation,
    KeyRef,
    MemoryDeletion,
    MemoryDict,
    MemoryPublish,
    MemoryRestore,
    MemorySearch,
    MemoryUpdate,
    NamespaceListing,
    NewMemory,
    VersionRef,
    bulk_puts,
    check_suffix,
    expiry_after,
    json_object,
    memory_dict,
    memory_exists,
    memory_not_found,
    parse_filter,
    put_fields,
    ttl_arg,
)
from abathur.domain.namespaces import is_in_subtree, parse_namespace
from abathur.domain.values import bool_arg, brief_repr, check_text, count_arg, task_id_arg
from abathur.embeddings.embedder import Embedder, Vector, check_fields
from abathur.embeddings.ranking import DEFAULT_CACHE_VECTORS, Stacked, VectorCache
from abathur.errors import (
    AbathurError,
    AccessDeniedError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from abathur.repositories import statistics
from abathur.repositories.audit import AuditRepository
from abathur.repositories.base import require
from abathur.repositories.embeddings import (
    EmbeddingRepository,
    live_ids_statement,
    to_blob,
    versions_statement,
)
from abathur.repositories.memory import (
    MemoryRepository,
    MemoryVersion,
    NewVersion,
    bulk_page_cache,
    indexes_rebuilt,
    insert_versions,
    latest_of_keys,
    latest_with_expiry_statement,
    lock_keys,
    search_statement,
    set_expiries,
    unset_current,
    write_memory_statement,
)
from abathur.repositories.tasks import TaskRepository
from abathur.schema.models import MemoryEntry, Task
from abathur.strict_json import JSONText

LOG = logging.getLogger("abathur")

Resolver = Callable[[list[MemoryDict]], Awaitable[Any]]
"""``llm_based`` consolidation: receives a key's live versions (oldest first) and
returns the consolidated value, a JSON object."""

Embedding = tuple[str, list[tuple[str, Vector]]]
"""A version's embedding, computed before its transaction: the model and
``(field, vector)`` for every embedded field."""
ProgressCallback = Callable[[int], None]
PUBLISH_ATTEMPTS = 8
STACKED_SUBTREES = 4  # query searches whose stacked vectors a service keeps
# Row ids and the embedded fields of each (a stacked matrix's source).
Embedded = tuple[list[int], list[tuple[str, ...] | None]]
DEFAULT_REINDEX_BATCH = 256
# A bulk load refreshes the statistics of a table it wrote at least this many
# rows into, and at least this fraction of the rows they counted: a tenth on
# PostgreSQL, whose ANALYZE samples a fixed number of rows; as many on SQLite,
# whose ANALYZE reads every index (``MemoryService.refresh_statistics``;
# docs/design_decisions.md, "Statistics after a bulk load").
ANALYZE_MIN_ROWS = 1_000
ANALYZE_GROWTH_POSTGRES = 0.1
ANALYZE_GROWTH_SQLITE = 1.0
MAX_REINDEX_BATCH = 10_000


class _SourceChanged(Exception):
    """Inside a unit of work: the value embedded beforehand is no longer the one to write."""


def _lacking(
    root: str | None, model: str, dims: int, after: int, limit: int, conn: Connection
) -> list[tuple[int, Any]]:
    return EmbeddingRepository(conn).lacking(root, model, dims, after, limit)


def _insert_missing(model: str, rows: list[tuple[int, str, Vector]], conn: Connection) -> int:
    return EmbeddingRepository(conn).insert_missing(model, rows)


def _check_index(index: Any) -> None:
    """``index`` is a bool or (``put_memory``) a non-empty list of field names."""
    if isinstance(index, bool):
        return
    if not isinstance(index, list | tuple) or not index:
        raise ValidationError(
            f"index must be a bool or a non-empty list of field names, got {brief_repr(index)}"
        )
    check_fields(index)


def _store_embedding(executor: Executor, row_id: int, embedding: Embedding | None) -> None:
    """Store a new version's embedding, inside the unit of work that wrote the version.

    Every memory write calls it right after inserting the version (``put_memory``
    must too), with what ``MemoryService._embed`` computed before the unit began.
    """
    if embedding is not None:
        model, vectors = embedding
        EmbeddingRepository(executor).insert(row_id, model, vectors)


SYSTEM_TASK_ID = "abathur-system"
SYSTEM_ACTOR = "abathur"
PUBLISH_SOURCES = ("session",)
PUBLISH_TARGETS = ("user", "project")

DEFAULT_MEMORIES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    (
        "app:abathur:conventions",
        "namespaces",
        "semantic",
        {
            "session": "drafts and facts of one session",
            "user": "what is known about one user, across sessions",
            "app": "knowledge shared by every user of an application",
            "project": "knowledge shared by the members of one project",
            "temp": "scratch data kept only in session state, never persisted as memory",
        },
    ),
    (
        "app:abathur:procedures",
        "memory_hygiene",
        "procedural",
        {
            "steps": [
                "draft a memory in the session namespace",
                "publish it to user: or project: once it is confirmed",
                "consolidate keys with several live versions",
            ]
        },
    ),
    (
        "app:abathur:policies",
        "retention",
        "semantic",
        {"episodic_ttl_days": 90, "versions_are_immutable": True, "deletes_are_soft": True},
    ),
)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: nested objects merge, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _audit(
    executor: Executor,
    entry: MemoryEntry | MemoryVersion,
    *,
    task_id: str,
    operation: MemoryOperation,
    action_type: str,
    **data: Any,
) -> None:
    """The one audit row of a memory write. ``entry`` is the version written
    (for a delete, the latest one); ``action_data`` holds its key and version
    and ``data``."""
    AuditRepository(executor).append(
        NewAuditEntry(
            task_id=task_id,
            action_type=action_type,
            action_data={"key": entry.key, "version": entry.version, **data},
            result="success",
            memory_operation_type=operation,
            memory_namespace=entry.namespace,
            memory_entry_id=entry.id,
        )
    )


def _begin_write(
    executor: Executor, task_id: str, namespace: str, key: str, now: datetime
) -> tuple[MemoryRepository, Any | None]:
    """What every write of one key starts with: the task must exist, the key's
    writers are serialised, and its newest version (deleted or not) is read,
    with its expiry (see ``_current``)."""
    require(executor, Task, task_id, "task")
    repo = MemoryRepository(executor)
    repo.lock_key(namespace, key)
    return repo, _current(repo, namespace, key, now)


def _current(repo: MemoryRepository, namespace: str, key: str, now: datetime) -> Any | None:
    """The key's newest version (deleted or not) with ``expires_at`` and
    ``ttl_seconds``, under the key's lock. A key past its expiry is already
    invisible to every read; the write that finds it soft-deletes its rows and
    drops its expiry first (no audit row of its own: the write's own audit row
    follows), so that it is seen, and written after, as a deleted key."""
    latest = repo.latest_with_expiry(namespace, key)
    if latest is not None and _expired(latest, now):
        if not latest.is_deleted:
            repo.mark_deleted(namespace, key)
        repo.clear_expiry(namespace, key)
        latest = repo.latest_with_expiry(namespace, key)
    return latest


def _expired(row: Any, now: datetime) -> bool:
    return row.expires_at is not None and bool(row.expires_at <= now)


def _memory_dicts(rows: Sequence[Any]) -> list[MemoryDict]:
    return [memory_dict(r) for r in rows]


def _had_expiry(latest: Any | None) -> bool:
    return latest is not None and latest.expires_at is not None


def _expiry(ttl: timedelta | None, now: datetime) -> tuple[datetime, float] | None:
    return None if ttl is None else (expiry_after(now, ttl), ttl.total_seconds())


def _audit_task(session: orm.Session, task_id: str | None) -> str:
    """The task that audit rows name: ``task_id`` (which must exist) or the system task.

    Maintenance (consolidation, expiry, seeding) may run outside any task; its
    audit rows then name one well-known task, ``abathur-system``, created on
    first use with status ``completed`` so that no scheduler ever picks it up.
    """
    if task_id is not None:
        require(session, Task, task_id, "task")
        return task_id
    MemoryRepository(session).lock_key("\x00tasks", SYSTEM_TASK_ID)
    tasks = TaskRepository(session)
    if not tasks.exists(SYSTEM_TASK_ID):
        tasks.create(
            NewTask(
                prompt="abathur system maintenance",
                status="completed",
                created_by=SYSTEM_ACTOR,
            ),
            SYSTEM_TASK_ID,
        )
    return SYSTEM_TASK_ID


@lru_cache(maxsize=1024)
def _latest_ref(namespace: str, key: str) -> VersionRef:
    """``get_memory``'s validated reference to a key's latest version, for the
    keys read again and again: the model is immutable and depends only on the
    two strings; an invalid pair raises each time (exceptions are not cached)."""
    return validated(VersionRef, namespace=namespace, key=key, version=None)


class MemoryService:
    """Long-term memory. ``resolver`` serves the ``llm_based`` consolidation strategy.

    With an ``embedder`` every write stores the new version's embedding in the
    version's own transaction (computed before it begins; ``index=False`` on a
    write skips it) and ``search_memories(..., query=...)`` ranks by meaning.
    Vectors read for a query stay in a per-service cache of at most
    ``vector_cache_size`` vectors: versions are immutable, so none goes stale.
    """

    def __init__(
        self,
        db: Storage,
        resolver: Resolver | None = None,
        *,
        embedder: Embedder | None = None,
        vector_cache_size: int = DEFAULT_CACHE_VECTORS,
    ):
        if embedder is not None and not isinstance(embedder, Embedder):
            raise ValidationError("embedder must be an abathur.embeddings.Embedder")
        self._db = db
        self._resolver = resolver
        self.embedder = embedder
        self._vectors = VectorCache(vector_cache_size)
        self._vectors_lock = threading.Lock()
        # The stacked vectors of the last few query searches, by (model, dims,
        # root, memory type): reused while their candidate list is unchanged.
        self._stacked: dict[tuple[str, int, str, str | None], Stacked] = {}
        # What each stacked matrix was built from: row ids in order, their fields.
        self._stacked_from: dict[tuple[str, int, str, str | None], Embedded] = {}
        # The embedded fields of row ids KNOWN to have an embedding, by (model,
        # dims): embeddings are only ever inserted, so a positive answer is
        # never stale; ids without one are asked again each time (a reindex
        # may add it). At most as many ids as the vector cache holds vectors.
        self._embedded: dict[tuple[str, int], dict[int, tuple[str, ...]]] = {}

    def scoped(self, context: AccessContext) -> ScopedMemory:
        """A view of this service that enforces ``context``'s namespace access rules."""
        if not isinstance(context, AccessContext):
            raise ValidationError("scoped() takes an AccessContext")
        return ScopedMemory(self, context)

    # ------------------------------------------------------------ reads

    async def get_memory(
        self,
        namespace: str,
        key: str,
        version: int | None = None,
        *,
        refresh_ttl: bool = False,
    ) -> MemoryDict | None:
        """The current version of a live key, or with ``version`` that exact row
        (deleted or expired or not; its ``is_deleted`` says which). ``None``
        when absent; a key past its expiry is absent.

        ``refresh_ttl=True`` pushes the expiry of the key returned (if it has
        one) to now plus its TTL, without writing a version or an audit row.
        """
        if version is None and type(namespace) is str and type(key) is str:
            ref = _latest_ref(namespace, key)
        else:
            ref = validated(VersionRef, namespace=namespace, key=key, version=version)
        bool_arg(refresh_ttl, "refresh_ttl")
        now = clock.utcnow()

        def found(current: Any) -> MemoryDict | None:
            if current is None or current.is_deleted or _expired(current, now):
                return None
            return memory_dict(current)

        if ref.version is None and not refresh_ttl:
            # One statement (on PostgreSQL awaited without a greenlet: OneStatement).
            return await self._db.read(
                latest_with_expiry_statement(ref.namespace, ref.key, found), one_statement=True
            )

        def work(conn: Connection) -> MemoryDict | None:
            repo = MemoryRepository(conn)
            if ref.version is not None:
                row = repo.version(ref.namespace, ref.key, ref.version)
                return None if row is None else memory_dict(row)
            if refresh_ttl:
                repo.lock_key(ref.namespace, ref.key)
            current = repo.latest_with_expiry(ref.namespace, ref.key)
            if current is None or current.is_deleted or _expired(current, now):
                return None
            if refresh_ttl and current.ttl_seconds is not None:
                _refresh(repo, current, now)
            return memory_dict(current)

        if refresh_ttl and ref.version is None:
            return await self._db.write(work)
        return await self._db.read(work, one_statement=True)

    async def get_memory_history(self, namespace: str, key: str) -> list[MemoryDict]:
        """Every version of the key, ascending, deleted ones included; ``[]`` if unknown."""
        ref = validated(KeyRef, namespace=namespace, key=key)

        def work(conn: Connection) -> list[MemoryDict]:
            rows = MemoryRepository(conn).history(ref.namespace, ref.key)
            return [memory_dict(r) for r in rows]

        return await self._db.read(work, one_statement=True)

    async def search_memories(
        self,
        namespace_prefix: str,
        memory_type: str | None = None,
        limit: int = 50,
        *,
        filter: dict[str, Any] | None = None,
        offset: int = 0,
        refresh_ttl: bool = False,
        query: str | None = None,
    ) -> list[MemoryDict]:
        """The current version of every live key in the subtree of ``namespace_prefix``.

        Matching is by whole segments: ``user:alice`` finds ``user:alice`` and
        ``user:alice:prefs``, never ``user:alice2``; ``%``, ``_`` and ``\\`` are
        ordinary characters. A bare prefix (``user``) is accepted and means the
        whole ``user:`` tree; ``temp`` and unknown prefixes are rejected.
        Newest ``updated_at`` first, ties broken by row id (newest first), at
        most ``limit`` (1..1000) results after skipping ``offset``: pages
        neither repeat nor skip a key while nothing is written in between.
        Expired keys are left out.

        ``filter`` selects by the value's fields, evaluated in SQL:
        ``{"status": "open"}`` is equality, ``{"priority": {"$gte": 3}}`` uses
        one of ``$eq $ne $gt $gte $lt $lte $in``, a dotted name
        (``"author.name"``) reaches into nested objects, and every entry must
        hold. Comparison follows JSON types: a number never equals a string,
        ``$gt``/``$gte``/``$lt``/``$lte`` hold only between two numbers or two
        strings (compared by code point), ``$ne`` holds when the field is
        missing. Operands are JSON scalars (``$in``: a list of them); at most
        1,000 conditions (operators and ``$in`` options) in all. Anything
        else, an unknown operator or an empty field name is a ValidationError.

        ``refresh_ttl=True`` pushes the expiry of every key returned that has
        one to now plus its TTL, without writing a version or an audit row.

        With ``query`` (needs an embedder, else ConfigurationError) the same
        versions, after ``memory_type``, ``filter`` and expiry, are ranked by the
        cosine similarity of their embedding to the query's, best first, ties by
        row id descending, then paged by ``offset`` and ``limit``; each result
        has a ``score`` (-1..1). Versions without an embedding of the embedder's
        model are not returned (``reindex`` embeds them).
        """
        if query is not None:
            return await self._query_search(
                namespace_prefix,
                memory_type,
                limit,
                query,
                filter=filter,
                offset=offset,
                refresh_ttl=refresh_ttl,
            )
        search = validated(
            MemorySearch,
            namespace_prefix=namespace_prefix,
            memory_type=memory_type,
            limit=limit,
            offset=offset,
        )
        terms = parse_filter(filter)
        bool_arg(refresh_ttl, "refresh_ttl")
        now = clock.utcnow()
        if not refresh_ttl and not self._db.is_sqlite:
            # PostgreSQL: one call of the search function, awaited without a
            # greenlet (OneStatement), filtered or not.
            unit = search_statement(
                search.namespace_prefix,
                search.memory_type,
                search.limit,
                now=now,
                offset=search.offset,
                terms=terms,
                then=_memory_dicts,
            )
            return await self._db.read(unit, one_statement=True)

        def work(conn: Connection) -> list[MemoryDict]:
            repo = MemoryRepository(conn)
            found, ttls = repo.search(
                search.namespace_prefix,
                search.memory_type,
                search.limit,
                now=now,
                offset=search.offset,
                terms=terms,
            )
            if refresh_ttl:
                for memory, ttl in zip(found, ttls, strict=True):
                    if ttl is not None:
                        _refresh_key(repo, memory["namespace"], memory["key"], ttl, now)
            return found

        if refresh_ttl:
            return await self._db.write(work)
        return await self._db.read(work, one_statement=True)

    async def list_namespaces(
        self,
        prefix: str | None = None,
        *,
        suffix: str | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
        wildcard: str | None = None,
        min_depth: int | None = None,
    ) -> list[str]:
        """The distinct namespaces holding at least one live, unexpired memory, sorted.

        ``prefix`` (a namespace or a bare prefix such as ``user``) and
        ``suffix`` (one or more trailing segments) match whole segments, as
        search does: ``user:alice`` never matches ``user:alice2``. With
        ``wildcard`` (say ``"*"``), a segment of ``prefix`` or ``suffix`` that is
        exactly the wildcard matches any one segment (``user:*:prefs``).
        ``min_depth`` keeps the namespaces of at least that many segments.
        ``max_depth`` truncates each namespace to its first ``max_depth``
        segments and removes duplicates. Then ``offset`` results are skipped
        and at most ``limit`` (1..1000) returned. Sorted by code point (byte
        order).
        """
        listing = validated(
            NamespaceListing,
            prefix=prefix,
            suffix=suffix,
            max_depth=max_depth,
            limit=limit,
            offset=offset,
            wildcard=wildcard,
            min_depth=min_depth,
        )
        tail = None if listing.suffix is None else check_suffix(listing.suffix)
        head = None if listing.prefix is None else listing.prefix.split(":")
        root = listing.prefix
        wild = listing.wildcard
        if head is not None and wild is not None and wild in head:
            literal = head[: head.index(wild)]
            root = ":".join(literal) if literal else None
        else:
            head = None  # the walk's range is the whole condition
        now = clock.utcnow()
        # Without a wildcard prefix, a suffix or depth bounds every namespace
        # found is a result, so the walk stops once the page is complete;
        # otherwise it covers the range.
        simple = tail is None and head is None and listing.max_depth is None
        simple = simple and listing.min_depth is None
        stop = listing.offset + listing.limit if simple else None

        def work(conn: Connection) -> list[str]:
            return MemoryRepository(conn).namespaces(root, now, stop)

        found = await self._db.read(work, one_statement=True)
        if head is not None or tail is not None or listing.min_depth is not None:
            found = [
                ns
                for ns in found
                if _segments_match(ns.split(":"), head, tail, wild, listing.min_depth)
            ]
        if listing.max_depth is not None:
            found = sorted({":".join(ns.split(":")[: listing.max_depth]) for ns in found})
        return found[listing.offset : listing.offset + listing.limit]

    async def _query_search(
        self,
        namespace_prefix: str,
        memory_type: str | None,
        limit: int,
        query: str,
        *,
        filter: dict[str, Any] | None,
        offset: int,
        refresh_ttl: bool,
    ) -> list[MemoryDict]:
        """``search_memories(..., query=...)``: the exact ranking (``embeddings.ranking``).

        Candidates are the current live versions of the subtree, selected in
        SQL (``EmbeddingRepository.candidates``) by the same rules as the plain
        search (``MemoryRepository.read_rules``: the value ``filter`` and the
        key's expiry); ``offset`` and ``limit`` page the ranked list.
        """
        search = validated(
            MemorySearch,
            namespace_prefix=namespace_prefix,
            memory_type=memory_type,
            limit=limit,
            offset=offset,
        )
        terms = parse_filter(filter)
        bool_arg(refresh_ttl, "refresh_ttl")
        embedder = self._require_embedder("search_memories(query=...)")
        check_text(query, "query", max_bytes=None, empty=True)  # empty: embed_query's message
        target = await embedder.embed_query(query)
        model, dims = embedder.model, len(target)
        now = clock.utcnow()
        memo = (model, dims, search.namespace_prefix, search.memory_type)
        if not terms and not refresh_ttl and not self._db.is_sqlite:
            warm = await self._warm_query_search(memo, target, search.offset, search.limit, now)
            if warm is not None:
                return warm

        def work(conn: Connection) -> list[MemoryDict]:
            repo = EmbeddingRepository(conn)
            memory = MemoryRepository(conn)
            if terms:
                # A filter needs the values: the candidates come from SQL.
                conditions, params = memory.read_rules(terms, now)
                candidates = repo.candidates(
                    search.namespace_prefix,
                    search.memory_type,
                    model,
                    dims,
                    conditions=conditions,
                    params=params,
                )
                stacked = self._stack(repo, model, dims, candidates)
            else:
                stacked = self._live_stacked(repo, memo, now)
            ranked = stacked.rank(target, search.offset + search.limit)[search.offset :]
            rows = repo.versions([entry_id for entry_id, _ in ranked])
            if refresh_ttl:
                for entry_id, _ in ranked:
                    row = memory.latest_with_expiry(rows[entry_id].namespace, rows[entry_id].key)
                    if row is not None and row.ttl_seconds is not None:
                        _refresh(memory, row, now)
            return [{**memory_dict(rows[entry_id]), "score": score} for entry_id, score in ranked]

        if refresh_ttl:
            return await self._db.write(work)
        return await self._db.read(work)

    async def _warm_query_search(
        self,
        memo: tuple[str, int, str, str | None],
        target: Vector,
        offset: int,
        limit: int,
        now: datetime,
    ) -> list[MemoryDict] | None:
        """The unfiltered query search on PostgreSQL while the subtree's
        stacked vectors are kept and still its candidates: two one-statement
        units awaited without a greenlet (``OneStatement``), the subtree's
        live ids, then after ranking the rows of the best. None when the
        kept matrix does not serve (a cold cache, ids not known to have an
        embedding, a write in the subtree) or when a ranked version has been
        deleted in between: the caller runs the whole unit in one transaction.

        The answer is the one of the ids' snapshot: versions never change
        but for ``is_deleted`` (checked) and ``is_current`` (not returned).
        """
        stacked = await self._db.read(
            live_ids_statement(memo[2], memo[3], now, partial(self._kept_stacked, memo)),
            one_statement=True,
        )
        if stacked is None:
            return None
        ranked = stacked.rank(target, offset + limit)[offset:]
        if not ranked:
            return []
        rows = await self._db.read(
            versions_statement([entry_id for entry_id, _ in ranked], identity), one_statement=True
        )
        found = [rows.get(entry_id) for entry_id, _ in ranked]
        if any(row is None or row.is_deleted for row in found):
            return None
        return [
            {**memory_dict(row), "score": score}
            for row, (_, score) in zip(found, ranked, strict=True)
        ]

    def _kept_stacked(
        self, memo: tuple[str, int, str, str | None], ids: list[int]
    ) -> Stacked | None:
        """The kept stacked vectors of ``memo``'s subtree if ``ids``, its live
        ids, are all known to have an embedding and are the list they were
        built from (``_live_stacked``); None otherwise."""
        fields = self._known_fields(memo[0], memo[1], ids)
        if None in fields:
            return None
        return self._kept_from(memo, (ids, fields))

    def _known_fields(self, model: str, dims: int, ids: list[int]) -> list[tuple[str, ...] | None]:
        """The embedded fields of each of ``ids`` as remembered (None: not known)."""
        with self._vectors_lock:
            return list(map(self._embedded.get((model, dims), {}).get, ids))

    def _kept_from(
        self, memo: tuple[str, int, str, str | None], embedded: tuple[list[int], list[Any]]
    ) -> Stacked | None:
        """The kept stacked vectors of ``memo`` if they were built from
        ``embedded`` (ids and their fields; equal lists of mostly identical
        objects: a cheap comparison), else None."""
        with self._vectors_lock:
            stacked = self._stacked.get(memo)
            if stacked is not None and self._stacked_from.get(memo) == embedded:
                return stacked
        return None

    def _live_stacked(
        self,
        repo: EmbeddingRepository,
        memo: tuple[str, int, str, str | None],
        now: datetime,
    ) -> Stacked:
        """The stacked vectors of the unfiltered candidates of ``memo``'s subtree:
        the ids of its current live versions (an index-only scan) less those of
        expired keys, restricted to the ids with an embedding (known, else
        asked in one statement with their vectors); the kept matrix when that
        list is unchanged."""
        model, dims, root, memory_type = memo
        ids = repo.live_ids(root, memory_type, now)
        fields: list[Any] = self._known_fields(model, dims, ids)
        if None in fields:  # some ids not known to have an embedding: ask
            unknown = [i for i, f in zip(ids, fields, strict=True) if f is None]
            rows = repo.vectors(model, dims, unknown)
            self._remember(model, dims, rows)
            learned = self._learn(model, dims, rows)
            pairs = [
                (i, f if f is not None else learned.get(i))
                for i, f in zip(ids, fields, strict=True)
            ]
            ids = [i for i, f in pairs if f is not None]
            fields = [f for _, f in pairs if f is not None]
        embedded = (ids, fields)
        kept = self._kept_from(memo, embedded)
        if kept is not None:
            return kept
        candidates = [(i, field) for i, fs in zip(ids, fields, strict=True) for field in fs or ()]
        stacked = self._stack(repo, model, dims, candidates)
        self._keep_stacked(memo, stacked, embedded)
        return stacked

    def _learn(
        self, model: str, dims: int, rows: Sequence[tuple[int, str, Vector]]
    ) -> dict[int, tuple[str, ...]]:
        """The fields of the ids in ``rows`` (embeddings just read), remembered."""
        grouped: dict[int, list[str]] = {}
        for entry_id, field, _ in rows:
            grouped.setdefault(entry_id, []).append(field)
        learned = {entry_id: tuple(sorted(fs)) for entry_id, fs in grouped.items()}
        limit = self._vectors.max_vectors
        with self._vectors_lock:
            known = self._embedded.setdefault((model, dims), {})
            for entry_id, fs in learned.items():
                if limit == 0:
                    break
                if entry_id not in known and len(known) >= limit:
                    del known[next(iter(known))]
                known[entry_id] = fs
        return learned

    def _stack(
        self,
        repo: EmbeddingRepository,
        model: str,
        dims: int,
        candidates: list[tuple[int, str]],
    ) -> Stacked:
        """The candidates' vectors, from the cache or else read (and cached)."""
        known = self._cached(model, dims, candidates)
        missing = [entry_id for entry_id, field in candidates if (entry_id, field) not in known]
        if missing:
            known.update(self._remember(model, dims, repo.vectors(model, dims, missing)))
        vectors, norms = [], []
        for pair in candidates:
            vector, norm = known[pair]
            vectors.append(vector)
            norms.append(norm)
        return Stacked(candidates, vectors, norms)

    def _keep_stacked(
        self,
        memo: tuple[str, int, str, str | None],
        stacked: Stacked,
        embedded: Embedded,
    ) -> None:
        """Keep the stacked vectors of the last ``STACKED_SUBTREES`` searches (with
        the list they were built from), if together they stay within the
        vector cache's size."""
        limit = self._vectors.max_vectors
        with self._vectors_lock:
            self._stacked.pop(memo, None)
            self._stacked_from.pop(memo, None)
            if len(stacked.candidates) > limit:
                return
            self._stacked[memo] = stacked
            self._stacked_from[memo] = embedded
            while len(self._stacked) > STACKED_SUBTREES or (
                sum(len(s.candidates) for s in self._stacked.values()) > limit
            ):
                oldest = next(iter(self._stacked))
                del self._stacked[oldest]
                del self._stacked_from[oldest]

    def _cached(
        self, model: str, dims: int, candidates: Sequence[tuple[int, str]]
    ) -> dict[tuple[int, str], tuple[Vector, float]]:
        found = {}
        with self._vectors_lock:
            for entry_id, field in candidates:
                entry = self._vectors.get((model, dims, entry_id, field))
                if entry is not None:
                    found[(entry_id, field)] = entry
        return found

    def _remember(
        self, model: str, dims: int, rows: Sequence[tuple[int, str, Vector]]
    ) -> dict[tuple[int, str], tuple[Vector, float]]:
        with self._vectors_lock:
            return {
                (entry_id, field): self._vectors.put((model, dims, entry_id, field), vector)
                for entry_id, field, vector in rows
            }

    def _require_embedder(self, what: str) -> Embedder:
        if self.embedder is None:
            raise ConfigurationError(
                f"{what} needs an embedder: Database(url, embedder=...) or "
                "MemoryService(db, embedder=...)"
            )
        return self.embedder

    async def _embed(self, value: Any, index: bool | Sequence[str]) -> Embedding | None:
        """The embedding of a version about to be written, or None without an
        embedder or with ``index=False``; a list of field names embeds those
        fields instead of the embedder's. Runs before the unit of work: never
        while the writer lock is held. EmbeddingError when the embedder fails."""
        _check_index(index)
        if self.embedder is None or index is False:
            return None
        fields = None if index is True else tuple(index)
        return self.embedder.model, await self.embedder.embed_value(value, fields=fields)

    async def reindex(
        self,
        namespace_prefix: str | None = None,
        *,
        batch_size: int = DEFAULT_REINDEX_BATCH,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Embed the current live versions (of the subtree of ``namespace_prefix``,
        or of every namespace) that have no embedding of the embedder's model.

        After a model change, or for memories written without an embedder or
        with ``index=False``. Works in batches of ``batch_size`` versions, each
        embedded outside any transaction and stored in one; ``progress``, if
        given, is called with the running count after each batch. Versions of
        a value with none of the embedder's fields get no embedding. Returns
        the number of versions embedded.
        """
        embedder = self._require_embedder("reindex")
        root: str | None = None
        if namespace_prefix is not None:
            root = validated(MemorySearch, namespace_prefix=namespace_prefix).namespace_prefix
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_REINDEX_BATCH
        ):
            raise ValidationError(f"batch_size must be an integer in 1..{MAX_REINDEX_BATCH}")
        if progress is not None and not callable(progress):
            raise ValidationError("progress must be a callable taking the count so far")
        model = embedder.model
        after, done = 0, 0
        while True:
            batch = await self._db.read(
                partial(_lacking, root, model, embedder.dims, after, batch_size)
            )
            if not batch:
                return done
            embedded = await embedder.embed_values([value for _, value in batch])
            rows = [
                (entry_id, field, vector)
                for (entry_id, _), pairs in zip(batch, embedded, strict=True)
                for field, vector in pairs
            ]
            await self._db.write(partial(_insert_missing, model, rows))
            done += sum(1 for pairs in embedded if pairs)
            after = batch[-1][0]
            if progress is not None:
                progress(done)

    # ------------------------------------------------------------ writes

    async def add_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        memory_type: str,
        created_by: str,
        task_id: str,
        metadata: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        index: bool = True,
    ) -> int:
        """Version 1 of a new key (or ``max + 1`` re-creating a deleted or
        expired one); the row id. A live key raises AlreadyExistsError.

        ``ttl`` makes the key expire that long after this write (None: never).
        A live key raises AlreadyExistsError. With an embedder the version's
        embedding is stored with it, unless ``index=False``.
        """
        ttl = ttl_arg(ttl)
        new = validated(
            NewMemory,
            namespace=namespace,
            key=key,
            value=value,
            memory_type=memory_type,
            created_by=created_by,
            task_id=task_id,
            metadata=metadata,
        )
        embedding = await self._embed(new.value, index)
        row = await self._write(
            "create",
            task_id=new.task_id,
            namespace=new.namespace,
            key=new.key,
            value=new.value,
            memory_type=new.memory_type,
            metadata=new.metadata,
            by=new.created_by,
            ttl=ttl,
            embedding=embedding,
        )
        return int(row.id)

    async def update_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        updated_by: str,
        task_id: str,
        *,
        ttl: timedelta | None = None,
        index: bool = True,
    ) -> int:
        """A new version of a live key with ``value``; memory type, metadata,
        ``created_by`` and ``created_at`` carry forward. Returns the new row id.

        ``ttl`` makes the key expire that long after this write; without it the
        key no longer expires (the expiry belongs to the write that sets it).
        ``index`` as for ``add_memory``.
        """
        ttl = ttl_arg(ttl)
        change = validated(
            MemoryUpdate,
            namespace=namespace,
            key=key,
            value=value,
            updated_by=updated_by,
            task_id=task_id,
        )
        embedding = await self._embed(change.value, index)
        row = await self._write(
            "update",
            task_id=change.task_id,
            namespace=change.namespace,
            key=change.key,
            value=change.value,
            memory_type=None,
            metadata=None,
            by=change.updated_by,
            ttl=ttl,
            embedding=embedding,
        )
        return int(row.id)

    async def put_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        memory_type: str,
        *,
        by: str,
        task_id: str,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        index: bool | Sequence[str] = True,
    ) -> MemoryDict:
        """Write ``value`` whether or not the key exists (upsert); the version written.

        A new key gets version 1 (``memory_type``, ``metadata`` or ``{}``, ``by``
        as creator). A live key gets a new version by the ``update_memory``
        rules: its memory type, creator and creation time carry forward
        (``memory_type`` is then not used) and ``metadata`` replaces the
        current metadata only when given. A deleted or expired key comes back
        as ``max + 1``, as ``add_memory`` would write it. One transaction with
        one audit row (``create`` or ``update``). ``ttl`` as for
        ``update_memory``: the key expires that long after this write, or never.
        With an embedder the version's embedding is stored with it, unless
        ``index=False``; ``index`` as a list of field names (``"$"`` or dotted
        names) embeds those fields of this version instead of the embedder's.
        """
        ttl = ttl_arg(ttl)
        fields, text = put_fields(namespace, key, value, memory_type, by, task_id, metadata)
        namespace, key, value, memory_type, by, task_id, metadata = fields
        embedding = await self._embed(value, index)
        row = await self._write(
            "put",
            task_id=task_id,
            namespace=namespace,
            key=key,
            value=value,
            memory_type=memory_type,
            metadata=metadata,
            by=by,
            ttl=ttl,
            embedding=embedding,
            text=text,
        )
        return memory_dict(row)

    async def _write(
        self,
        rule: Literal["create", "update", "put"],
        *,
        task_id: str,
        namespace: str,
        key: str,
        value: Any,
        memory_type: str | None,
        metadata: dict[str, Any] | None,
        by: str,
        ttl: timedelta | None,
        embedding: Embedding | None,
        text: JSONText | None = None,
    ) -> MemoryVersion | MemoryEntry:
        """The unit of work of ``add_memory``, ``update_memory`` and
        ``put_memory`` (``_write_version``). On PostgreSQL it is one statement
        (``write_memory_statement``: the same rules in a database function, which also
        stores the version's embedding), sent in autocommit; ``text``, when
        given, is ``value``'s JSON text from its check (``check_json``), bound
        in its place there (the row read back is the same)."""
        if self._db.is_sqlite:
            return await self._db.write(
                partial(
                    _write_version,
                    rule=rule,
                    task_id=task_id,
                    namespace=namespace,
                    key=key,
                    value=value,
                    memory_type=memory_type,
                    metadata=metadata,
                    by=by,
                    ttl=ttl,
                    embedding=embedding,
                )
            )
        now = clock.utcnow()
        stored = None
        if embedding is not None:
            model, vectors = embedding
            stored = (model, [(field, to_blob(vector)) for field, vector in vectors])
        return await self._db.write(
            write_memory_statement(
                rule,
                task_id=task_id,
                namespace=namespace,
                key=key,
                value=value if text is None else text,
                memory_type=memory_type,
                metadata=metadata,
                by=by,
                now=now,
                expiry=_expiry(ttl, now),
                audit_extra=_ttl_data(ttl),
                embedding=stored,
            ),
            one_statement=True,
        )

    async def delete_memory(
        self,
        namespace: str,
        key: str,
        deleted_by: str,
        task_id: str,
        *,
        missing_ok: bool = False,
    ) -> None:
        """Soft delete: ``is_deleted`` on every version; nothing is removed.

        A missing or already deleted key raises NotFoundError, or with
        ``missing_ok=True`` is left as it is (nothing written, no audit row).
        """
        deletion = validated(
            MemoryDeletion, namespace=namespace, key=key, deleted_by=deleted_by, task_id=task_id
        )
        bool_arg(missing_ok, "missing_ok")

        def work(conn: Connection) -> None:
            repo, latest = _begin_write(
                conn, deletion.task_id, deletion.namespace, deletion.key, clock.utcnow()
            )
            if latest is None or latest.is_deleted:
                if missing_ok:
                    return
                raise NotFoundError(f"memory {deletion.namespace!r}/{deletion.key!r} not found")
            repo.mark_deleted(deletion.namespace, deletion.key)
            repo.set_expiry(deletion.namespace, deletion.key, None, had_expiry=_had_expiry(latest))
            _audit(
                conn,
                latest,
                task_id=deletion.task_id,
                operation="delete",
                action_type="memory_delete",
                deleted_by=deletion.deleted_by,
            )

        await self._db.write(work)

    async def restore_memory(
        self,
        namespace: str,
        key: str,
        version: int,
        restored_by: str,
        task_id: str,
        *,
        index: bool = True,
    ) -> int:
        """A new version holding the value, type and metadata of ``version``.

        Undo without rewriting history; on a deleted key it brings the key back.
        Audited as an ``update`` with action type ``memory_restore``. Returns
        the new row id. ``index`` as for ``add_memory``.
        """
        restore = validated(
            MemoryRestore,
            namespace=namespace,
            key=key,
            version=version,
            restored_by=restored_by,
            task_id=task_id,
        )
        _check_index(index)
        embedding = None
        if self.embedder is not None and index:
            # A version's value never changes: the one read now is the one restored.
            source_row = await self.get_memory(restore.namespace, restore.key, restore.version)
            if source_row is not None:
                embedding = await self._embed(source_row["value"], index)

        def work(conn: Connection) -> int:
            now = clock.utcnow()
            repo, latest = _begin_write(conn, restore.task_id, restore.namespace, restore.key, now)
            source = repo.version(restore.namespace, restore.key, restore.version)
            if source is None or latest is None:
                raise NotFoundError(
                    f"memory {restore.namespace!r}/{restore.key!r} has no version {restore.version}"
                )
            row = repo.insert(
                _version_after(
                    latest,
                    namespace=restore.namespace,
                    key=restore.key,
                    value=copy.deepcopy(source.value),
                    memory_type=source.memory_type,
                    metadata=copy.deepcopy(source.metadata_),
                    by=restore.restored_by,
                    now=now,
                )
            )
            _store_embedding(conn, row.id, embedding)
            _audit(
                conn,
                row,
                task_id=restore.task_id,
                operation="update",
                action_type="memory_restore",
                restored_from_version=restore.version,
                updated_by=restore.restored_by,
            )
            return row.id

        return await self._db.write(work)

    async def publish_memory(
        self,
        from_ns: str,
        to_ns: str,
        key: str,
        published_by: str,
        task_id: str,
        *,
        index: bool = True,
    ) -> int:
        """Copy the current version of a ``session:`` draft into ``user:`` or ``project:``.

        The target key gets a new version (version 1 if it never existed); the
        draft stays. Audited as ``publish``. Returns the new row id. ``index``
        as for ``add_memory`` (the draft's value is embedded before the
        transaction; if the draft changes meanwhile, the publish starts over).
        """
        publish = validated(
            MemoryPublish,
            from_namespace=from_ns,
            to_namespace=to_ns,
            key=key,
            published_by=published_by,
            task_id=task_id,
        )
        source_prefix = parse_namespace(publish.from_namespace)[0]
        target_prefix = parse_namespace(publish.to_namespace)[0]
        if source_prefix not in PUBLISH_SOURCES:
            raise ValidationError(
                f"publish copies from a session: namespace, not {publish.from_namespace!r}"
            )
        if target_prefix not in PUBLISH_TARGETS:
            raise ValidationError(
                f"publish copies into a user: or project: namespace, not {publish.to_namespace!r}"
            )

        _check_index(index)
        embedding: Embedding | None = None
        embedded_id: int | None = None

        def work(conn: Connection) -> int:
            now = clock.utcnow()
            repo, target = _begin_write(
                conn, publish.task_id, publish.to_namespace, publish.key, now
            )
            source = repo.latest_with_expiry(publish.from_namespace, publish.key)
            if source is None or source.is_deleted or _expired(source, now):
                raise NotFoundError(f"memory {publish.from_namespace!r}/{publish.key!r} not found")
            if indexing and source.id != embedded_id:
                raise _SourceChanged
            metadata = dict(source.metadata_ or {})
            metadata["published_from"] = {
                "namespace": publish.from_namespace,
                "id": source.id,
                "version": source.version,
            }
            row = repo.insert(
                _version_after(
                    target,
                    namespace=publish.to_namespace,
                    key=publish.key,
                    value=copy.deepcopy(source.value),
                    memory_type=source.memory_type,
                    metadata=metadata,
                    by=publish.published_by,
                    now=now,
                )
            )
            _store_embedding(conn, row.id, embedding)
            _audit(
                conn,
                row,
                task_id=publish.task_id,
                operation="publish",
                action_type="memory_publish",
                from_namespace=publish.from_namespace,
                from_version=source.version,
                published_by=publish.published_by,
            )
            return row.id

        indexing = self.embedder is not None and index
        if not indexing:
            return await self._db.write(work)
        for _attempt in range(PUBLISH_ATTEMPTS):
            draft = await self.get_memory(publish.from_namespace, publish.key)
            if draft is None:
                raise NotFoundError(f"memory {publish.from_namespace!r}/{publish.key!r} not found")
            embedding = await self._embed(draft["value"], index)
            embedded_id = draft["id"]
            try:
                return await self._db.write(work)
            except _SourceChanged:
                continue
        raise ConflictError(
            f"memory {publish.from_namespace!r}/{publish.key!r} changed during each of "
            f"{PUBLISH_ATTEMPTS} attempts to publish it"
        )

    async def put_memories(
        self, items: Sequence[dict[str, Any]], *, analyze: bool = True
    ) -> list[MemoryDict]:
        """``put_memory`` for many items in one transaction; the versions written, in order.

        Each item is a dict of ``put_memory``'s arguments by name (``namespace``,
        ``key``, ``value``, ``memory_type``, ``by``, ``task_id``; optionally
        ``metadata``, ``ttl``, ``index``). The result equals calling
        ``put_memory`` for each item in order (a key given several times gets
        consecutive versions), except that all are written at once with the
        same ``updated_at``: one audit row per item (``create`` or ``update``),
        all or nothing. Any invalid item is a ValidationError naming its index
        (``item 3: ...``) and nothing is written; a missing task is the
        NotFoundError ``put_memory`` gives. With an embedder every item's
        embedding is computed first, in one call of the embedder, before the
        transaction begins. The statements are set-based (a few per
        thousands of keys, see ``repositories.memory.latest_of_keys``):
        loading is many times faster than one ``put_memory`` per item. On
        SQLite a load that at least doubles ``memory_entries`` or ``audit``
        (1,000 rows or more) drops that table's non-unique secondary indexes
        for its writes and creates them again before it commits, in the same
        transaction (``repositories.memory.indexes_rebuilt``): the same
        schema, statistics and errors, built once instead of row by row.

        Once the load is committed, the planner's statistics of the tables it
        wrote are gathered again (ANALYZE; on PostgreSQL VACUUM (ANALYZE))
        when it was large next to what they counted (``refresh_statistics``);
        ``analyze=False`` leaves that to the caller, as ``memory import`` does
        to analyze once per doubling of its rows rather than after each batch.
        """
        bool_arg(analyze, "analyze")
        with _collector_paused():
            puts = bulk_puts(items)
        if not puts:
            return []
        for number, put in enumerate(puts):
            try:
                _check_index(put.index)
            except ValidationError as exc:
                raise ValidationError(f"item {number}: {exc}") from exc
        embeddings = await self._embed_many(puts)
        written = await self._db.write(partial(_put_many, puts, embeddings))
        if analyze:
            vectors = sum(len(e[1]) for e in embeddings if e is not None)
            await self._refresh(
                {
                    "memory_entries": len(written),
                    "audit": len(written),
                    "memory_embeddings": vectors,
                }
            )
        return written

    async def refresh_statistics(self, rows: int) -> list[str]:
        """Gather the planner's statistics (ANALYZE) of the tables a load of
        ``rows`` memories wrote, if it was large next to what they counted;
        the tables analyzed. On PostgreSQL they are vacuumed as well
        (``VACUUM (ANALYZE)``, outside any transaction), as autovacuum would
        do later: the pages loaded are marked all-visible, so index-only
        scans of them (a query search's live ids) read no table row.

        A table is analyzed when the load wrote at least ``ANALYZE_MIN_ROWS``
        rows into it and at least a tenth (PostgreSQL) or all (SQLite) of
        the rows its statistics last counted (a table never analyzed counts
        none; ``analyze_growth``): PostgreSQL's autovacuum analyzes only
        later, and SQLite never by itself, so the statements that plan with
        statistics would otherwise plan for the table as it was. The tables
        are memory_entries and audit (a row each per memory), and
        memory_embeddings (counted as ``rows`` too) when the service has an
        embedder. A failure is logged, not raised: the load
        is committed, and only the plans' freshness is at stake.
        """
        count_arg(rows, "rows", least=0)
        written = {"memory_entries": rows, "audit": rows}
        if self.embedder is not None:
            written["memory_embeddings"] = rows
        return await self._refresh(written)

    async def _refresh(self, written: dict[str, int]) -> list[str]:
        """``refresh_statistics`` by rows written per table."""
        written = {table: rows for table, rows in written.items() if rows >= ANALYZE_MIN_ROWS}
        if not written:
            return []
        growth = analyze_growth(self._db.is_sqlite)
        try:
            return await self._db.outside_transaction(partial(_analyze_grown, written, growth))
        except AbathurError as exc:
            LOG.warning("statistics not refreshed after a bulk load of %s: %s", written, exc)
            return []

    async def _embed_many(self, puts: Sequence[BulkPut]) -> list[Embedding | None]:
        """``_embed`` of every item, with one call of the embedder for them all."""
        if self.embedder is None:
            return [None] * len(puts)
        embedder = self.embedder
        texts = [
            None
            if put.index is False
            else embedder.texts(put.value, None if put.index is True else tuple(put.index))
            for put in puts
        ]
        flat = [text for found in texts if found for _, text in found]
        vectors = iter(await embedder.embed_texts(flat) if flat else [])
        return [
            None
            if found is None
            else (embedder.model, [(field, next(vectors)) for field, _ in found])
            for found in texts
        ]

    # ------------------------------------------------------------ consolidation

    async def consolidate_memories(
        self,
        namespace: str,
        consolidation_strategy: str = "llm_based",
        *,
        consolidated_by: str = SYSTEM_ACTOR,
        task_id: str | None = None,
        index: bool = True,
    ) -> int:
        """Resolve every key in the subtree of ``namespace`` that has several live versions.

        Each such key gets one new version with the consolidated value (its
        metadata records ``consolidated_from`` row ids and the strategy); the
        older live versions are marked superseded (``is_deleted``) and stay
        readable in the history. Strategies: ``latest_wins``; ``merge``, a deep
        merge of the versions oldest first; ``llm_based``, the resolver given to
        ``MemoryService(db, resolver=...)``. The resolver runs outside any
        transaction; if it raises or returns anything but a JSON object,
        nothing is written. A key changed meanwhile is left for the next run.
        Audit rows name ``task_id`` or, without one, the system task
        (see ``_audit_task``). Returns the number of keys consolidated.

        With an embedder (and ``index`` true) every strategy resolves the keys
        before the transaction, as ``llm_based`` does, so that the new
        versions' embeddings are computed outside it and stored with them.
        """
        if consolidation_strategy not in CONSOLIDATION_STRATEGIES:
            raise ValidationError(
                f"unknown consolidation strategy {brief_repr(consolidation_strategy)}; "
                f"use one of {', '.join(CONSOLIDATION_STRATEGIES)}"
            )
        request = validated(
            Consolidation,
            namespace=namespace,
            strategy=consolidation_strategy,
            consolidated_by=consolidated_by,
            task_id=task_id,
        )
        _check_index(index)
        resolved: dict[tuple[str, str], tuple[list[int], dict[str, Any]]] = {}
        embeddings: dict[tuple[str, str], Embedding | None] = {}
        beforehand = request.strategy == "llm_based" or (self.embedder is not None and index)
        if request.strategy == "llm_based" and self._resolver is None:
            raise ConfigurationError(
                "llm_based consolidation needs a resolver: MemoryService(db, resolver=...)"
            )
        if beforehand:
            for (ns, key), versions in (await self._conflicts(request.namespace)).items():
                if request.strategy == "llm_based":
                    assert self._resolver is not None
                    value = await self._resolver(copy.deepcopy(versions))
                    try:
                        json_object(value, f"resolver result for {ns!r}/{key!r}")
                    except ValueError as exc:
                        raise ValidationError(str(exc)) from exc
                else:
                    value = _consolidated_value(request.strategy, [v["value"] for v in versions])
                resolved[(ns, key)] = ([v["id"] for v in versions], value)
            # Every embedding before any write: a failure leaves nothing written.
            for ns_key, (_ids, value) in resolved.items():
                embeddings[ns_key] = await self._embed(value, index)

        def work(session: orm.Session) -> int:
            now = clock.utcnow()
            audit_task = _audit_task(session, request.task_id)
            repo = MemoryRepository(session)
            if beforehand:
                keys = sorted(resolved)
            else:
                keys = repo.keys_with_several_live_versions(request.namespace)
            count = 0
            for ns, key in keys:
                repo.lock_key(ns, key)
                _current(repo, ns, key, now)  # an expired key has no live versions left
                live = list(repo.live_versions(ns, key))
                if len(live) < 2:
                    continue
                ids = [r.id for r in live]
                if beforehand:
                    expected_ids, value = resolved[(ns, key)]
                    if ids != expected_ids:
                        continue
                else:
                    value = _consolidated_value(request.strategy, [r.value for r in live])
                latest = repo.latest(ns, key)
                assert latest is not None
                newest = live[-1]
                metadata = dict(newest.metadata_ or {})
                metadata["consolidated_from"] = ids
                metadata["consolidation_strategy"] = request.strategy
                row = repo.insert(
                    _version_after(
                        latest,  # live: the top version of a key with live versions
                        namespace=ns,
                        key=key,
                        value=value,
                        memory_type=newest.memory_type,
                        metadata=metadata,
                        by=request.consolidated_by,
                        now=now,
                    )
                )
                repo.mark_deleted(ns, key, below_version=row.version)
                _store_embedding(session, row.id, embeddings.get((ns, key)))
                _audit(
                    session,
                    row,
                    task_id=audit_task,
                    operation="consolidate",
                    action_type="memory_consolidate",
                    strategy=request.strategy,
                    consolidated_from=ids,
                    updated_by=request.consolidated_by,
                )
                count += 1
            return count

        return await self._db.run(work)

    async def _conflicts(self, root: str) -> dict[tuple[str, str], list[MemoryDict]]:
        def work(session: orm.Session) -> dict[tuple[str, str], list[MemoryDict]]:
            repo = MemoryRepository(session)
            found: dict[tuple[str, str], list[MemoryDict]] = {}
            for ns, key in repo.keys_with_several_live_versions(root):
                found[(ns, key)] = [memory_dict(r) for r in repo.live_versions(ns, key)]
            return found

        return await self._db.run(work, write=False)

    # ------------------------------------------------------------ retention

    async def expire_episodic(
        self,
        older_than: timedelta = timedelta(days=90),
        *,
        expired_by: str = SYSTEM_ACTOR,
        task_id: str | None = None,
    ) -> int:
        """Soft-delete episodic keys whose current version was written before
        ``now - older_than``. One ``delete`` audit row (action type
        ``memory_expire``) per key, naming ``task_id`` or the system task.
        Returns the number of keys expired."""
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValidationError("older_than must be a non-negative timedelta")
        text_arg(expired_by, "expired_by")
        if task_id is not None:
            task_id = task_id_arg(task_id)
        now = clock.utcnow()
        try:
            cutoff = now - older_than
        except OverflowError as exc:
            raise ValidationError(f"older_than={older_than} reaches before the year 1") from exc

        def work(session: orm.Session) -> int:
            audit_task = _audit_task(session, task_id)
            repo = MemoryRepository(session)
            count = 0
            for ns, key in repo.stale_current_versions("episodic", cutoff):
                repo.lock_key(ns, key)
                latest = _current(repo, ns, key, now)
                if (
                    latest is None
                    or latest.is_deleted
                    or latest.memory_type != "episodic"
                    or latest.updated_at >= cutoff
                ):
                    continue
                repo.mark_deleted(ns, key)
                repo.set_expiry(ns, key, None, had_expiry=_had_expiry(latest))
                _audit(
                    session,
                    latest,
                    task_id=audit_task,
                    operation="delete",
                    action_type="memory_expire",
                    deleted_by=expired_by,
                    older_than_seconds=older_than.total_seconds(),
                )
                count += 1
            return count

        return await self._db.run(work)

    async def sweep_expired(self, *, task_id: str | None = None) -> int:
        """Soft-delete every key whose expiry has passed; the number of keys.

        Expired keys are already invisible to reads; this makes them deleted
        keys in the table too, with one ``delete`` audit row each (action type
        ``memory_expire``) naming ``task_id`` or the system task. A key written
        meanwhile (so no longer expired) is left alone.
        """
        if task_id is not None:
            text_arg(task_id, "task_id")

        def work(session: orm.Session) -> int:
            now = clock.utcnow()
            audit_task = _audit_task(session, task_id)
            repo = MemoryRepository(session)
            count = 0
            for ns, key in repo.expired_keys(now):
                repo.lock_key(ns, key)
                latest = repo.latest_with_expiry(ns, key)
                if latest is None or not _expired(latest, now):
                    continue
                repo.clear_expiry(ns, key)
                if latest.is_deleted:
                    continue
                repo.mark_deleted(ns, key)
                _audit(
                    session,
                    latest,
                    task_id=audit_task,
                    operation="delete",
                    action_type="memory_expire",
                    deleted_by=SYSTEM_ACTOR,
                    expired_at=latest.expires_at.isoformat(),
                )
                count += 1
            return count

        return await self._db.run(work)

    async def seed_defaults(self, task_id: str | None = None) -> int:
        """Write the default ``app:abathur:*`` memories that are not live yet.

        Never run by ``Database.initialize``. Audit rows name ``task_id`` or,
        without one, the system task ``abathur-system`` (created on first use).
        Idempotent: returns how many entries were written (0 on a second run).
        """
        if task_id is not None:
            task_id = task_id_arg(task_id)
        embeddings = [await self._embed(value, True) for *_, value in DEFAULT_MEMORIES]

        def work(session: orm.Session) -> int:
            audit_task = _audit_task(session, task_id)
            repo = MemoryRepository(session)
            written = 0
            now = clock.utcnow()
            for (ns, key, memory_type, value), embedding in zip(
                DEFAULT_MEMORIES, embeddings, strict=True
            ):
                repo.lock_key(ns, key)
                latest = _current(repo, ns, key, now)
                if latest is not None and not latest.is_deleted:
                    continue
                row = repo.insert(
                    _version_after(
                        latest,
                        namespace=ns,
                        key=key,
                        value=copy.deepcopy(value),
                        memory_type=memory_type,
                        metadata={"seeded": True},
                        by=SYSTEM_ACTOR,
                        now=now,
                    )
                )
                _store_embedding(session, row.id, embedding)
                _audit(
                    session,
                    row,
                    task_id=audit_task,
                    operation="create",
                    action_type="memory_create",
                    created_by=SYSTEM_ACTOR,
                    memory_type=memory_type,
                )
                written += 1
            return written

        return await self._db.run(work)


def _write_version(
    conn: Connection,
    *,
    rule: Literal["create", "update", "put"],
    task_id: str,
    namespace: str,
    key: str,
    value: Any,
    memory_type: str | None,
    metadata: dict[str, Any] | None,
    by: str,
    ttl: timedelta | None,
    embedding: Embedding | None,
) -> MemoryEntry:
    """The unit of work of ``add_memory`` (``rule="create"``: the key must not
    be live), ``update_memory`` (``"update"``: it must be) and ``put_memory``
    (``"put"``: either). A live key gets a new version by the update rules:
    its memory type, creator and creation time carry forward and ``metadata``
    replaces the current metadata only when given. A new, deleted or expired
    key gets version ``max + 1`` (1 if never written) with ``memory_type`` and
    ``metadata`` or ``{}``. The key expires ``ttl`` after this write, or never.
    One audit row: ``update`` for a live key, ``create`` otherwise."""
    now = clock.utcnow()
    repo, latest = _begin_write(conn, task_id, namespace, key, now)
    live = latest is not None and not latest.is_deleted
    if rule == "create" and live:
        assert latest is not None
        raise memory_exists(namespace, key, latest.version)
    if rule == "update" and not live:
        raise memory_not_found(namespace, key)
    if live:
        assert latest is not None
        memory_type_written = latest.memory_type
        kept = metadata if metadata is not None else latest.metadata_
    else:
        assert memory_type is not None
        memory_type_written = memory_type
        kept = metadata if metadata is not None else {}
    row = repo.insert(
        _version_after(
            latest,
            namespace=namespace,
            key=key,
            value=value,
            memory_type=memory_type_written,
            metadata=copy.deepcopy(kept),
            by=by,
            now=now,
        )
    )
    repo.set_expiry(namespace, key, _expiry(ttl, now), had_expiry=_had_expiry(latest))
    _store_embedding(conn, row.id, embedding)
    if live:
        _audit(
            conn,
            row,
            task_id=task_id,
            operation="update",
            action_type="memory_update",
            updated_by=by,
            **_ttl_data(ttl),
        )
    else:
        _audit(
            conn,
            row,
            task_id=task_id,
            operation="create",
            action_type="memory_create",
            created_by=by,
            memory_type=row.memory_type,
            **_ttl_data(ttl),
        )
    return row


def _segments_match(
    segments: list[str],
    head: list[str] | None,
    tail: list[str] | None,
    wildcard: str | None,
    min_depth: int | None,
) -> bool:
    """Whether a namespace's segments start with ``head`` and end with
    ``tail`` (a ``wildcard`` segment matching any one) and number at least
    ``min_depth``."""

    def same(pattern: list[str], part: list[str]) -> bool:
        return all(p in (s, wildcard) for p, s in zip(pattern, part, strict=True))

    if min_depth is not None and len(segments) < min_depth:
        return False
    if head is not None and (len(segments) < len(head) or not same(head, segments[: len(head)])):
        return False
    return tail is None or (
        len(segments) >= len(tail) and same(tail, segments[len(segments) - len(tail) :])
    )


def _ttl_data(ttl: timedelta | None) -> dict[str, Any]:
    """What an audit row records of a write's TTL."""
    return {} if ttl is None else {"ttl_seconds": ttl.total_seconds()}


def _refresh(repo: MemoryRepository, row: Any, now: datetime) -> None:
    """Push the expiry of ``row``'s key to ``now`` plus its TTL (refresh_ttl)."""
    _refresh_key(repo, row.namespace, row.key, row.ttl_seconds, now)


def _refresh_key(
    repo: MemoryRepository, namespace: str, key: str, ttl_seconds: float, now: datetime
) -> None:
    """Push the expiry of a key whose TTL is ``ttl_seconds`` to ``now`` plus it,
    or to the latest datetime if that reaches past the year 9999 (a TTL valid
    when it was written: the read refreshing it must not fail)."""
    try:
        expires_at = now + timedelta(seconds=ttl_seconds)
    except OverflowError:
        expires_at = datetime.max.replace(tzinfo=UTC)
    repo.refresh_expiry(namespace, key, ttl_seconds, now, expires_at)


def _consolidated_value(strategy: str, values: list[Any]) -> Any:
    """What ``merge`` and ``latest_wins`` make of a key's live values, oldest first."""
    if strategy == "merge":
        merged: dict[str, Any] = {}
        for value in values:
            merged = deep_merge(merged, value)
        return merged
    return copy.deepcopy(values[-1])


def _version_after(
    latest: MemoryVersion | MemoryEntry | None,
    *,
    namespace: str,
    key: str,
    value: Any,
    memory_type: str,
    metadata: dict[str, Any],
    by: str,
    now: datetime,
) -> MemoryEntry:
    """The next version of a key, written by ``by`` at ``now``: numbered after
    ``latest`` (1 for a key never written). A live key keeps its creator and
    creation time; a new or deleted one starts them afresh."""
    live = latest is not None and not latest.is_deleted
    return MemoryEntry(
        namespace=namespace,
        key=key,
        value=value,
        memory_type=memory_type,
        version=1 if latest is None else latest.version + 1,
        is_deleted=False,
        metadata_=metadata,
        created_by=latest.created_by if live and latest else by,
        updated_by=by,
        created_at=latest.created_at if live and latest else now,
        updated_at=now,
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a bulk write builds its
    rows (and back on after, unless something else had turned it off).

    A batch allocates several containers per item, all alive until it ends:
    each allocation threshold crossed runs a collection that finds no
    garbage, and the survivors make the full collections walk the whole heap.
    That cost a quarter of the write's time (measured). Nothing these
    functions allocate is cyclic garbage; reference counting frees it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _put_many(
    puts: Sequence[BulkPut], embeddings: Sequence[Embedding | None], conn: Connection
) -> list[MemoryDict]:
    """``_write_many`` with the collector paused and, on SQLite, a page cache
    large enough for the batch's pages (``bulk_page_cache``)."""
    with _collector_paused(), bulk_page_cache(conn):
        return _write_many(puts, embeddings, conn)


def _write_many(
    puts: Sequence[BulkPut], embeddings: Sequence[Embedding | None], conn: Connection
) -> list[MemoryDict]:
    """``put_memories``' unit of work: ``put_memory``'s rules applied to every
    item in order, with a few statements for all of them.

    The tasks must exist; the keys are locked (``lock_keys``) and their newest
    versions read (``latest_of_keys``); a key past its expiry is first made a
    deleted key, as ``_current`` does. Then each item's version follows from
    its key's state (read, or left by the item before it), exactly as
    ``put_memory`` computes it; the keys' current rows lose ``is_current`` and
    the last new version of each key gains it; versions, embeddings and audit
    rows are written with one executemany each per ``WRITE_CHUNK`` items, in
    item order, and the expiries after them (on SQLite, with the secondary
    indexes of a table the whole batch at least doubles rebuilt after,
    ``indexes_rebuilt``).
    """
    now = clock.utcnow()
    for task_id in dict.fromkeys(put.task_id for put in puts):
        require(conn, Task, task_id, "task")
    # Each key's last item; its keys in the order of their first items.
    last = {(put.namespace, put.key): number for number, put in enumerate(puts)}
    keys = list(last)
    lock_keys(conn, keys)
    found = latest_of_keys(conn, keys)
    repo = MemoryRepository(conn)
    for ns_key, latest in list(found.items()):
        if _expired(latest, now):
            found[ns_key] = _current(repo, *ns_key, now)
    heads: dict[tuple[str, str], _Head] = {}
    for ns_key, row in found.items():
        live = not row.is_deleted
        if live:  # its texts go into the new versions: the NUL guard's check
            refuse_nul((row.memory_type, row.created_by))
        heads[ns_key] = (
            row.version,
            live,
            row.memory_type,
            row.metadata_,
            row.created_by,
            row.created_at,
        )
    expiries: dict[tuple[str, str], tuple[datetime, float] | None] = {}
    written: list[MemoryDict] = []
    model = next((e[0] for e in embeddings if e is not None), None)
    with indexes_rebuilt(conn, len(puts)):
        unset_current(conn, list(found))
        # A chunk at a time: the rows of one chunk, built, bound and written
        # while they are fresh in the processor's caches, then dropped.
        for first in range(0, len(puts), WRITE_CHUNK):
            chunk = puts[first : first + WRITE_CHUNK]
            rows, results, audits = _chunk_rows(chunk, first, heads, last, expiries, now)
            # Every text of these rows was checked for NUL: the items' by
            # ``bulk_puts``, the stored ones' above, the JSON by ``dumps``.
            ids = insert_versions(conn, rows, nul_checked=True)
            for row_id, result in zip(ids, results, strict=True):
                result["id"] = row_id
            vectors = [
                (row_id, e[1])
                for row_id, e in zip(ids, embeddings[first : first + len(ids)], strict=True)
                if e is not None
            ]
            if model is not None and vectors:
                EmbeddingRepository(conn).insert_many(model, vectors)
            task_ids, actions, data, operations, namespaces = zip(*audits, strict=True)
            AuditRepository(conn).append_many(
                {
                    "task_id": task_ids,
                    "action_type": actions,
                    "action_data": data,
                    "result": ["success"] * len(ids),
                    "memory_operation_type": operations,
                    "memory_namespace": namespaces,
                    "memory_entry_id": ids,
                },
                nul_checked=True,  # as the versions
            )
            written += results
        _set_expiries(conn, found, expiries)
    return written


# Items of ``put_memories`` built and written per round of its unit of work:
# in one call of 200,000 the Python per item (the rows, their bind
# values) cost ~4 us more than in calls of 10,000, all of their rows alive at
# once (docs/design_decisions.md, "hA: put_memories' bulk load").
WRITE_CHUNK = 10_000


def _chunk_rows(
    chunk: Sequence[BulkPut],
    first: int,
    heads: dict[tuple[str, str], _Head],
    last: dict[tuple[str, str], int],
    expiries: dict[tuple[str, str], tuple[datetime, float] | None],
    now: datetime,
) -> tuple[list[NewVersion], list[MemoryDict], list[tuple[Any, ...]]]:
    """The new versions (``insert_versions``' tuples), results and audit rows
    (task id, action type, action data, operation, namespace) of the items of
    ``chunk`` (``first`` the number of its first item), each key's state in
    ``heads`` and its expiry in ``expiries`` carried to the next."""
    rows: list[NewVersion] = []
    audits: list[tuple[Any, ...]] = []
    results: list[MemoryDict] = []
    for number, put in enumerate(chunk, first):
        namespace, key, value, text, memory_type, by, task_id, given, ttl, _index = put
        ns_key = (namespace, key)
        head = heads.get(ns_key)
        if head is None:
            version, live = 1, False
        else:
            version, live, stored_type, stored_metadata, stored_by, stored_at = head
            version += 1
        if live:
            memory_type = stored_type
            kept = given if given is not None else stored_metadata
            created_by, created_at = stored_by, stored_at
        else:
            kept = given if given is not None else {}
            created_by, created_at = by, now
        metadata: dict[str, Any] = copy.deepcopy(kept) if kept else {}
        heads[ns_key] = (version, True, memory_type, metadata, created_by, created_at)
        if ttl is None:
            expiries[ns_key] = None
        else:
            try:
                expiries[ns_key] = _expiry(ttl, now)
            except ValidationError as exc:
                raise ValidationError(f"item {number}: {exc}") from exc
        rows.append(
            (
                namespace,
                key,
                version,
                text,
                memory_type,
                # One shared object for every empty one: processed once.
                metadata or _NO_METADATA,
                created_by,
                by,
                created_at,
                now,
                last[ns_key] == number,
            )
        )
        results.append(
            {
                "id": 0,
                "namespace": namespace,
                "key": key,
                "value": value,
                "memory_type": memory_type,
                "version": version,
                "is_deleted": False,
                "metadata": metadata,
                "created_by": created_by,
                "updated_by": by,
                "created_at": created_at,
                "updated_at": now,
            }
        )
        # The action data ``_write_version`` records through ``_audit``.
        if live:
            data = {"key": key, "version": version, "updated_by": by}
            audits.append((task_id, "memory_update", data, "update", namespace))
        else:
            data = {"key": key, "version": version, "created_by": by, "memory_type": memory_type}
            audits.append((task_id, "memory_create", data, "create", namespace))
        if ttl is not None:
            data.update(_ttl_data(ttl))
    return rows, results, audits


_NO_METADATA: dict[str, Any] = {}  # never handed out


def analyze_growth(sqlite: bool) -> float:
    """The share of the rows its statistics counted that a load must write
    into a table for ``refresh_statistics`` to analyze it."""
    return ANALYZE_GROWTH_SQLITE if sqlite else ANALYZE_GROWTH_POSTGRES


def _analyze_grown(written: dict[str, int], growth: float, conn: Connection) -> list[str]:
    """ANALYZE each table of ``written`` whose rows written reach ``growth``
    times the rows its statistics counted; those tables."""
    counted = statistics.counted_rows(conn, list(written))
    grown = [
        table for table, rows in written.items() if rows >= growth * (counted.get(table) or 0.0)
    ]
    statistics.analyze(conn, grown)
    return grown


# What the next version of a key follows from, its newest version's: version,
# live (not deleted), memory_type, metadata, created_by, created_at. A plain
# tuple: one is made per item.
_Head = tuple[int, bool, str, Any, "str | None", datetime]


def _set_expiries(
    conn: Connection,
    found: dict[tuple[str, str], Any],
    expiries: dict[tuple[str, str], tuple[datetime, float] | None],
) -> None:
    """Each key's expiry as its last write in the batch leaves it (each write
    sets or clears it, so the last decides), from what it was before."""
    cleared, changed, added = [], [], []
    for ns_key, expiry in expiries.items():
        had = _had_expiry(found.get(ns_key))
        if expiry is None:
            if had:
                cleared.append(ns_key)
        elif had:
            changed.append((*ns_key, *expiry))
        else:
            added.append((*ns_key, *expiry))
    set_expiries(conn, cleared=cleared, changed=changed, added=added)


class ScopedMemory:
    """MemoryService seen through an AccessContext: reads and writes outside the
    context's namespaces raise AccessDeniedError (a PermissionError) naming the rule."""

    def __init__(self, service: MemoryService, context: AccessContext):
        self._service = service
        self.context = context

    # ------------------------------------------------------------ rules

    def _rule(self, namespace: str, write: bool) -> str:
        ctx = self.context
        prefix = namespace.split(":", 1)[0]
        verb = "write" if write else "read"
        if prefix == "session":
            return f"a scope may {verb} only its own session's namespace session:{ctx.session_id}"
        if prefix == "user":
            return f"a scope may {verb} only its own user's namespace user:{ctx.user_id}"
        if prefix == "app":
            if write and not ctx.can_write_app:
                return "writing app: namespaces needs can_write_app"
            return f"a scope may {verb} only its own application's namespace app:{ctx.app_name}"
        if prefix == "project":
            if ctx.project_id is None:
                return "this scope has no project, so no project: namespace is accessible"
            if write and not ctx.can_write_project:
                return "writing project: namespaces needs can_write_project"
            return f"a scope may {verb} only its own project's namespace project:{ctx.project_id}"
        return f"{namespace!r} is outside every scope"

    def _allow(self, namespace: Any, *, write: bool) -> None:
        if not isinstance(namespace, str):
            return  # the service rejects it with a ValidationError
        roots = self.context.writable_roots() if write else self.context.readable_roots()
        if not any(is_in_subtree(namespace, root) for root in roots):
            verb = "write" if write else "read"
            raise AccessDeniedError(
                f"access denied: cannot {verb} {namespace!r}: {self._rule(namespace, write)}"
            )

    # ------------------------------------------------------------ reads

    async def get_memory(
        self,
        namespace: str,
        key: str,
        version: int | None = None,
        *,
        refresh_ttl: bool = False,
    ) -> MemoryDict | None:
        """As ``MemoryService.get_memory``; the namespace must be readable in this
        scope, and writable with ``refresh_ttl=True`` (it moves the key's expiry)."""
        self._allow(namespace, write=False)
        if refresh_ttl:
            self._allow(namespace, write=True)
        return await self._service.get_memory(namespace, key, version, refresh_ttl=refresh_ttl)

    async def get_memory_history(self, namespace: str, key: str) -> list[MemoryDict]:
        """As ``MemoryService.get_memory_history``; the namespace must be readable in this scope."""
        self._allow(namespace, write=False)
        return await self._service.get_memory_history(namespace, key)

    async def search_memories(
        self,
        namespace_prefix: str,
        memory_type: str | None = None,
        limit: int = 50,
        *,
        filter: dict[str, Any] | None = None,
        offset: int = 0,
        refresh_ttl: bool = False,
        query: str | None = None,
    ) -> list[MemoryDict]:
        """As ``MemoryService.search_memories`` (a query search too); the prefix
        must lie inside a readable scope, and a writable one with ``refresh_ttl=True``."""
        self._allow(namespace_prefix, write=False)
        if refresh_ttl:
            self._allow(namespace_prefix, write=True)
        return await self._service.search_memories(
            namespace_prefix,
            memory_type,
            limit,
            filter=filter,
            offset=offset,
            refresh_ttl=refresh_ttl,
            query=query,
        )

    async def list_namespaces(
        self,
        prefix: str | None = None,
        *,
        suffix: str | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[str]:
        """As ``MemoryService.list_namespaces``, within this scope: ``prefix``
        must lie inside a readable scope; without one, the namespaces of every
        readable scope are listed together (sorted, truncated and paged as one)."""
        if prefix is not None:
            self._allow(prefix, write=False)
            return await self._service.list_namespaces(
                prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
            )
        # Validate the paging arguments once, as the service would.
        validated(NamespaceListing, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset)
        found: set[str] = set()
        for root in self.context.readable_roots():
            page = 0
            while True:
                chunk = await self._service.list_namespaces(
                    root,
                    suffix=suffix,
                    max_depth=max_depth,
                    limit=MAX_NAMESPACE_LIST_LIMIT,
                    offset=page,
                )
                found.update(chunk)
                if len(chunk) < MAX_NAMESPACE_LIST_LIMIT:
                    break
                page += len(chunk)
        return sorted(found)[offset : offset + limit]

    # ------------------------------------------------------------ writes

    async def add_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        memory_type: str,
        created_by: str,
        task_id: str,
        metadata: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        index: bool = True,
    ) -> int:
        """As ``MemoryService.add_memory``; the namespace must be writable in this scope."""
        self._allow(namespace, write=True)
        return await self._service.add_memory(
            namespace, key, value, memory_type, created_by, task_id, metadata, ttl=ttl, index=index
        )

    async def update_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        updated_by: str,
        task_id: str,
        *,
        ttl: timedelta | None = None,
        index: bool = True,
    ) -> int:
        """As ``MemoryService.update_memory``; the namespace must be writable in this scope."""
        self._allow(namespace, write=True)
        return await self._service.update_memory(
            namespace, key, value, updated_by, task_id, ttl=ttl, index=index
        )

    async def put_memory(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        memory_type: str,
        *,
        by: str,
        task_id: str,
        metadata: dict[str, Any] | None = None,
        ttl: timedelta | None = None,
        index: bool | Sequence[str] = True,
    ) -> MemoryDict:
        """As ``MemoryService.put_memory``; the namespace must be writable in this scope."""
        self._allow(namespace, write=True)
        return await self._service.put_memory(
            namespace,
            key,
            value,
            memory_type,
            by=by,
            task_id=task_id,
            metadata=metadata,
            ttl=ttl,
            index=index,
        )

    async def put_memories(
        self, items: Sequence[dict[str, Any]], *, analyze: bool = True
    ) -> list[MemoryDict]:
        """As ``MemoryService.put_memories``; every item's namespace must be
        writable in this scope (else AccessDeniedError naming the item, and
        nothing is written)."""
        if isinstance(items, list | tuple):
            allowed: set[str] = set()
            for number, item in enumerate(items):
                namespace = item.get("namespace") if isinstance(item, dict) else None
                if not isinstance(namespace, str) or namespace in allowed:
                    continue
                try:
                    self._allow(namespace, write=True)
                except AccessDeniedError as exc:
                    raise AccessDeniedError(f"item {number}: {exc}") from None
                allowed.add(namespace)
        return await self._service.put_memories(items, analyze=analyze)

    async def delete_memory(
        self,
        namespace: str,
        key: str,
        deleted_by: str,
        task_id: str,
        *,
        missing_ok: bool = False,
    ) -> None:
        """As ``MemoryService.delete_memory``; the namespace must be writable in this scope."""
        self._allow(namespace, write=True)
        await self._service.delete_memory(
            namespace, key, deleted_by, task_id, missing_ok=missing_ok
        )

    async def restore_memory(
        self,
        namespace: str,
        key: str,
        version: int,
        restored_by: str,
        task_id: str,
        *,
        index: bool = True,
    ) -> int:
        """As ``MemoryService.restore_memory``; the namespace must be writable in this scope."""
        self._allow(namespace, write=True)
        return await self._service.restore_memory(
            namespace, key, version, restored_by, task_id, index=index
        )

    async def publish_memory(
        self,
        from_ns: str,
        to_ns: str,
        key: str,
        published_by: str,
        task_id: str,
        *,
        index: bool = True,
    ) -> int:
        """As ``MemoryService.publish_memory``; ``from_ns`` must be readable and
        ``to_ns`` writable in this scope."""
        self._allow(from_ns, write=False)
        self._allow(to_ns, write=True)
        return await self._service.publish_memory(
            from_ns, to_ns, key, published_by, task_id, index=index
        )

    async def consolidate_memories(
        self,
        namespace: str,
        consolidation_strategy: str = "llm_based",
        *,
        consolidated_by: str = SYSTEM_ACTOR,
        task_id: str | None = None,
        index: bool = True,
    ) -> int:
        """As ``MemoryService.consolidate_memories``; the namespace must be
        writable in this scope."""
        self._allow(namespace, write=True)
        return await self._service.consolidate_memories(
            namespace,
            consolidation_strategy,
            consolidated_by=consolidated_by,
            task_id=task_id,
            index=index,
        )
