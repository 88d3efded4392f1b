"""SessionRepository: the SQL of sessions and their event logs.

Writers call ``lock()`` first: ``SELECT ... FOR UPDATE`` on PostgreSQL; on
SQLite the write transaction already holds the database's write lock from
``BEGIN IMMEDIATE`` (SQLAlchemy renders no FOR UPDATE there). Everything that reads the row
and writes it back happens after that lock, in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    column,
    delete,
    func,
    literal_column,
    select,
    text,
    tuple_,
    type_coerce,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError

from abathur.db.errors import error_detail, is_duplicate_key, sqlstate
from abathur.db.sqlite.prepared import Executor, OneStatement, Prepared
from abathur.domain.clock import utcnow
from abathur.domain.sessions import (
    EventFields,
    NewSessionFields,
    SessionFields,
    SessionQuery,
    session_closed,
    session_stale,
)
from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.repositories.base import dialect_name
from abathur.schema.models import Session, SessionEvent
from abathur.schema.types import JSONDocument, JSONDocumentArray, JSONLog, UTCDateTime
from abathur.strict_json import JSONText, dumps, loads

# The WHERE clause of idx_sessions_status_updated, repeated in the queries with
# literal values: SQLite uses a partial index only when the query contains the
# index's own term, and a bound parameter does not match it.
T = TypeVar("T")
LIVE_STATUSES = ("active", "paused")
IN_LIVE_STATUSES = Session.status.in_([literal_column(f"'{s}'") for s in LIVE_STATUSES])


# The statements every append and read runs, built once (constructing a
# statement per call costs about as much as running it) and run on the fast
# path (``prepared``). Rows are plain named tuples with the model's attribute
# names (``row.metadata_``), not ORM objects.
SESSIONS: Table = Session.__table__  # type: ignore[assignment]
EVENTS: Table = SessionEvent.__table__  # type: ignore[assignment]
SESSION_FIELDS = tuple(
    getattr(Session, prop.key).label(prop.key) for prop in sa_inspect(Session).column_attrs
)
# The fields a writer works on, locked. SQLite renders no FOR UPDATE: BEGIN
# IMMEDIATE already took the write lock. Not the state: writers merge keys
# into it in the database (``merge_state``) without reading it.
LOCK_FIELDS = (
    Session.id.label("id"),
    Session.app_name.label("app_name"),
    Session.user_id.label("user_id"),
    Session.status.label("status"),
    Session.last_update_time.label("last_update_time"),
)
LOCK = Prepared(select(*LOCK_FIELDS).where(Session.id == bindparam("id")).with_for_update())
LOCK_WITH_STATE = Prepared(  # for a writer that rewrites the state whole (terminate)
    select(*LOCK_FIELDS, Session.state.label("state"))
    .where(Session.id == bindparam("id"))
    .with_for_update()
)
GET_STATE = Prepared(select(Session.state).where(Session.id == bindparam("id")))
LAST_SEQ = Prepared(
    select(func.max(SessionEvent.seq)).where(SessionEvent.session_id == bindparam("id"))
)


# The seq of the newest event of the session row a statement reads (NULL
# before the first): one probe of uq_session_events_session_id_seq per row.
NEWEST_SEQ = (
    select(func.max(SessionEvent.seq))
    .where(SessionEvent.session_id == Session.id)
    .scalar_subquery()
    .label("last_seq")
)


def _with_last_seq(*fields: Any) -> Prepared:
    """``fields`` of session ``:id`` and ``last_seq``, the seq of its newest event."""
    return Prepared(select(*fields, NEWEST_SEQ).where(Session.id == bindparam("id")))


GET_WITH_LAST_SEQ = _with_last_seq(*SESSION_FIELDS)


# An event's stored JSON text, by dialect (``get_session(events_as_text=True)``).
EVENT_TEXTS = {
    "sqlite": type_coerce(SessionEvent.event, Text).label("event"),
    "postgresql": cast(SessionEvent.event, Text).label("event"),
}


# PostgreSQL: a session, ``last_seq``, the shared state it sees (one JSON
# object) and its events' JSON texts in seq order (one text array), in one
# statement: one snapshot, one round trip (``get_session``). The query runs in
# ``abathur_session_whole`` (revision 0018_session_read_function), planned once
# per connection rather than at every read; ``last_seq`` and the events come
# from one LATERAL aggregate over the session's log (one walk of it instead of
# a second probe of the index for the newest seq).
def _from_whole(*columns: Any) -> Prepared:
    """``columns`` of ``abathur_session_whole``'s row, each a column of the
    function's own name or ``(its name, the column it is read as)``."""
    pairs = [c if isinstance(c, tuple) else (c.name, c) for c in columns]
    listed = ", ".join(f"{name} AS {c.name}" if name != c.name else name for name, c in pairs)
    return Prepared(
        text(f"SELECT {listed} FROM abathur_session_whole(CAST(:id AS text))")
        .bindparams(bindparam("id", type_=Text()))
        .columns(*(c for _, c in pairs))
    )


# The session's columns by their names in the table (the function's), read
# as the mapped attributes' keys (``metadata`` as ``metadata_``).
_SESSION_COLUMNS = tuple(
    (prop.columns[0].name, column(prop.key, prop.columns[0].type))
    for prop in sa_inspect(Session).column_attrs
)
_LAST_SEQ = column("last_seq", Integer())
_SHARED = column("shared", JSONDocument())
_EVENT_TEXTS = column("events", ARRAY(Text))
# By events_as_text: the events as their texts, or parsed in one parse of
# their JSON array (``JSONDocumentArray``).
GET_WHOLE_PG = {
    as_text: _from_whole(
        *_SESSION_COLUMNS,
        _LAST_SEQ,
        _SHARED,
        _EVENT_TEXTS if as_text else column("events", JSONDocumentArray()),
    )
    for as_text in (False, True)
}
# ``get_session_log`` (the ADK adapter's whole read): only the columns that
# read returns: nine columns fewer to send, decode and convert (one JSON
# object and three timestamps among them).
GET_LOG_PG = _from_whole(
    column("state", Session.state.type),
    column("last_update_time", Session.last_update_time.type),
    _LAST_SEQ,
    _SHARED,
    _EVENT_TEXTS,
)
LOCK_WITH_LAST_SEQ = _with_last_seq(*LOCK_FIELDS)  # SQLite only: see ``lock_for_append``
# The INSERT of a new session returns the shared state its app and user see,
# as one JSON object (``SharedStateRepository.read``'s rows), so creating a
# session and reading its merged state is one statement, by dialect.
#
# SQLite: written as SQL text in the RETURNING clause (SQLAlchemy renders
# RETURNING on SQLite without table names, which a correlated subquery needs).
#
# PostgreSQL: the shared state through ``abathur_shared_state`` (revision
# 0015_session_plans), the same query planned once per connection rather than
# with every INSERT; and the INSERT lean (issue 16): the constant columns as
# literals, one timestamp bound once for both, and the state bound as the
# JSON text ``check_json`` made, cast to jsonb by the server: six parameters
# instead of nine, and no bind processor but the timestamp's. It stores what
# SQLite's INSERT stores (``test_create_returns_the_session_as_stored``).
CREATES = {
    "sqlite": Prepared(
        SESSIONS.insert().returning(
            literal_column(
                "(SELECT json_group_object(shared_state.key, json(shared_state.value)) "
                "FROM shared_state WHERE shared_state.app_name = sessions.app_name"
                " AND shared_state.user_id IN ('', sessions.user_id))",
                JSONDocument(),
            ).label("shared")
        )
    ),
    "postgresql": Prepared(
        text(
            "INSERT INTO sessions (id, app_name, user_id, project_id, status, state, metadata, "
            "created_at, last_update_time) VALUES (:id, :app_name, :user_id, :project_id, "
            "'created', CAST(:state AS jsonb), '{}', :now, :now) "
            "RETURNING abathur_shared_state(sessions.app_name, sessions.user_id) AS shared"
        )
        .bindparams(
            bindparam("id", type_=Text()),
            bindparam("app_name", type_=Text()),
            bindparam("user_id", type_=Text()),
            bindparam("project_id", type_=Text()),
            bindparam("state", type_=Text()),
            bindparam("now", type_=UTCDateTime()),
        )
        .columns(column("shared", JSONDocument()))
    ),
}
SAVE = Prepared(SESSIONS.update().where(SESSIONS.c.id == bindparam("row_id")))
ADD_EVENTS = Prepared(EVENTS.insert())
EventRow = EventFields


class SessionRow(Protocol):
    """A session row a writer locked (``LOCK_FIELDS``), or a whole one read
    with its ``last_seq``: named tuples or Rows, both read as row.field."""

    @property
    def id(self) -> str: ...
    @property
    def app_name(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def last_update_time(self) -> datetime: ...
    @property
    def state(self) -> Any: ...
    @property
    def last_seq(self) -> int | None: ...


class StoredSession(SessionFields, Protocol):
    """A whole session row with ``last_seq``, the seq of its newest event."""

    @property
    def last_seq(self) -> int | None: ...


EVENT_FIELDS = tuple(
    getattr(SessionEvent, prop.key).label(prop.key)
    for prop in sa_inspect(SessionEvent).column_attrs
)
# get_session's events: the documents alone, without the per-row timestamps;
# or their JSON text, for a caller that parses it itself. SQLite stores the
# text (read as it is: a CAST would copy each value); PostgreSQL's driver
# parses a json value unless the statement casts it to text.
ALL_PAYLOADS = Prepared(
    select(SessionEvent.event.label("event"))
    .where(SessionEvent.session_id == bindparam("id"))
    .order_by(SessionEvent.seq)
)
ALL_PAYLOAD_TEXTS = {
    dialect: Prepared(
        select(text).where(SessionEvent.session_id == bindparam("id")).order_by(SessionEvent.seq)
    )
    for dialect, text in EVENT_TEXTS.items()
}


# State keys that SQLite's JSON path syntax (``$."key"``) addresses exactly:
# none of the characters JSON escapes, which a path would not match.
_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')
# ``json_set`` takes two arguments a key after the state, and SQLite allows a
# function 127 (SQLITE_MAX_FUNCTION_ARG): a larger delta takes the slow way.
_MAX_SET_KEYS = 63
_MERGES: dict[tuple[str, int], Prepared] = {}


def _merge(dialect: str, keys: int) -> Prepared:
    """``UPDATE sessions`` merging ``keys`` top-level keys into the state:
    SQLite ``json_set(state, path_0, json(value_0), ...)``, PostgreSQL
    ``state || delta``. Both replace each key's whole value and keep the rest."""
    if dialect != "sqlite":
        keys = 0  # ``state || :delta``: one statement whatever the number of keys
    statement = _MERGES.get((dialect, keys))
    if statement is None:
        state = SESSIONS.c.state
        if dialect == "sqlite":
            pairs: list[Any] = []
            for i in range(keys):
                pairs += [bindparam(f"path_{i}", type_=Text), func.json(bindparam(f"value_{i}"))]
            merged: Any = func.json_set(state, *pairs)
        else:
            merged = state.op("||")(bindparam("delta", type_=state.type))
        statement = _MERGES[(dialect, keys)] = Prepared(
            SESSIONS.update().where(SESSIONS.c.id == bindparam("row_id")).values(state=merged)
        )
    return statement


def later(previous: datetime) -> datetime:
    """Now, or just after ``previous`` if the clock has not moved past it."""
    now = utcnow()
    return now if now > previous else previous + timedelta(microseconds=1)


class SessionRepository:
    """Writes and event reads also run on a bare connection (``Database.write``)."""

    def __init__(self, executor: Executor):
        self.executor = executor

    # ------------------------------------------------------------ sessions

    def create(self, new: NewSessionFields, state: Any) -> tuple[datetime, dict[str, Any]]:
        """Insert the session in status ``created`` with ``state`` (a document,
        or its text as ``check_json`` returned it). Returns its creation time
        and the shared state it sees (``SharedStateRepository.read``), read by
        the INSERT itself."""
        unit = create_statement(new, state, dialect_name(self.executor), _created)
        return unit(self.executor)

    def get_with_last_seq(self, session_id: str) -> StoredSession | None:
        """The session with ``last_seq``, the seq of its newest event (None when
        there is none), read in one statement."""
        return GET_WITH_LAST_SEQ.first(self.executor, {"id": session_id})

    def lock(self, session_id: str, *, with_state: bool = False) -> SessionRow:
        """The session row, locked against other writers until the transaction
        ends; ``with_state`` adds the state document."""
        row = (LOCK_WITH_STATE if with_state else LOCK).first(self.executor, {"id": session_id})
        if row is None:
            raise NotFoundError(f"session {session_id!r} not found")
        locked: SessionRow = row
        return locked

    def lock_for_append(self, session_id: str) -> tuple[SessionRow, int]:
        """The locked session row and the seq of its newest event (0 if none).

        SQLite reads both in one statement: the write lock taken at ``BEGIN
        IMMEDIATE`` means nobody appends in between. PostgreSQL needs a
        statement of its own after the lock: a subquery in the locking SELECT
        would see the snapshot from before the lock wait and hand two writers
        the same seq (test_session_concurrency catches it).
        """
        if dialect_name(self.executor) == "sqlite":
            row = LOCK_WITH_LAST_SEQ.first(self.executor, {"id": session_id})
            if row is None:
                raise NotFoundError(f"session {session_id!r} not found")
            return row, int(row.last_seq or 0)
        return self.lock(session_id), self.last_seq(session_id)

    def save(self, row: SessionRow, **changes: Any) -> None:
        """Write ``changes`` to a locked row and advance its ``last_update_time``."""
        changes["last_update_time"] = later(row.last_update_time)
        SAVE.execute(self.executor, {"row_id": row.id, **changes})

    def state(self, session_id: str) -> dict[str, Any]:
        """The session's state document; NotFoundError when there is no session."""
        state = self.state_or_none(session_id)
        if state is None:
            raise NotFoundError(f"session {session_id!r} not found")
        return state

    def state_or_none(self, session_id: str) -> dict[str, Any] | None:
        """The session's state document; None when there is no session."""
        state: dict[str, Any] | None = GET_STATE.scalar(self.executor, {"id": session_id})
        return state

    def merge_state(self, row: SessionRow, delta: Mapping[str, JSONText]) -> None:
        """Set ``delta``'s keys (values as ``check_json`` text) in a locked row's
        state, keeping every other key, and advance its ``last_update_time``.

        The database merges: the state is neither read nor rewritten whole
        here, so a write costs the same whatever the state's size. A key SQLite's
        JSON paths cannot name exactly (one with a quote, a backslash or a
        control character), or more keys than one ``json_set`` takes
        (``_MAX_SET_KEYS``), take the slow way: read, merge, write.
        """
        if not delta:
            self.save(row)
            return
        changes: dict[str, Any] = {
            "row_id": row.id,
            "last_update_time": later(row.last_update_time),
        }
        dialect = dialect_name(self.executor)
        if dialect != "sqlite":
            members = ",".join(f"{dumps(key)}:{value}" for key, value in delta.items())
            changes["delta"] = JSONText(f"{{{members}}}")
        elif len(delta) <= _MAX_SET_KEYS and all(_PLAIN_KEY.fullmatch(key) for key in delta):
            for i, (key, value) in enumerate(delta.items()):
                changes[f"path_{i}"] = f'$."{key}"'
                changes[f"value_{i}"] = value
        else:
            merged = {**self.state(row.id), **{k: loads(v) for k, v in delta.items()}}
            SAVE.execute(self.executor, {**changes, "state": merged})
            return
        _merge(dialect, len(delta)).execute(self.executor, changes)

    def delete(self, session_id: str) -> bool:
        """Delete the session; its events go with it, other references become NULL."""
        result = self.executor.execute(
            delete(Session).where(Session.id == session_id).returning(Session.id)
        )
        return result.scalar() is not None

    def list_active(self, user_id: str | None) -> Sequence[Session]:
        query = (
            select(Session)
            .where(Session.status == "active", IN_LIVE_STATUSES)
            .order_by(Session.last_update_time.desc())
        )
        if user_id is not None:
            query = query.where(Session.user_id == user_id)
        return (self.executor.scalars(query)).all()

    def page(self, q: SessionQuery) -> Sequence[StoredSession]:
        """A page of sessions with their ``last_seq``, newest first, as plain
        rows; ``q.before`` is the id of the previous page's last session
        (keyset paging: stable under inserts)."""
        conditions: list[ColumnElement[bool]] = []
        if q.app_name is not None:
            conditions.append(Session.app_name == q.app_name)
        if q.user_id is not None:
            conditions.append(Session.user_id == q.user_id)
        if q.project_id is not None:
            conditions.append(Session.project_id == q.project_id)
        if q.status is not None:
            conditions.append(Session.status == q.status)
            if q.status in LIVE_STATUSES:
                conditions.append(IN_LIVE_STATUSES)
        if q.before is not None:
            cursor = (
                self.executor.execute(
                    select(Session.created_at, Session.id).where(Session.id == q.before)
                )
            ).one_or_none()
            if cursor is None:
                raise NotFoundError(f"cursor session {q.before!r} not found")
            conditions.append(tuple_(Session.created_at, Session.id) < tuple(cursor))
        query = (
            select(*SESSION_FIELDS, NEWEST_SEQ)
            .where(*conditions)
            .order_by(Session.created_at.desc(), Session.id.desc())
            .limit(q.limit)
        )
        rows: Sequence[StoredSession] = self.executor.execute(query).all()
        return rows

    # ------------------------------------------------------------ events

    def last_seq(self, session_id: str) -> int:
        return int(LAST_SEQ.scalar(self.executor, {"id": session_id}) or 0)

    def add_events(
        self, session_id: str, events: Sequence[Any], first_seq: int, created_at: datetime
    ) -> None:
        if not events:
            return
        ADD_EVENTS.execute_many(
            self.executor,
            [
                {
                    "session_id": session_id,
                    "seq": first_seq + i,
                    "event": event,
                    "created_at": created_at,
                }
                for i, event in enumerate(events)
            ],
        )

    def payloads(
        self,
        session_id: str,
        *,
        after: datetime | None = None,
        last: int | None = None,
        as_text: bool = False,
    ) -> list[Any]:
        """The event documents alone, in seq order (filters as for ``events``);
        with ``as_text``, each document's JSON text instead."""
        dialect = dialect_name(self.executor) if as_text else ""
        if after is None and last is None:
            every = ALL_PAYLOAD_TEXTS[dialect] if as_text else ALL_PAYLOADS
            return every.column(self.executor, {"id": session_id})
        fields = (EVENT_TEXTS[dialect] if as_text else SessionEvent.event.label("event"),)
        return [row.event for row in self.events(session_id, after=after, last=last, fields=fields)]

    def events(
        self,
        session_id: str,
        *,
        after_seq: int | None = None,
        after: datetime | None = None,
        last: int | None = None,
        limit: int | None = None,
        fields: Sequence[Any] = EVENT_FIELDS,
    ) -> Sequence[EventRow]:
        """Events in seq order: those after ``after_seq`` and stored after
        ``after``; ``last`` keeps only the newest N; ``limit`` the oldest N.
        Plain rows with the model's attribute names (or ``fields``), not ORM objects."""
        query = select(*fields).where(SessionEvent.session_id == session_id)
        if after_seq is not None:
            query = query.where(SessionEvent.seq > after_seq)
        if after is not None:
            query = query.where(SessionEvent.created_at > after)
        if last is not None:
            newest = (
                self.executor.execute(query.order_by(SessionEvent.seq.desc()).limit(last))
            ).all()
            return newest[::-1]
        query = query.order_by(SessionEvent.seq)
        if limit is not None:
            query = query.limit(limit)
        return (self.executor.execute(query)).all()


# ------------------------------------------------------------ one append in one statement (PG)
#
# ``append_events`` without shared keys in its delta runs on PostgreSQL as one
# call of ``abathur_append_events`` (revision 0011), sent in autocommit (one
# round trip); its refusals come back as SQLSTATEs of class AB, mapped here.

SESSION_MISSING = "AB101"
SESSION_CLOSED = "AB102"
SESSION_STALE = "AB103"
APPEND_EVENTS_PG = Prepared(
    text(
        "SELECT abathur_append_events(CAST(:session_id AS text), CAST(:events AS json), "
        "CAST(:delta AS jsonb), CAST(:expected_seq AS integer), CAST(:now AS timestamptz)) "
        "AS last_seq"
    )
    .bindparams(
        bindparam("session_id", type_=Text()),
        bindparam("events", type_=JSONLog()),
        bindparam("delta", type_=JSONDocument()),
        bindparam("expected_seq", type_=Integer()),
        bindparam("now", type_=UTCDateTime()),
    )
    .columns(column("last_seq", Integer()))
)


def append_statement(
    *,
    session_id: str,
    documents: Sequence[JSONText],
    delta: Mapping[str, JSONText],
    expected_seq: int | None,
    now: datetime,
) -> OneStatement[int]:
    """PostgreSQL: ``documents`` (events as ``check_json`` text) appended and
    ``delta`` merged into the state, as ``SessionService.append_events``' unit
    does it, in one statement (``abathur_append_events``), as a one-statement
    unit of work (``OneStatement``): the seq of the last event now in the log.
    Refusals raise what ``SessionService.append_events``' unit raises, with
    the same messages."""
    members = ",".join(f"{dumps(key)}:{value}" for key, value in delta.items())
    params = {
        "session_id": session_id,
        "events": JSONText("[" + ",".join(documents) + "]"),
        "delta": JSONText(f"{{{members}}}"),
        "expected_seq": expected_seq,
        "now": now,
    }

    def failed(exc: DBAPIError) -> None:
        code = sqlstate(exc)
        if code == SESSION_MISSING:
            raise NotFoundError(f"session {session_id!r} not found") from exc
        if code == SESSION_CLOSED:
            raise session_closed(session_id, error_detail(exc) or "closed") from exc
        if code == SESSION_STALE:
            assert expected_seq is not None
            raise session_stale(session_id, int(error_detail(exc) or 0), expected_seq) from exc

    return OneStatement(APPEND_EVENTS_PG, params, _last_seq, failed=failed)


def _last_seq(row: Any) -> int:
    assert row is not None  # the function returns the last seq, or raises
    return int(row.last_seq)


def create_statement(
    new: NewSessionFields,
    state: Any,
    dialect: str,
    then: Callable[[datetime, dict[str, Any]], T],
) -> OneStatement[T]:
    """``SessionRepository.create`` on ``dialect`` as a one-statement unit of
    work (``OneStatement``): ``then(created_at, shared state seen)``. A
    duplicate id raises ``AlreadyExistsError``."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": new.id,
        "app_name": new.app_name,
        "user_id": new.user_id,
        "project_id": new.project_id,
    }
    if dialect == "postgresql":  # see ``CREATES``
        values["state"] = dumps(state)  # the text as it is (``check_json``'s), or a document's
        values["now"] = now
    else:
        values |= {
            "status": "created",
            "state": state,
            "metadata": {},
            "created_at": now,
            "last_update_time": now,
        }

    def failed(exc: DBAPIError) -> None:
        if isinstance(exc, IntegrityError) and is_duplicate_key(exc):
            raise AlreadyExistsError(f"session {new.id!r} already exists") from exc

    def created(row: Any) -> T:
        assert row is not None  # an INSERT of one row returns it
        return then(now, row.shared)

    return OneStatement(CREATES[dialect], values, created, failed=failed)


def _created(now: datetime, shared: dict[str, Any]) -> tuple[datetime, dict[str, Any]]:
    return now, shared


def log_statement(session_id: str, then: Callable[[Any], T]) -> OneStatement[T]:
    """PostgreSQL: ``whole_statement``'s read with the events as text, only
    its ``state``, ``last_update_time``, ``last_seq``, ``shared`` and
    ``events`` (``GET_LOG_PG``): ``then`` of the row, or of None."""
    return OneStatement(GET_LOG_PG, {"id": session_id}, then)


def whole_statement(session_id: str, as_text: bool, then: Callable[[Any], T]) -> OneStatement[T]:
    """PostgreSQL: the session as ``get_with_last_seq`` reads it, with
    ``shared`` (the shared state it sees) and ``events`` (every event document,
    or with ``as_text`` its JSON text, in seq order), read by one statement, as
    a one-statement unit of work (``OneStatement``): ``then`` of the row, or of
    None."""
    return OneStatement(GET_WHOLE_PG[as_text], {"id": session_id}, then)
