"""MemoryRepository: the SQL of versioned memory rows.

A key's current version is its highest, deleted or not; ``is_current`` marks
it (revision 0009), kept exact by ``insert``: the previous current row loses
the flag in the transaction that inserts its successor, and a partial UNIQUE
index (``idx_memory_current_key``) allows one per key. Reads of current live
versions use ``is_current AND NOT is_deleted``, never a newer-version check.

Every query here is served by an index (``tests/repositories/test_memory_query_plans.py``
checks the plans on both backends):

- one key's rows: the UNIQUE (namespace, key, version) index;
- the newest current live versions of a subtree (``search``): one statement
  (SQLite) or one call of ``abathur_search_memories`` (PostgreSQL, revisions
  0013 and 0016; its plans: ``test_search_function_plans.py``) choosing
  between a range of ``idx_memory_namespace_prefix`` (small or sparse
  subtrees; the page's row ids ranked on the index, then its rows read) and an
  ordered walk of ``idx_memory_updated_at`` / ``idx_memory_type_updated``
  (large ones), see SEARCH_CAP;
- the flag's move (``insert``): ``idx_memory_current_key``;
- keys with several live versions: ``idx_memory_is_deleted`` (live rows only);
- stale episodic memories: ``idx_memory_type_updated`` (current live rows);
- a key's expiry: the primary key of ``memory_expiry`` (joined to the key's
  rows); expired keys: ``idx_memory_expiry_expires_at``;
- the distinct namespaces of a subtree: a walk of an index leading with the
  namespace that seeks from one namespace to the next (one index probe per
  namespace), never reading the other rows of a namespace it has found.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    LargeBinary,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    not_,
    null,
    or_,
    select,
    text,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, JSONB
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from abathur.db.errors import error_detail, is_duplicate_key, sqlstate
from abathur.db.sqlite.prepared import Executor, OneStatement, Prepared, identity
from abathur.domain.memory import (
    FilterTerm,
    MemoryDict,
    MemoryFields,
    memory_dict,
    memory_exists,
    memory_not_found,
)
from abathur.domain.namespaces import subtree_bounds
from abathur.domain.values import MAX_ROW_ID
from abathur.errors import ConflictError, NotFoundError
from abathur.repositories.base import dialect_name, insert_row
from abathur.repositories.subtree import in_subtree
from abathur.schema.models import AuditEntry, MemoryEntry, MemoryExpiry
from abathur.schema.types import JSONDocument, UTCDateTime, load_documents
from abathur.strict_json import JSONText, dumps

T = TypeVar("T")
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

# A version row joined to its key's expiry (NULLs when the key has none).
EXPIRY_FIELDS = (
    MemoryExpiry.expires_at.label("expires_at"),
    MemoryExpiry.ttl_seconds.label("ttl_seconds"),
)
WITH_EXPIRY = MemoryEntry.__table__.outerjoin(
    MemoryExpiry.__table__,
    and_(MemoryExpiry.namespace == MemoryEntry.namespace, MemoryExpiry.key == MemoryEntry.key),
)
NOT_EXPIRED = or_(MemoryExpiry.expires_at.is_(None), MemoryExpiry.expires_at > bindparam("now"))
LATEST_WITH_EXPIRY = Prepared(
    select(*VERSION_FIELDS, *EXPIRY_FIELDS)
    .select_from(WITH_EXPIRY)
    .where(*_ONE_KEY)
    .order_by(MemoryEntry.version.desc())
    .limit(1)
)
EXPIRED_KEYS = Prepared(
    select(MemoryExpiry.namespace, MemoryExpiry.key)
    .where(MemoryExpiry.expires_at <= bindparam("now"))
    .order_by(MemoryExpiry.expires_at, MemoryExpiry.namespace, MemoryExpiry.key)
)
# Parameter names differ from the column names: an UPDATE reserves those.
UNSET_CURRENT = Prepared(
    update(MemoryEntry)
    .where(
        MemoryEntry.namespace == bindparam("ns"),
        MemoryEntry.key == bindparam("k"),
        MemoryEntry.is_current == true(),
    )
    .values(is_current=false())
)
_EXPIRY_OF_KEY = (MemoryExpiry.namespace == bindparam("ns"), MemoryExpiry.key == bindparam("k"))
SET_EXPIRY = Prepared(
    update(MemoryExpiry)
    .where(*_EXPIRY_OF_KEY)
    .values(expires_at=bindparam("at"), ttl_seconds=bindparam("ttl"))
)
NEW_EXPIRY = Prepared(
    insert(MemoryExpiry).values(
        namespace=bindparam("ns"),
        key=bindparam("k"),
        expires_at=bindparam("at"),
        ttl_seconds=bindparam("ttl"),
    )
)
CLEAR_EXPIRY = Prepared(delete(MemoryExpiry).where(*_EXPIRY_OF_KEY))
# refresh_ttl: only a key that has not expired yet moves forward, by the TTL
# it was read with.
REFRESH_EXPIRY = Prepared(
    update(MemoryExpiry)
    .where(
        *_EXPIRY_OF_KEY,
        MemoryExpiry.expires_at > bindparam("now"),
        MemoryExpiry.ttl_seconds == bindparam("ttl"),
    )
    .values(expires_at=bindparam("at"))
)


# PostgreSQL: every writer of memory keys holds this advisory lock in shared
# mode before its keys' locks; a bulk write of more keys than MAX_KEY_LOCKS
# holds it exclusively instead of one lock per key (``lock_keys``). The
# subquery makes the shared lock come first.
BULK_LOCK_ID = -0x6162617468757221  # a constant of its own, outside blake2b's pattern
MAX_KEY_LOCKS = 1_000
_LOCK_KEY = text(
    "SELECT pg_advisory_xact_lock(:lock_id) FROM "
    f"(SELECT pg_advisory_xact_lock_shared({BULK_LOCK_ID})) AS bulk"
)


def key_lock_id(namespace: str, key: str) -> int:
    """A signed 64-bit advisory lock id for one memory key.

    Namespaces never contain NUL, so ``namespace NUL key`` names the key
    unambiguously; a hash collision only serialises two unrelated keys.
    """
    digest = hashlib.blake2b(namespace.encode() + b"\x00" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The current version of a key is its highest, deleted or not (``is_current``,
# kept exact by ``MemoryRepository.insert``); the current live versions are
# what every search returns.
CURRENT_LIVE = and_(MemoryEntry.is_current == true(), LIVE)

# A search for the newest ``limit`` current versions of a subtree (after
# ``offset``) runs one of two plans, chosen inside the statement:
# - RANGE: the subtree's rows in ``idx_memory_namespace_prefix``, sorted: cost
#   proportional to the subtree, used when it holds fewer than SEARCH_CAP
#   current live rows (or is rare among the newest rows of the store);
# - WALK: the store's current live rows newest first (``idx_memory_updated_at``,
#   or ``idx_memory_type_updated`` for a memory type), keeping the subtree's,
#   until ``offset + limit`` are found: cost proportional to ``offset + limit``
#   over the subtree's share of recent rows, whatever the store's size. It is
#   used when the subtree holds at least SEARCH_CAP current live rows and at
#   least ``offset + limit`` of the newest WALK_DENSITY * (offset + limit)
#   current live rows of the store (of the memory type): so the walk finds its
#   rows near the top of the index instead of crossing the store.
SEARCH_CAP = 1000
WALK_DENSITY = 16
WALK_WINDOW_MIN = 1024


def search_params(
    root: str, memory_type: str | None, limit: int, *, now: datetime, offset: int
) -> dict[str, Any]:
    """The parameters of a search (``MemoryRepository.search``) on either backend."""
    # Every count fits a BIGINT: no store holds more rows than its ids
    # (MAX_ROW_ID), so an offset past that many rows is as empty as one
    # just below it.
    offset = min(offset, MAX_ROW_ID - limit)
    need = offset + limit
    params: dict[str, Any] = {
        **subtree_bounds(root),
        "limit": limit,
        "offset": offset,
        "need": need,
        "cap": max(SEARCH_CAP, need),
        "window": min(max(WALK_WINDOW_MIN, WALK_DENSITY * need), MAX_ROW_ID),
        "now": now,
    }
    if memory_type is not None:
        params["memory_type"] = memory_type
    return params


def _search_statement(typed: bool, terms: Sequence[ColumnElement[bool]] = ()) -> Any:
    """SQLite's search statement (see SEARCH_CAP): one CTE decides between the
    RANGE and WALK branches (each with its own ORDER BY, LIMIT and OFFSET: the
    page of row ids) and the outer query reads the rows of the page of the
    branch that ran, unordered (``search_rows`` orders them). The branch not
    chosen never runs: SQLite, which evaluates an uncorrelated WHERE
    condition per row, gates each by its LIMIT (0 for the branch not chosen).
    PostgreSQL runs the same choice in ``abathur_search_memories`` (revision
    0013_search_function, ``search_pg``)."""
    typed_terms = (MemoryEntry.memory_type == bindparam("memory_type"),) if typed else ()
    # In the order of idx_memory_namespace_prefix (only it has that order): a
    # scan of a range in that index, which stops at the cap. Two ranges, the
    # root and its descendants: the one range from the root to ``upper`` also
    # holds the root's siblings that extend its last segment (``user:u7`` ->
    # ``user:u70``), which a search of ``user:u7`` must not read.
    probe_order = (MemoryEntry.namespace, MemoryEntry.updated_at.desc(), MemoryEntry.id.desc())

    def probe(subtree: ColumnElement[bool], name: str) -> Any:
        rows = (
            select(literal_column("1"))
            .where(subtree, CURRENT_LIVE)
            .order_by(*probe_order)
            .limit(bindparam("cap"))
            .subquery(name)
        )
        return select(func.count()).select_from(rows).scalar_subquery()

    at_root = MemoryEntry.namespace == bindparam("root")
    below = and_(
        MemoryEntry.namespace >= bindparam("lower"), MemoryEntry.namespace < bindparam("upper")
    )
    subtree_size = probe(at_root, "probe_root") + probe(below, "probe")
    recent = (
        select(MemoryEntry.namespace.label("namespace"))
        .where(CURRENT_LIVE, *typed_terms)
        .order_by(MemoryEntry.updated_at.desc(), MemoryEntry.id.desc())
        .limit(bindparam("window"))
        .subquery("recent")
    )
    recent_share = select(func.count()).select_from(recent).where(in_subtree(recent.c.namespace))
    choice = (
        select(
            case(
                (
                    subtree_size >= bindparam("cap"),
                    recent_share.scalar_subquery() >= bindparam("need"),
                ),
                else_=false(),
            ).label("walk")
        )
        .cte("choice")
        .prefix_with("MATERIALIZED")
    )
    walk = select(choice.c.walk).scalar_subquery()

    def branch(walking: bool) -> Any:
        chosen = walk == (true() if walking else false())
        if not walking:
            return select(_sqlite_range(typed, terms, chosen).subquery("by_range"))
        # The walk tests the subtree on a concatenation: no index range on
        # the namespace, so the planner walks the recency index.
        query = (
            select(MemoryEntry.id.label("rid"), MemoryEntry.updated_at.label("ts"))
            .select_from(WITH_EXPIRY)
            .where(
                in_subtree(MemoryEntry.namespace.concat(literal_column("''"))),
                CURRENT_LIVE,
                *typed_terms,
                NOT_EXPIRED,
                *terms,
            )
            .order_by(MemoryEntry.updated_at.desc(), MemoryEntry.id.desc())
            .limit(case((chosen, bindparam("limit")), else_=0))
            .offset(bindparam("offset"))
        )
        return select(query.subquery("by_walk"))

    # The page: the row ids of the branch that ran, each branch ordering and
    # paging its own (the other's LIMIT is 0), so the union needs no sort;
    # then the page's rows alone, read by rowid, with the key's TTL (for
    # refresh_ttl). No ORDER BY over those rows, which would sort whole rows
    # (values and all) in a temporary b-tree: ``search_rows`` puts them in
    # the branches' order, (updated_at, id) descending, on the stored text
    # (compared by code point, as SQLite's BINARY collation compares UTF-8).
    page = union_all(branch(False), branch(True)).subquery("page")
    return select(
        *(getattr(MemoryEntry, name).label(name) for name in SEARCH_FIELDS[:-1]),
        MemoryExpiry.ttl_seconds.label("ttl_seconds"),
    ).select_from(
        page.join(MemoryEntry, MemoryEntry.id == page.c.rid).outerjoin(
            MemoryExpiry,
            and_(
                MemoryExpiry.namespace == MemoryEntry.namespace,
                MemoryExpiry.key == MemoryEntry.key,
            ),
        )
    )


def _sqlite_range(typed: bool, terms: Sequence[ColumnElement[bool]], chosen: Any) -> Any:
    """SQLite's RANGE branch: the row ids (and timestamps) of the page, the
    newest ``limit`` matching rows after ``offset``. It reads the root's range and its descendants'
    range of ``idx_memory_namespace_prefix`` (one arm each, so neither is an
    OR of ranges, which reads every row of the table) and sorts ids and
    timestamps; a row of the table is read only for a condition the index
    does not hold: a memory type, a filter, or an expiry, which is looked up
    only in a namespace that has expiries. The statement then reads the rows
    of the page alone (``_search_statement``): a page of 10 of a subtree of
    100 reads 10 rows, not 100 (after any write, SQLite reads each of them
    again from the file or the WAL)."""
    has_expiries = (
        select(literal_column("1")).where(MemoryExpiry.namespace == MemoryEntry.namespace).exists()
    )
    expired = (
        select(literal_column("1"))
        .where(
            MemoryExpiry.namespace == MemoryEntry.namespace,
            MemoryExpiry.key == MemoryEntry.key,
            MemoryExpiry.expires_at <= bindparam("now"),
        )
        .exists()
    )
    # A memory type is tested on its text (``|| ''``): no index range on it,
    # so the arm keeps to the namespace index, as the old RANGE did.
    of_type = MemoryEntry.memory_type.concat(literal_column("''")) == bindparam("memory_type")
    typed_terms = (of_type,) if typed else ()

    def arm(subtree: ColumnElement[bool]) -> Any:
        return select(MemoryEntry.id.label("rid"), MemoryEntry.updated_at.label("ts")).where(
            subtree, CURRENT_LIVE, *typed_terms, or_(~has_expiries, ~expired), *terms
        )

    arms = union_all(
        arm(MemoryEntry.namespace == bindparam("root")),
        arm(
            and_(
                MemoryEntry.namespace >= bindparam("lower"),
                MemoryEntry.namespace < bindparam("upper"),
            )
        ),
    ).subquery("arms")
    return (
        select(arms.c.rid, arms.c.ts)
        .order_by(arms.c.ts.desc(), arms.c.rid.desc())
        .limit(case((chosen, bindparam("limit")), else_=0))
        .offset(bindparam("offset"))
    )


# The columns of a search's rows, in order (``search_rows``): what
# ``MemoryDict`` holds but ``is_deleted`` (False: a search returns live rows),
# then the key's TTL (None without one).
SEARCH_FIELDS = (
    "id", "namespace", "key", "value", "memory_type", "version", "metadata_",
    "created_by", "updated_by", "created_at", "updated_at", "ttl_seconds",
)  # fmt: skip


# A search row's order (``search_rows``): (updated_at's stored text, id).
_NEWEST_FIRST = itemgetter(10, 0)


def search_rows(
    fetched: list[Any], processors: Sequence[Any]
) -> tuple[list[MemoryDict], list[float | None]]:
    """A SQLite search's rows (``SEARCH_FIELDS``, as the driver returns them)
    as ``memory_dict`` makes them, newest first, and each one's TTL: in one
    pass, with the columns' own result processors (``Prepared.raw``; the
    values, JSON documents, in one parse: ``load_documents``). The
    statement leaves the order to this function (see ``_search_statement``):
    (updated_at, id) descending, on the stored text, the ORDER BY of its
    branches. A version's ``created_at`` is usually its ``updated_at`` (the
    first version of a key): the same text is converted once (datetimes are
    immutable, so the two keys may share one)."""
    fetched.sort(key=_NEWEST_FIRST, reverse=True)
    load_metadata = processors[6] or identity
    load_time, load_ttl = processors[9] or identity, processors[11] or identity
    values = load_documents([row[3] for row in fetched])
    memories: list[MemoryDict] = []
    ttls: list[float | None] = []
    for (
        id_, namespace, key, _text, memory_type, version, metadata,
        created_by, updated_by, created_at, updated_at, ttl,
    ), value in zip(fetched, values, strict=True):  # fmt: skip
        updated = load_time(updated_at)
        memories.append({
            "id": id_,
            "namespace": namespace,
            "key": key,
            "value": value,
            "memory_type": memory_type,
            "version": version,
            "is_deleted": False,
            "metadata": None if metadata is None else load_metadata(metadata),
            "created_by": created_by,
            "updated_by": updated_by,
            "created_at": updated if created_at == updated_at else load_time(created_at),
            "updated_at": updated,
        })  # fmt: skip
        ttls.append(None if ttl is None else load_ttl(ttl))
    return memories, ttls


# SQLite's, by memory type given.
SEARCHES = {typed: Prepared(_search_statement(typed)) for typed in (False, True)}
# SQLite's filtered searches, one statement per filter shape (``_term_shape``:
# the operators, path lengths and operand types, not the values, which are
# bound parameters): built and compiled once, then run on the fast path like
# the unfiltered ones. Bounded: shapes come from callers' filters. PostgreSQL
# keeps the SQL of each shape's condition instead (``_PG_FILTERS``).
FILTERED_SEARCHES_KEPT = 256
_FILTERED_SEARCHES: dict[tuple[Any, ...], Prepared] = {}


class MemoryRepository:
    """The reads that return plain rows also run on a bare connection (``Database.read``)."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def lock_key(self, namespace: str, key: str) -> None:
        """Serialise writers of one key until the transaction ends.

        SQLite needs nothing: write transactions begin IMMEDIATE and so run one
        at a time. PostgreSQL takes a transaction-scoped advisory lock, which
        also covers a key that has no row yet, after the shared side of the
        bulk lock (``BULK_LOCK_ID``, see ``lock_keys``), in one statement.
        """
        if dialect_name(self.executor) == "postgresql":
            self.executor.execute(_LOCK_KEY, {"lock_id": key_lock_id(namespace, key)})

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
        """Insert ``row`` as its key's new current version: the key's previous
        current row (if any) loses ``is_current`` first, in the same
        transaction. Callers hold the key's lock and number ``row`` after the
        key's highest version; a concurrent writer that got past both is a
        ConflictError (UNIQUE version, or the one current row per key)."""
        row.is_current = True
        try:
            UNSET_CURRENT.execute(self.executor, {"ns": row.namespace, "k": row.key})
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

    def latest_with_expiry(self, namespace: str, key: str) -> Any | None:
        """``latest`` with the key's ``expires_at`` and ``ttl_seconds`` (None without)."""
        return LATEST_WITH_EXPIRY.first(self.executor, {"namespace": namespace, "key": key})

    def set_expiry(
        self,
        namespace: str,
        key: str,
        expiry: tuple[datetime, float] | None,
        *,
        had_expiry: bool,
    ) -> None:
        """Make the key expire at ``expiry = (expires_at, ttl_seconds)``, or never (None)."""
        params: dict[str, Any] = {"ns": namespace, "k": key}
        if expiry is None:
            if had_expiry:
                CLEAR_EXPIRY.execute(self.executor, params)
            return
        params["at"], params["ttl"] = expiry
        (SET_EXPIRY if had_expiry else NEW_EXPIRY).execute(self.executor, params)

    def clear_expiry(self, namespace: str, key: str) -> None:
        CLEAR_EXPIRY.execute(self.executor, {"ns": namespace, "k": key})

    def refresh_expiry(
        self, namespace: str, key: str, ttl_seconds: float, now: datetime, expires_at: datetime
    ) -> None:
        params = {"ns": namespace, "k": key, "ttl": ttl_seconds, "now": now, "at": expires_at}
        REFRESH_EXPIRY.execute(self.executor, params)

    def expired_keys(self, now: datetime) -> list[tuple[str, str]]:
        """Every key with an expiry at or before ``now``, the longest expired first."""
        return [(ns, key) for ns, key in EXPIRED_KEYS.all(self.executor, {"now": now})]

    def search(
        self,
        root: str,
        memory_type: str | None,
        limit: int,
        *,
        now: datetime,
        offset: int = 0,
        terms: tuple[FilterTerm, ...] = (),
    ) -> tuple[list[MemoryDict], list[float | None]]:
        """The current live, unexpired version of every key in the subtree of
        ``root`` whose value satisfies every filter term, newest first, as
        ``memory_dict`` makes them; and each one's key's ``ttl_seconds``
        (None without an expiry)."""
        params = search_params(root, memory_type, limit, now=now, offset=offset)
        if dialect_name(self.executor) == "postgresql":
            rows = search_pg(self.executor, params, terms)
            return [memory_dict(r) for r in rows], [r.ttl_seconds for r in rows]
        typed = memory_type is not None
        if not terms:
            return search_rows(*SEARCHES[typed].raw(self.executor, params))
        shape = (typed, tuple(_term_shape(t) for t in terms))
        filtered = _FILTERED_SEARCHES.get(shape)
        if filtered is None:
            filtered = Prepared(_search_statement(typed, self._terms(terms)))
            if len(_FILTERED_SEARCHES) >= FILTERED_SEARCHES_KEPT:
                _FILTERED_SEARCHES.clear()
            _FILTERED_SEARCHES[shape] = filtered
        for i, term in enumerate(terms):
            params.update(_term_params(term, f"f{i}", False))
        return search_rows(*filtered.raw(self.executor, params))

    def _terms(self, terms: tuple[FilterTerm, ...]) -> list[ColumnElement[bool]]:
        """The SQL of each filter term, over ``MemoryEntry.value`` (on SQLite,
        past ``SQLITE_CHAIN`` terms, one condition of them all: ``_sqlite_chain``)."""
        if dialect_name(self.executor) == "postgresql":
            return [_pg_term(term, f"f{i}") for i, term in enumerate(terms)]
        conditions = [_sqlite_term(term, f"f{i}") for i, term in enumerate(terms)]
        return conditions if len(conditions) <= SQLITE_CHAIN else [_sqlite_chain(and_, conditions)]

    def read_rules(
        self, terms: tuple[FilterTerm, ...], now: datetime
    ) -> tuple[list[ColumnElement[bool]], dict[str, Any]]:
        """The read rules of a search besides the subtree, memory type and
        liveness, as conditions over ``MemoryEntry`` with their bind parameters:
        every filter term, and that the key has not expired at ``now``."""
        unexpired = ~exists().where(
            MemoryExpiry.namespace == MemoryEntry.namespace,
            MemoryExpiry.key == MemoryEntry.key,
            MemoryExpiry.expires_at <= bindparam("now"),
        )
        return [*self._terms(terms), unexpired], {"now": now}

    def namespaces(self, root: str | None, now: datetime, stop_after: int | None) -> list[str]:
        """The distinct namespaces of the subtree of ``root`` (everything without
        one) holding a live, unexpired row, in byte order; at most ``stop_after``."""
        if root is None:
            bounds = {"root": "", "lower": "", "upper": "\U0010ffff", "first": ""}
        else:
            bounds = {**subtree_bounds(root), "first": root}
        postgres = dialect_name(self.executor) == "postgresql"
        statement = _NAMESPACE_WALK[postgres]
        # The walk's counter is a 32-bit integer on PostgreSQL.
        stop = min(stop_after, 2**31 - 1) if stop_after is not None else 2**31 - 1
        params = {**bounds, "now": now, "stop": stop}
        return [ns for (ns,) in self.executor.execute(statement, params).all()]

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
                    CURRENT_LIVE,
                    MemoryEntry.updated_at < cutoff,
                )
            )
            .order_by(MemoryEntry.namespace, MemoryEntry.key)
        )
        return [(ns, key) for ns, key in (self.executor.execute(query)).all()]


# ------------------------------------------------------------ value filters


def _sqlite_path(term: FilterTerm) -> str:
    return "$" + "".join(f'."{segment}"' for segment in term.path)


_SQLITE_TYPES = {bool: ("true", "false"), int: ("integer", "real"), float: ("integer", "real")}
_SQL_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$eq": "=", "$ne": "="}
# JSON number types, as literals: an IN of bound values would be an expanding
# parameter, which a prepared statement cannot hold.
_NUMBER_TYPES: tuple[Any, ...] = (literal_column("'integer'"), literal_column("'real'"))


def _operand_shape(value: Any) -> Any:
    """What of an operand shapes the SQL of its term: its type (``None`` and
    booleans are literals in it)."""
    if value is None or isinstance(value, bool):
        return value
    return type(value).__name__


def _term_shape(term: FilterTerm) -> tuple[Any, ...]:
    """What shapes a term's SQL besides its bound values (see ``_term_params``)."""
    if term.operator == "$in":
        operand: Any = tuple(_operand_shape(v) for v in term.operand)
    else:
        operand = _operand_shape(term.operand)
    return (term.operator, len(term.path), operand)


def _nodes(value: Any) -> int:
    """How many nodes SQLite's ``json_tree`` yields for ``value`` (itself and
    every element and member, nested ones included)."""
    if isinstance(value, dict):
        return 1 + sum(_nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_nodes(v) for v in value)
    return 1


def _sqlite_equals_params(value: Any, name: str) -> dict[str, Any]:
    if value is None or isinstance(value, bool):
        return {}
    if isinstance(value, list | dict):
        return {name: dumps(value), f"{name}_n": _nodes(value)}
    return {name: value}


def _term_params(term: FilterTerm, name: str, postgres: bool) -> dict[str, Any]:
    """The bound values of the term ``_sqlite_term`` / ``_pg_term`` builds as
    ``name``, by parameter name: a statement of the same shape (``_term_shape``)
    runs with them for this term."""
    if term.operator == "$in" and not term.operand:
        return {}  # always false: nothing bound
    if postgres:
        params: dict[str, Any] = {f"{name}_p{i}": s for i, s in enumerate(term.path)}
        if term.operator == "$in":
            params.update({f"{name}_{i}": dumps(v) for i, v in enumerate(term.operand)})
        elif term.operator in ("$eq", "$ne") or not isinstance(term.operand, str):
            params[name] = dumps(term.operand)
        else:
            params[name] = term.operand
        return params
    params = {f"{name}_path": _sqlite_path(term)}
    if term.operator == "$in":
        for i, v in enumerate(term.operand):
            params.update(_sqlite_equals_params(v, f"{name}_{i}"))
    elif term.operator in ("$eq", "$ne"):
        params.update(_sqlite_equals_params(term.operand, name))
    else:
        params[name] = term.operand
    return params


def _sqlite_structure_equals(document: Any, path: Any, value: Any, name: str) -> Any:
    """A list or object operand equals the stored value as PostgreSQL's jsonb
    equality has it: same structure, object members by name in any order,
    numbers by value (``1`` is ``1.0``), lists in order. ``json_tree`` yields
    one row per node, named by its path from the root (``$[0].a``); the two
    trees are equal when the stored one has as many nodes as the operand and
    each of them has a node of the operand's at the same path with the same
    type (both numbers, or the same JSON type) and the same atom. The CASE
    keeps ``json_tree`` from parsing a stored scalar (a string's text is not
    JSON)."""
    operand = bindparam(name, dumps(value), type_=Text())
    count = bindparam(f"{name}_n", _nodes(value), type_=Integer())
    stored = (
        func.json_tree(func.json_extract(document, path))
        .table_valued("fullkey", "type", "atom")
        .alias(f"{name}_stored")
    )
    given = func.json_tree(operand).table_valued("fullkey", "type", "atom").alias(f"{name}_given")
    same_type = or_(
        stored.c.type == given.c.type,
        and_(stored.c.type.in_(_NUMBER_TYPES), given.c.type.in_(_NUMBER_TYPES)),
    )
    matched = and_(stored.c.fullkey == given.c.fullkey, same_type, stored.c.atom.is_(given.c.atom))
    equal = (
        select(and_(func.count() == count, func.count(given.c.fullkey) == count))
        .select_from(stored.outerjoin(given, matched))
        .scalar_subquery()
    )
    kind = "array" if isinstance(value, list) else "object"
    return case((func.json_type(document, path) == kind, equal), else_=false())


def _sqlite_equals(document: Any, path: Any, value: Any, name: str) -> Any:
    if isinstance(value, list | dict):
        return _sqlite_structure_equals(document, path, value, name)
    kind = func.json_type(document, path)
    if value is None:
        return kind == "null"
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    extracted = func.json_extract(document, path)
    # The value first, then its type (see ``_sqlite_term``).
    if isinstance(value, str):
        return and_(extracted == bindparam(name, value, type_=Text()), kind == "text")
    number = bindparam(name, value, type_=Integer() if isinstance(value, int) else Float())
    return and_(extracted == number, kind.in_(_NUMBER_TYPES))


# The most conditions SQLite gets in one chain of ANDs or ORs (see ``_sqlite_chain``).
SQLITE_CHAIN = 64


def _sqlite_chain(combine: Any, conditions: list[Any]) -> Any:
    """``combine(*conditions)`` (``and_`` or ``or_``) nested as SQLite can parse
    it: it nests a chain of n conditions n deep, and refuses an expression
    nested more than 1,000 deep (a long ``$in``, many terms). Past
    ``SQLITE_CHAIN`` conditions they are combined in groups, each in
    ``coalesce(group, NULL)``, the group's own value (SQLAlchemy would
    flatten a plain parenthesis back into the chain)."""
    if len(conditions) <= SQLITE_CHAIN:
        return combine(*conditions)
    size = -(-len(conditions) // SQLITE_CHAIN)
    return combine(
        *(
            func.coalesce(_sqlite_chain(combine, conditions[i : i + size]), null())
            for i in range(0, len(conditions), size)
        )
    )


def _sqlite_term(term: FilterTerm, name: str) -> Any:
    """SQLite JSON1: ``json_type`` gives the JSON type (true/false/null/integer/
    real/text/array/object, NULL when the path is absent), ``json_extract`` the
    SQL value; a condition holds only between values of the same JSON type.

    The comparison of the SQL value comes before the type test: SQLite
    evaluates an AND left to right and stops at the first false operand, so
    a row whose value fails the comparison (most rows of a selective filter)
    costs one JSON call per term instead of two. The type test still decides
    every row the comparison keeps: a boolean is the integer 1 or 0 to
    ``json_extract``, a list or an object its JSON text, and a text sorts after
    every number. (A second call on the same row finds the document in
    SQLite's cache of parsed documents, but still costs about a third of the
    first: see "Filtered search on SQLite" in docs/design_decisions.md.)"""
    document = MemoryEntry.value
    path = bindparam(f"{name}_path", _sqlite_path(term), type_=Text())
    if term.operator == "$in":
        options = [
            _sqlite_equals(document, path, v, f"{name}_{i}") for i, v in enumerate(term.operand)
        ]
        return _sqlite_chain(or_, [false(), *options])
    if term.operator in ("$eq", "$ne"):
        equal = _sqlite_equals(document, path, term.operand, name)
        return equal if term.operator == "$eq" else not_(func.coalesce(equal, false()))
    kind = func.json_type(document, path)
    extracted = func.json_extract(document, path)
    value = term.operand
    bound: Any
    if isinstance(value, str):
        same_type = kind == "text"
        bound = bindparam(name, value, type_=Text())
    else:
        same_type = kind.in_(_NUMBER_TYPES)
        bound = bindparam(name, value, type_=Integer() if isinstance(value, int) else Float())
    return and_(extracted.op(_SQL_OPS[term.operator])(bound), same_type)


def _pg_field(term: FilterTerm, name: str) -> Any:
    """``value -> 'a' -> 'b'``: object members only (``->`` with a text key is
    NULL on an array or a scalar), so a path never indexes into a list."""
    field: Any = type_coerce(MemoryEntry.value, JSONB)
    for i, segment in enumerate(term.path):
        field = field.op("->", return_type=JSONB)(bindparam(f"{name}_p{i}", segment, type_=Text()))
    return field


def _pg_json(value: Any, name: str) -> Any:
    return cast(bindparam(name, dumps(value), type_=Text()), JSONB)


def _pg_term(term: FilterTerm, name: str) -> Any:
    """PostgreSQL jsonb: equality of jsonb values is type-aware (``1`` never
    equals ``"1"``, ``1`` equals ``1.0``); orderings check ``jsonb_typeof``
    and compare numbers as jsonb (numeric) and strings as text in byte order."""
    field = _pg_field(term, name)
    if term.operator == "$in":
        options = [field == _pg_json(v, f"{name}_{i}") for i, v in enumerate(term.operand)]
        return _sqlite_chain(or_, [false(), *options])
    if term.operator == "$eq":
        return field == _pg_json(term.operand, name)
    if term.operator == "$ne":
        return not_(func.coalesce(field == _pg_json(term.operand, name), false()))
    op = _SQL_OPS[term.operator]
    value = term.operand
    if isinstance(value, str):
        as_text = field.op("#>>", return_type=Text())(literal_column("'{}'::text[]"))
        return and_(
            func.jsonb_typeof(field) == "string",
            as_text.collate("C").op(op)(bindparam(name, value, type_=Text())),
        )
    return and_(func.jsonb_typeof(field) == "number", field.op(op)(_pg_json(value, name)))


# ------------------------------------------------------------ namespaces


def _namespace_walk(postgres: bool) -> Any:
    """One statement that walks the distinct namespaces of a range in order: each
    step is an index probe for the first live, unexpired row after the previous
    namespace (a loose index scan as a recursive CTE), stopping after ``stop``."""
    live = (
        "is_current = true AND memory_entries.is_deleted = false"
        if postgres
        else ("is_current = 1 AND memory_entries.is_deleted = 0")
    )
    # No table aliases: query plans then name the tables themselves.
    candidate = (
        "SELECT memory_entries.namespace FROM memory_entries "
        "WHERE {start} AND memory_entries.namespace < :upper "
        f"AND memory_entries.{live} "
        "AND (memory_entries.namespace = :root OR memory_entries.namespace >= :lower) "
        "AND NOT EXISTS (SELECT 1 FROM memory_expiry "
        "WHERE memory_expiry.namespace = memory_entries.namespace "
        "AND memory_expiry.key = memory_entries.key AND memory_expiry.expires_at <= :now) "
        "ORDER BY memory_entries.namespace LIMIT 1"
    )
    sql = (
        "WITH RECURSIVE walk(ns, n) AS ("
        f"SELECT ({candidate.format(start='memory_entries.namespace >= :first')}), 1 "
        "UNION ALL "
        f"SELECT ({candidate.format(start='memory_entries.namespace > walk.ns')}), walk.n + 1 "
        "FROM walk WHERE walk.ns IS NOT NULL AND walk.n < :stop"
        ") SELECT ns FROM walk WHERE ns IS NOT NULL"
    )
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()))


_NAMESPACE_WALK = {False: _namespace_walk(False), True: _namespace_walk(True)}


# ------------------------------------------------------------ bulk writes (put_memories)
#
# ``MemoryService.put_memories`` writes many versions in one transaction with
# a constant number of statements per chunk of keys: one to lock them
# (PostgreSQL), one to read their newest versions, one executemany of the
# versions and one of the audit rows.

BULK_CHUNK = 5_000  # keys per latest-versions read and per lock statement


def _latest_of_keys(wanted: Any, ns: Any, key: Any) -> Any:
    """The current version (the newest, deleted or not) of each key listed by
    ``wanted``, with its expiry: one probe of ``idx_memory_current_key`` per key."""
    return (
        select(*VERSION_FIELDS, *EXPIRY_FIELDS)
        .select_from(wanted)
        .join(
            WITH_EXPIRY,
            and_(
                MemoryEntry.namespace == ns,
                MemoryEntry.key == key,
                MemoryEntry.is_current == true(),
            ),
        )
    )


def _latest_of_keys_sqlite() -> Any:
    """The keys as a JSON array of ``[namespace, key]`` pairs."""
    wanted = func.json_each(bindparam("keys", type_=Text())).table_valued("value").alias("wanted")
    return _latest_of_keys(
        wanted,
        func.json_extract(wanted.c.value, "$[0]"),
        func.json_extract(wanted.c.value, "$[1]"),
    )


def _latest_of_keys_pg() -> Any:
    """The keys as two parallel text arrays."""
    wanted = (
        func.unnest(
            bindparam("namespaces", type_=ARRAY(Text())), bindparam("keys", type_=ARRAY(Text()))
        )
        .table_valued("ns", "k")
        .render_derived(name="wanted")
    )
    return _latest_of_keys(wanted, wanted.c.ns, wanted.c.k)


LATEST_OF_KEYS = {False: Prepared(_latest_of_keys_sqlite()), True: _latest_of_keys_pg()}
# Row ids on SQLite: the next AUTOINCREMENT value is one past the larger of the
# table's sequence and its highest id (the rule SQLite itself applies).
_NEXT_ID_SQLITE = Prepared(
    select(
        func.max(
            func.coalesce(
                select(literal_column("seq"))
                .select_from(text("sqlite_sequence"))
                .where(literal_column("name") == "memory_entries")
                .scalar_subquery(),
                0,
            ),
            func.coalesce(select(func.max(MemoryEntry.id)).scalar_subquery(), 0),
        )
    )
)
_INSERT_VERSIONS = Prepared(insert(MemoryEntry))
# PostgreSQL: every column as one array parameter, the JSON documents as
# text (already strict JSON) cast to jsonb, the rows in the arrays' order.
_VERSION_ARRAYS = (
    ("namespace", "text"), ("key", "text"), ("value", "text"), ("memory_type", "text"),
    ("version", "integer"), ("is_deleted", "boolean"), ("metadata", "text"),
    ("created_by", "text"), ("updated_by", "text"), ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"), ("is_current", "boolean"),
)  # fmt: skip
_JSON_COLUMNS = ("value", "metadata")
_INSERT_VERSIONS_PG = text(
    'INSERT INTO memory_entries (namespace, "key", value, memory_type, version, is_deleted, '
    "metadata, created_by, updated_by, created_at, updated_at, is_current) "
    'SELECT t.namespace, t."key", CAST(t.value AS jsonb), t.memory_type, t.version, '
    "t.is_deleted, CAST(t.metadata AS jsonb), t.created_by, t.updated_by, t.created_at, "
    "t.updated_at, t.is_current FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _VERSION_ARRAYS)
    + ") WITH ORDINALITY AS t("
    + ", ".join(f'"{name}"' for name, _ in _VERSION_ARRAYS)
    + ', n) ORDER BY t.n RETURNING id, namespace, "key", version'
)


def _insert_versions_pg(executor: Executor, rows: Sequence[NewVersion]) -> list[int]:
    ids: dict[tuple[str, str, int], int] = {}
    for chunk in _chunked(rows):
        params: dict[str, Any] = dict(
            zip(NEW_VERSION_FIELDS, map(list, zip(*chunk, strict=True)), strict=True)
        )
        params["is_deleted"] = [False] * len(chunk)
        for name in _JSON_COLUMNS:
            params[name] = [dumps(document) for document in params[name]]
        for row_id, ns, key, version in executor.execute(_INSERT_VERSIONS_PG, params).all():
            ids[(ns, key, version)] = int(row_id)
    return [ids[row[:3]] for row in rows]


# SQLite's page cache while a bulk write runs, in KiB (``PRAGMA cache_size``
# takes a negative number as KiB). At the default 2 MiB the pages a batch of
# thousands of versions dirties in its table and its indexes do not fit: SQLite
# spills them to the WAL in mid-transaction and reads them back.
BULK_CACHE_KIB = 65_536


@contextmanager
def bulk_page_cache(executor: Executor) -> Iterator[None]:
    """On SQLite, a page cache of ``BULK_CACHE_KIB`` for the statements run
    inside (the connection's own size is restored after, whatever happens);
    nothing elsewhere. Durability is unchanged: the cache holds the pages the
    transaction writes until its commit writes them to the WAL."""
    if dialect_name(executor) != "sqlite" or not isinstance(executor, Connection):
        yield
        return
    before = executor.exec_driver_sql("PRAGMA cache_size").scalar()
    executor.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    try:
        yield
    finally:
        executor.exec_driver_sql(f"PRAGMA cache_size={int(before or 0)}")


# A load that at least doubles a table (the table's highest row id, T, at
# most its rows written, L, at least ``INDEX_REBUILD_MIN_ROWS`` of them)
# writes it with its non-unique secondary indexes
# dropped, and creates them again, from their own SQL, before its transaction
# ends: SQLite builds an index from sorted rows in about half the time per row
# that it takes to insert into it row by row, but then over the whole table.
# Measured (bare sqlite3, the 12 indexes of both tables, 64 MiB cache, CPU us
# per memory loaded, p50 of 2-3; docs/design_decisions.md, "hA: put_memories'
# bulk load"): a table of T rows, a load of L, incremental against rebuilt:
# T/L=0 22.5 vs 16.7; T/L=1 25.3 vs 25.0 (L=100,000; wall 44.9 vs 38.5);
# T/L=1.33 25.1 vs 28.8; T/L=2 26.7 vs 35.6 (L=100,000), 27.4 vs 38.3
# (L=200,000); T/L=4 25.6 vs 54.3. The rebuild costs ~16 us plus ~9.5 us per
# unit of T/L, the incremental insert ~22-28 us whatever T (up to 600,000
# rows): the break-even is at T/L 1-1.3, where "doubles" already puts it.
# The unique indexes (the (namespace, key, version) constraint and
# ``idx_memory_current_key``) stay: the load's own statements probe them, and
# they raise its conflicts.
INDEX_REBUILD_MIN_ROWS = 1_000
_BULK_TABLES: tuple[Table, ...] = (MemoryEntry.__table__, AuditEntry.__table__)  # type: ignore[assignment]
_REBUILT_TABLES = {
    table.name: sorted(str(index.name) for index in table.indexes if not index.unique)
    for table in _BULK_TABLES
}
_HIGHEST_ID = {
    "memory_entries": _NEXT_ID_SQLITE,
    "audit": Prepared(select(func.max(AuditEntry.id))),
}
# The indexes' own SQL, as SQLite keeps it, to create them again as they were.
_INDEX_SQL = text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table "
    "AND sql IS NOT NULL"
)
_HAS_STATISTICS = text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
_INDEX_STATISTICS = text("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = :table")
_RESTORE_STATISTICS = text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:tbl, :idx, :stat)")


@contextmanager
def indexes_rebuilt(executor: Executor, rows: int) -> Iterator[None]:
    """On SQLite, for a load of ``rows`` versions and as many audit rows: the
    non-unique secondary indexes of each of the two tables that the load at
    least doubles dropped for the statements run inside, and created again
    (from the SQL SQLite kept for them, so the schema is the same text) when
    they succeed, in the same transaction: a failure inside rolls back the
    drop with the rest, and other connections see the indexes throughout
    (the old state until the commit, then the whole new one). The indexes'
    ``ANALYZE`` statistics, which ``DROP INDEX`` deletes, are put back as they
    were. Nothing elsewhere, or for a smaller load."""
    if (
        rows < INDEX_REBUILD_MIN_ROWS
        or dialect_name(executor) != "sqlite"
        or not isinstance(executor, Connection)
    ):
        yield
        return
    dropped: list[tuple[str, str]] = []
    statistics: list[dict[str, Any]] = []
    has_statistics = bool(executor.execute(_HAS_STATISTICS).scalar())
    for table, names in _REBUILT_TABLES.items():
        if int(_HIGHEST_ID[table].scalar(executor, {}) or 0) > rows:
            continue
        found = {name: sql for name, sql in executor.execute(_INDEX_SQL, {"table": table})}
        wanted = [(name, found[name]) for name in names if name in found]
        if has_statistics:
            kept = {name for name, _ in wanted}
            statistics += [
                {"tbl": table, "idx": idx, "stat": stat}
                for idx, stat in executor.execute(_INDEX_STATISTICS, {"table": table})
                if idx in kept
            ]
        for name, _sql in wanted:
            executor.exec_driver_sql(f'DROP INDEX "{name}"')
        dropped += wanted
    yield
    for _name, sql in dropped:
        executor.exec_driver_sql(sql)
    if statistics:
        executor.execute(_RESTORE_STATISTICS, statistics)


def _chunked(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BULK_CHUNK] for i in range(0, len(items), BULK_CHUNK)]


def lock_keys(executor: Executor, keys: Sequence[tuple[str, str]]) -> None:
    """``lock_key`` for many keys; nothing on SQLite (one writer at a time).

    PostgreSQL: up to ``MAX_KEY_LOCKS`` keys, the shared bulk lock and then
    the keys' advisory locks in ascending lock id order (so two bulk writers
    never deadlock), a few statements for all. More keys would exhaust the
    server's lock table (``max_locks_per_transaction``; "out of shared
    memory"), so the bulk lock is taken exclusively instead: it waits for
    every writer of memory keys to finish and holds the next ones off until
    this transaction ends.
    """
    if dialect_name(executor) != "postgresql" or not keys:
        return
    ids = sorted({key_lock_id(ns, key) for ns, key in keys})
    if len(ids) > MAX_KEY_LOCKS:
        executor.execute(text(f"SELECT pg_advisory_xact_lock({BULK_LOCK_ID})"))
        return
    executor.execute(text(f"SELECT pg_advisory_xact_lock_shared({BULK_LOCK_ID})"))
    statement = text(
        "SELECT count(pg_advisory_xact_lock(lock_id)) FROM "
        "(SELECT lock_id FROM unnest(:ids) AS lock_id ORDER BY lock_id) AS ordered"
    ).bindparams(bindparam("ids", type_=ARRAY(BIGINT())))
    for chunk in _chunked(ids):
        executor.execute(statement, {"ids": list(chunk)})


def latest_of_keys(
    executor: Executor, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """``latest_with_expiry`` of many keys: the newest version (deleted or not)
    of each key that has one, with its ``expires_at`` and ``ttl_seconds``."""
    found: dict[tuple[str, str], Any] = {}
    postgres = dialect_name(executor) == "postgresql"
    for chunk in _chunked(keys):
        if postgres:
            params: dict[str, Any] = {
                "namespaces": [ns for ns, _ in chunk],
                "keys": [key for _, key in chunk],
            }
            rows = executor.execute(LATEST_OF_KEYS[True], params).all()
        else:
            rows = LATEST_OF_KEYS[False].all(executor, {"keys": dumps([list(k) for k in chunk])})
        for row in rows:
            found[(row.namespace, row.key)] = row
    return found


# The fields of a ``NewVersion``: memory_entries' columns but ``id`` (given by
# ``insert_versions``) and ``is_deleted`` (false), (namespace, key, version) first.
NEW_VERSION_FIELDS = (
    "namespace", "key", "version", "value", "memory_type", "metadata",
    "created_by", "updated_by", "created_at", "updated_at", "is_current",
)  # fmt: skip
NewVersion = tuple[Any, ...]  # a new live version's values, in NEW_VERSION_FIELDS' order


def _index_order(pair: tuple[NewVersion, int]) -> tuple[Any, ...]:
    return pair[0][:3]  # (namespace, key, version)


def insert_versions(
    executor: Executor, rows: Sequence[NewVersion], *, nul_checked: bool = False
) -> list[int]:
    """INSERT many new live versions (tuples in ``NEW_VERSION_FIELDS``' order,
    at most one per (namespace, key, version) and one current per key, after
    ``unset_current``); their row ids, in order. ``nul_checked``: the caller
    vouches that no text of theirs contains NUL (``Prepared.execute_columns``).

    SQLite: one executemany with the ids given (the ones AUTOINCREMENT would
    assign: the write transaction holds the only write lock). PostgreSQL: one
    ``INSERT ... SELECT FROM unnest(arrays)`` per chunk, in the rows' order,
    the ids returned matched back to the rows by (namespace, key, version).
    A duplicate (namespace, key, version) is a ConflictError, as for ``insert``.
    """
    if not rows:
        return []
    try:
        if dialect_name(executor) == "postgresql":
            return _insert_versions_pg(executor, rows)
        first = int(_NEXT_ID_SQLITE.scalar(executor, {}) or 0) + 1
        ids = list(range(first, first + len(rows)))
        # In index order: the namespace-led indexes are then written page by page.
        in_order, row_ids = zip(*sorted(zip(rows, ids, strict=True), key=_index_order), strict=True)
        columns: dict[str, Sequence[Any]] = dict(
            zip(NEW_VERSION_FIELDS, zip(*in_order, strict=True), strict=True)
        )
        columns["is_deleted"] = [False] * len(rows)
        columns["id"] = row_ids
        _INSERT_VERSIONS.execute_columns(executor, columns, nul_checked=nul_checked)
        return ids
    except IntegrityError as exc:
        if is_duplicate_key(exc):
            raise ConflictError("a version of one of the keys was written concurrently") from exc
        raise


def unset_current(executor: Executor, keys: Sequence[tuple[str, str]]) -> None:
    """Take ``is_current`` off the current row of each key (that has one), before
    its new versions are inserted: one executemany."""
    if keys:
        UNSET_CURRENT.execute_many(executor, [{"ns": ns, "k": k} for ns, k in keys])


def set_expiries(
    executor: Executor,
    *,
    cleared: Sequence[tuple[str, str]],
    changed: Sequence[tuple[str, str, datetime, float]],
    added: Sequence[tuple[str, str, datetime, float]],
) -> None:
    """``set_expiry`` for many keys: expiries removed, replaced and created."""
    if cleared:
        CLEAR_EXPIRY.execute_many(executor, [{"ns": ns, "k": k} for ns, k in cleared])
    for statement, group in ((SET_EXPIRY, changed), (NEW_EXPIRY, added)):
        if group:
            statement.execute_many(
                executor, [{"ns": ns, "k": k, "at": at, "ttl": ttl} for ns, k, at, ttl in group]
            )


# ------------------------------------------------------------ one write, one statement (PostgreSQL)
#
# ``add_memory``, ``update_memory`` and ``put_memory`` run on PostgreSQL as one
# call of ``abathur_write_memory`` (revisions 0010 and 0012): the task check,
# the key's lock, the latest read, the version, its embedding (if any), the
# expiry and the audit row in one statement, sent in autocommit (one round
# trip). Its errors come back as SQLSTATEs of class AB, mapped here.

TASK_MISSING = "AB001"
MEMORY_MISSING = "AB002"
MEMORY_EXISTS = "AB003"
_WRITE_ARGUMENTS = (
    ("rule", "text", Text()), ("task_id", "text", Text()), ("lock_id", "bigint", BIGINT()),
    ("namespace", "text", Text()), ("key", "text", Text()), ("value", "jsonb", JSONDocument()),
    ("memory_type", "text", Text()), ("metadata", "jsonb", JSONDocument()),
    ("by", "text", Text()), ("now", "timestamptz", UTCDateTime()),
    ("expires_at", "timestamptz", UTCDateTime()), ("ttl_seconds", "double precision", Float()),
    ("audit_extra", "jsonb", JSONDocument()), ("embedding_model", "text", Text()),
    ("embedding_fields", "text[]", ARRAY(Text())),
    ("embedding_vectors", "bytea[]", ARRAY(LargeBinary())),
)  # fmt: skip
# The audit data of a write without a TTL, serialised once (``dumps`` stores
# a ``JSONText`` as it is).
NO_AUDIT_EXTRA = JSONText("{}")
_ENTRY_COLUMNS = [
    (prop.columns[0].name, prop.key, prop.columns[0].type)
    for prop in sa_inspect(MemoryEntry).column_attrs
]


def _function_call(
    function: str,
    alias: str,
    arguments: Sequence[tuple[str, str, Any]],
    columns: Sequence[tuple[str, str, Any]],
    tail: str = "",
) -> Any:
    """``SELECT`` of ``columns`` (name, label, type) from a call of the
    database function ``function``: each of ``arguments`` (name, SQL type,
    type) a bound parameter cast to its SQL type, so that asyncpg prepares
    the call once; each column typed, so that its result processor runs."""
    return (
        text(
            "SELECT "
            + ", ".join(f'{alias}."{name}" AS "{label}"' for name, label, _ in columns)
            + f" FROM {function}("
            + ", ".join(f"CAST(:{name} AS {kind})" for name, kind, _ in arguments)
            + f") AS {alias}{tail}"
        )
        .bindparams(*[bindparam(name, type_=type_) for name, _, type_ in arguments])
        .columns(*[column(label, type_) for _, label, type_ in columns])
    )


WRITE_MEMORY = Prepared(
    _function_call("abathur_write_memory", "w", _WRITE_ARGUMENTS, _ENTRY_COLUMNS)
)


def latest_with_expiry_statement(
    namespace: str, key: str, then: Callable[[Any], T]
) -> OneStatement[T]:
    """``MemoryRepository.latest_with_expiry`` as a one-statement unit of work
    (``OneStatement``): ``then`` of the row, or of None."""
    return OneStatement(LATEST_WITH_EXPIRY, {"namespace": namespace, "key": key}, then)


def write_memory_statement(
    rule: str,
    *,
    task_id: str,
    namespace: str,
    key: str,
    value: Any,
    memory_type: str | None,
    metadata: dict[str, Any] | None,
    by: str,
    now: datetime,
    expiry: tuple[datetime, float] | None,
    audit_extra: dict[str, Any],
    embedding: tuple[str, Sequence[tuple[str, bytes]]] | None = None,
) -> OneStatement[Any]:
    """One memory write on PostgreSQL as a one-statement unit of work
    (``OneStatement``), as ``MemoryService``'s unit of work does it on SQLite
    (see ``_write_version`` there): the new version's row. ``embedding`` (the
    model and each field's vector as stored, ``to_blob``) is stored with the
    version.

    A missing task or key, or a live key for ``create``, raises the same
    ``abathur.errors`` exception, with the same message, as that unit does.
    """
    params = {
        "rule": rule,
        "task_id": task_id,
        "lock_id": key_lock_id(namespace, key),
        "namespace": namespace,
        "key": key,
        "value": value,
        "memory_type": memory_type,
        "metadata": metadata,
        "by": by,
        "now": now,
        "expires_at": None if expiry is None else expiry[0],
        "ttl_seconds": None if expiry is None else expiry[1],
        "audit_extra": audit_extra or NO_AUDIT_EXTRA,
        "embedding_model": None if embedding is None else embedding[0],
        "embedding_fields": None if embedding is None else [f for f, _ in embedding[1]],
        "embedding_vectors": None if embedding is None else [v for _, v in embedding[1]],
    }

    def failed(exc: DBAPIError) -> None:
        code = sqlstate(exc)
        if code == TASK_MISSING:
            raise NotFoundError(f"task {task_id!r} not found") from exc
        if code == MEMORY_MISSING:
            raise memory_not_found(namespace, key) from exc
        if code == MEMORY_EXISTS:
            raise memory_exists(namespace, key, int(error_detail(exc) or 0)) from exc
        if is_duplicate_key(exc):
            raise ConflictError(
                f"a version of {namespace!r}/{key!r} was written concurrently"
            ) from exc

    return OneStatement(WRITE_MEMORY, params, _written, failed=failed)


def _written(row: Any) -> Any:
    assert row is not None  # the function returns the row it wrote, or raises
    return row


# ------------------------------------------------------------ one search, one call (PostgreSQL)
#
# ``search`` on PostgreSQL is one call of ``abathur_search_memories``
# (revision 0013_search_function; RANGE ranks row ids on the index before
# reading the page's rows since 0016_search_range_ids): the probes, then RANGE
# or WALK (see SEARCH_CAP), each a static statement the function plans once per connection
# (a generic plan, the same for every parameter value) instead of a plan per
# call for one large statement. A filter is passed as the SQL of its
# condition, built once per filter shape, with its values in a text array.

_SEARCH_ARGUMENTS = (
    ("root", "text", Text()), ("lower", "text", Text()), ("upper", "text", Text()),
    ("memory_type", "text", Text()), ("limit", "bigint", BigInteger()),
    ("offset", "bigint", BigInteger()), ("cap", "bigint", BigInteger()),
    ("window", "bigint", BigInteger()), ("now", "timestamptz", UTCDateTime()),
    ("filter", "text", Text()), ("args", "text[]", ARRAY(Text())),
)  # fmt: skip
_SEARCH_COLUMNS = [
    *_ENTRY_COLUMNS,
    ("expires_at", "expires_at", UTCDateTime()),
    ("ttl_seconds", "ttl_seconds", Float()),
]
SEARCH_PG = Prepared(
    _function_call(
        "abathur_search_memories",
        "s",
        _SEARCH_ARGUMENTS,
        _SEARCH_COLUMNS,
        ' ORDER BY s."updated_at" DESC, s."id" DESC',
    )
)
# The condition of each filter shape, as the function's dynamic statements
# take it: SQL over ``memory_entries.value`` whose parameters are the
# elements of ``$8`` (``p_args``), and the names of its bound values in order.
_PG_FILTERS: dict[tuple[Any, ...], tuple[str, list[tuple[str, Any]]]] = {}
_PG_DIALECT = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]
_DOLLAR = re.compile(r"\$(\d+)")


def _pg_filter(terms: tuple[FilterTerm, ...]) -> tuple[str, list[tuple[str, Any]]]:
    shape = tuple(_term_shape(t) for t in terms)
    found = _PG_FILTERS.get(shape)
    if found is None:
        condition = and_(*[_pg_term(term, f"f{i}") for i, term in enumerate(terms)])
        compiled = condition.compile(dialect=_PG_DIALECT)
        sql = _DOLLAR.sub(lambda m: f"$8[{m.group(1)}]", compiled.string)
        names = [
            (name, compiled.binds[name].effective_value) for name in compiled.positiontup or ()
        ]
        found = (sql, names)
        if len(_PG_FILTERS) >= FILTERED_SEARCHES_KEPT:
            _PG_FILTERS.clear()
        _PG_FILTERS[shape] = found
    return found


def _search_call(params: dict[str, Any], terms: tuple[FilterTerm, ...]) -> dict[str, Any]:
    """The arguments of ``abathur_search_memories`` for a search's parameters
    (``search_params``) and filter."""
    call = {**params, "memory_type": params.get("memory_type"), "filter": None, "args": None}
    if terms:
        values: dict[str, Any] = {}
        for i, term in enumerate(terms):
            values.update(_term_params(term, f"f{i}", True))
        sql, names = _pg_filter(terms)
        call["filter"] = sql
        call["args"] = [values.get(name, default) for name, default in names]
        assert all(isinstance(v, str) for v in call["args"]), call["args"]
    return call


def search_pg(
    executor: Executor, params: dict[str, Any], terms: tuple[FilterTerm, ...]
) -> Sequence[Any]:
    """``MemoryRepository.search`` on PostgreSQL, with its parameters."""
    return SEARCH_PG.all(executor, _search_call(params, terms))


def search_statement(
    root: str,
    memory_type: str | None,
    limit: int,
    *,
    now: datetime,
    offset: int,
    terms: tuple[FilterTerm, ...],
    then: Callable[[list[Any]], T],
) -> OneStatement[T]:
    """``MemoryRepository.search`` on PostgreSQL as a one-statement unit of
    work (``OneStatement``): ``then`` of the rows, the same rows ``search``
    returns there (one call of ``abathur_search_memories``, filtered or not)."""
    params = search_params(root, memory_type, limit, now=now, offset=offset)
    return OneStatement(SEARCH_PG, _search_call(params, terms), then, first=False)
