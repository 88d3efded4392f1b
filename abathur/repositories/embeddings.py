"""EmbeddingRepository: the SQL of memory_embeddings.

Every statement is served by an index (``tests/repositories/test_embedding_query_plans.py``):

- a subtree's candidates (current live versions with an embedding of the
  model and dims) for a filtered search: one namespace range over
  memory_entries (the current-live ``idx_memory_namespace_prefix``, or
  another index leading with the namespace or (memory_type, namespace)),
  joined to its embeddings through the primary key (memory_entry_id, model,
  dims, field);
- without a filter, the ids of a subtree's current live versions
  (``live_ids``: two ranges of ``idx_memory_namespace_prefix``, index only)
  and of its expired keys (``expired_ids``: memory_expiry's primary key
  range, then each key's current row);
- vectors of given versions, and the rows of the best-ranked versions: primary
  keys (PostgreSQL's warm search: one `id = ANY(bigint array)`, ``versions_statement``);
- versions lacking an embedding (``reindex``): memory_entries by id from a
  keyset cursor (whole database) or the namespace range (a subtree), with a
  primary-key probe here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    BigInteger,
    Select,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnElement

from abathur.db.sqlite.prepared import Executor, OneStatement, Prepared
from abathur.domain.namespaces import subtree_bounds
from abathur.embeddings.embedder import Vector
from abathur.repositories.base import dialect_name
from abathur.repositories.memory import CURRENT_LIVE, VERSION_FIELDS, MemoryVersion
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import MemoryEmbedding, MemoryEntry, MemoryExpiry

T = TypeVar("T")
E = MemoryEmbedding
# Statements that list ids (IN) run through SQLAlchemy, in chunks of this many.
IN_CHUNK = 500

INSERT = Prepared(insert(MemoryEmbedding))


_CANDIDATES = (
    select(MemoryEntry.id, E.field)
    .join(
        E,
        and_(
            E.memory_entry_id == MemoryEntry.id,
            E.model == bindparam("model"),
            E.dims == bindparam("dims"),
        ),
    )
    .where(in_subtree(MemoryEntry.namespace), CURRENT_LIVE)
)
CANDIDATES_ALL = Prepared(_CANDIDATES)
CANDIDATES_OF_TYPE = Prepared(
    _CANDIDATES.where(MemoryEntry.memory_type == bindparam("memory_type"))
)

# The warm query search's candidates without a filter (``live_ids``): the ids
# alone, from the current-live namespace index (or the memory type's), with no
# row read; which of them have an embedding the service mostly knows already.
# The root and the range of its descendants are two arms of a UNION ALL (they
# never overlap): each an index-only range, where one OR would read every row.
_LIVE = (CURRENT_LIVE,)
_ROOT_IDS = select(MemoryEntry.id).where(MemoryEntry.namespace == bindparam("root"), *_LIVE)
_BELOW_IDS = select(MemoryEntry.id).where(
    MemoryEntry.namespace >= bindparam("lower"), MemoryEntry.namespace < bindparam("upper"), *_LIVE
)
_OF_TYPE = MemoryEntry.memory_type == bindparam("memory_type")
LIVE_IDS_ALL = Prepared(union_all(_ROOT_IDS, _BELOW_IDS))
LIVE_IDS_OF_TYPE = Prepared(union_all(_ROOT_IDS.where(_OF_TYPE), _BELOW_IDS.where(_OF_TYPE)))


# The current live versions of a subtree whose key has expired: the keys of the
# subtree's expired rows (memory_expiry's primary key range), each looked up
# by its key (the row value IN keeps SQLite from scanning memory_entries).
EXPIRED_IDS = Prepared(
    select(MemoryEntry.id).where(
        tuple_(MemoryEntry.namespace, MemoryEntry.key).in_(
            select(MemoryExpiry.namespace, MemoryExpiry.key).where(
                in_subtree(MemoryExpiry.namespace),
                MemoryExpiry.expires_at <= bindparam("now"),
            )
        ),
        CURRENT_LIVE,
    )
)


def _both_arrays(live: Any) -> Select[Any]:
    # PostgreSQL: the live ids and the expired ids as two arrays of one row (one
    # round trip; asyncpg decodes an array many times faster than as many rows).
    live_ids, expired = live.subquery(), EXPIRED_IDS.statement.subquery()  # type: ignore[attr-defined]
    return select(
        select(func.array_agg(live_ids.c.id)).scalar_subquery(),
        select(func.array_agg(expired.c.id)).scalar_subquery(),
    )


PG_LIVE_IDS_ALL = _both_arrays(LIVE_IDS_ALL.statement)
PG_LIVE_IDS_OF_TYPE = _both_arrays(LIVE_IDS_OF_TYPE.statement)
# The same two statements as one-statement units (``live_ids_statement``),
# and the rows of given ids in one statement (``versions_statement``): a
# bigint array bound once, the primary key probed per element.
_PG_LIVE_IDS = {False: Prepared(PG_LIVE_IDS_ALL), True: Prepared(PG_LIVE_IDS_OF_TYPE)}
PG_VERSIONS = Prepared(
    select(*VERSION_FIELDS).where(MemoryEntry.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
)


def _live_ids_params(
    bound: dict[str, Any], memory_type: str | None, now: datetime
) -> dict[str, Any]:
    bound = {**bound, "now": now}
    if memory_type is not None:
        bound["memory_type"] = memory_type
    return bound


def _live_less_expired(live: Sequence[int] | None, expired: Sequence[int] | None) -> list[int]:
    """The live ids less the expired ones, ascending."""
    ids, gone = list(live or ()), set(expired or ())
    if gone:
        ids = [entry_id for entry_id in ids if entry_id not in gone]
    ids.sort()
    return ids


def live_ids_statement(
    root: str, memory_type: str | None, now: datetime, then: Callable[[list[int]], T]
) -> OneStatement[T]:
    """``EmbeddingRepository.live_ids`` on PostgreSQL as a one-statement unit
    of work (``OneStatement``): ``then`` of the ids."""
    bound = _live_ids_params(subtree_bounds(root), memory_type, now)

    def ids(row: Any) -> T:
        return then(_live_less_expired(row[0], row[1]))

    return OneStatement(_PG_LIVE_IDS[memory_type is not None], bound, ids)


def versions_statement(
    ids: Sequence[int], then: Callable[[dict[int, MemoryVersion]], T]
) -> OneStatement[T]:
    """``EmbeddingRepository.versions`` on PostgreSQL as a one-statement unit
    of work (``OneStatement``): ``then`` of the rows by id."""

    def by_id(rows: Sequence[Any]) -> T:
        return then({int(row.id): row for row in rows})

    return OneStatement(PG_VERSIONS, {"ids": list(ids)}, by_id, first=False)


def _lacking(*, subtree: bool) -> Select[Any]:
    # In a subtree the namespace range leads; ``id + 0`` keeps the planner from
    # walking the primary key instead (through every row after the cursor).
    cursor = (MemoryEntry.id + 0 if subtree else MemoryEntry.id) > bindparam("after")
    has_embedding = exists().where(
        E.memory_entry_id == MemoryEntry.id,
        E.model == bindparam("model"),
        E.dims == bindparam("dims"),
    )
    return (
        select(MemoryEntry.id, MemoryEntry.value)
        .where(
            cursor,
            CURRENT_LIVE,
            ~has_embedding,
        )
        .order_by(MemoryEntry.id)
        .limit(bindparam("limit"))
    )


LACKING_ALL = Prepared(_lacking(subtree=False))
LACKING_IN_SUBTREE = Prepared(_lacking(subtree=True).where(in_subtree(MemoryEntry.namespace)))


def to_blob(vector: Vector) -> bytes:
    """A vector as stored: little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> Vector:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]


class EmbeddingRepository:
    def __init__(self, executor: Executor):
        self.executor = executor

    def insert(
        self, memory_entry_id: int, model: str, vectors: Sequence[tuple[str, Vector]]
    ) -> None:
        """The embeddings of a version just written (no row of it can exist yet)."""
        self.insert_many(model, [(memory_entry_id, vectors)])

    def insert_many(
        self, model: str, versions: Sequence[tuple[int, Sequence[tuple[str, Vector]]]]
    ) -> None:
        """``insert`` for many versions just written, in one executemany."""
        rows = [
            {
                "memory_entry_id": memory_entry_id,
                "model": model,
                "field": field,
                "dims": len(vector),
                "vector": to_blob(vector),
            }
            for memory_entry_id, vectors in versions
            for field, vector in vectors
        ]
        if rows:
            INSERT.execute_many(self.executor, rows)

    def insert_missing(self, model: str, rows: Sequence[tuple[int, str, Vector]]) -> int:
        """Embeddings of existing versions, skipping any another writer stored first;
        the number of rows inserted."""
        if not rows:
            return 0
        values = [
            {
                "memory_entry_id": entry_id,
                "model": model,
                "field": field,
                "dims": len(vector),
                "vector": to_blob(vector),
            }
            for entry_id, field, vector in rows
        ]
        upsert = pg_insert if dialect_name(self.executor) == "postgresql" else sqlite_insert
        statement = upsert(E).on_conflict_do_nothing()
        result = self.executor.execute(statement, values)
        return int(getattr(result, "rowcount", 0) or 0)

    def candidates(
        self,
        root: str,
        memory_type: str | None,
        model: str,
        dims: int,
        *,
        conditions: Sequence[ColumnElement[bool]] = (),
        params: dict[str, Any] | None = None,
    ) -> list[tuple[int, str]]:
        """``(row id, field)`` of every embedding (of ``model`` and ``dims``) of the
        current live version of every key in the subtree of ``root``.

        ``conditions`` (over ``MemoryEntry``, with their bind ``params``) narrow
        the candidates further: the place for any other read rule of the
        plain search (a value filter, a key's expiry as a NOT EXISTS).
        """
        bound: dict[str, Any] = {**subtree_bounds(root), "model": model, "dims": dims}
        if memory_type is not None:
            bound["memory_type"] = memory_type
        prepared = CANDIDATES_ALL if memory_type is None else CANDIDATES_OF_TYPE
        if conditions:
            statement = prepared.statement.where(*conditions)  # type: ignore[attr-defined]
            rows = self.executor.execute(statement, {**bound, **(params or {})}).all()
        else:
            rows = prepared.all(self.executor, bound)
        return [(int(row[0]), str(row[1])) for row in rows]

    def live_ids(self, root: str, memory_type: str | None, now: datetime) -> list[int]:
        """The row ids of the current live versions of the subtree of ``root`` (of
        ``memory_type``, if given) whose key has not expired at ``now``, ascending."""
        bound = _live_ids_params(subtree_bounds(root), memory_type, now)
        if dialect_name(self.executor) == "postgresql":
            statement = PG_LIVE_IDS_ALL if memory_type is None else PG_LIVE_IDS_OF_TYPE
            live, expired = self.executor.execute(statement, bound).one()
            return _live_less_expired(live, expired)
        prepared = LIVE_IDS_ALL if memory_type is None else LIVE_IDS_OF_TYPE
        ids = prepared.column(self.executor, bound)
        return _live_less_expired(ids, EXPIRED_IDS.column(self.executor, bound))

    def vectors(
        self, model: str, dims: int, ids: Sequence[int]
    ) -> list[tuple[int, str, Vector]]:
        """Every embedding of ``model`` and ``dims`` of the versions ``ids``."""
        found: list[tuple[int, str, Vector]] = []
        for chunk in _chunks(sorted(set(ids))):
            query = select(E.memory_entry_id, E.field, E.vector).where(
                E.memory_entry_id.in_(chunk), E.model == model, E.dims == dims
            )
            found.extend(
                (int(i), str(f), from_blob(v)) for i, f, v in self.executor.execute(query).all()
            )
        return found

    def versions(self, ids: Sequence[int]) -> dict[int, MemoryVersion]:
        """The memory rows ``ids``, by id."""
        found: dict[int, MemoryVersion] = {}
        for chunk in _chunks(list(ids)):
            query = select(*VERSION_FIELDS).where(MemoryEntry.id.in_(chunk))
            for row in self.executor.execute(query).all():
                found[int(row.id)] = row
        return found

    def lacking(
        self, root: str | None, model: str, dims: int, after: int, limit: int
    ) -> list[tuple[int, Any]]:
        """``(row id, value)`` of current live versions after row id ``after`` (in the
        subtree of ``root``, if given) with no embedding of ``model`` and ``dims``;
        ascending by id, at most ``limit``."""
        params: dict[str, Any] = {"model": model, "dims": dims, "after": after, "limit": limit}
        if root is None:
            rows = LACKING_ALL.all(self.executor, params)
        else:
            rows = LACKING_IN_SUBTREE.all(self.executor, {**params, **subtree_bounds(root)})
        return [(int(row[0]), row[1]) for row in rows]
