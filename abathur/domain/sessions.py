"""Session values: what SessionService accepts, and the dicts it returns.

The spec's methods return plain dicts: ``SessionDict`` and ``EventDict`` name
their keys for type checkers and readers (at run time they are ordinary
dicts), and ``session_dict`` / ``event_dict`` build them from a row. The
lifecycle lives here too, as data: which status may follow which.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, TypedDict, get_args

from pydantic import Field

from abathur.domain import Input, validated
from abathur.domain.values import (
    MAX_COUNT,
    Count,
    Id,
    PositiveCount,
    Text,
    brief_repr,
    check_text,
)
from abathur.errors import ConflictError, StaleSessionError, ValidationError

SessionStatus = Literal["created", "active", "paused", "terminated", "archived"]
SESSION_STATUSES: tuple[SessionStatus, ...] = get_args(SessionStatus)

# created -> active -> (paused <-> active)* -> terminated -> archived; created -> terminated.
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"active", "terminated"}),
    "active": frozenset({"paused", "terminated"}),
    # Beyond the literal lifecycle: a paused session can be ended
    # without waking it first (terminate_session must work on any open session).
    "paused": frozenset({"active", "terminated"}),
    "terminated": frozenset({"archived"}),
    "archived": frozenset(),
}
# No new events or state once a session has ended.
CLOSED_STATUSES = frozenset({"terminated", "archived"})
TEMP_PREFIX = "temp:"
# Shared state scopes: an ``app:`` key is one value for every session of the
# app, a ``user:`` key one value for every session of the (app, user).
APP_PREFIX = "app:"
USER_PREFIX = "user:"
SHARED_PREFIXES = (APP_PREFIX, USER_PREFIX)
# In UTF-8 bytes. A shared key is the third column of the ``shared_state``
# primary key, beside app_name and user_id (``MAX_ID_BYTES`` each): with it,
# one entry stays below PostgreSQL's btree limit (2704 bytes).
MAX_SHARED_KEY_BYTES = 512


def is_shared_key(key: str) -> bool:
    """Whether a state key lives in the shared store (``app:`` / ``user:``)."""
    return key.startswith(SHARED_PREFIXES)


def check_state_key(key: str, what: str) -> str:
    """``key`` unless a backend cannot store it: ValidationError naming
    ``what`` for a lone surrogate or a NUL, or a shared key longer than
    ``MAX_SHARED_KEY_BYTES``. Own keys may be empty and of any length."""
    limit = MAX_SHARED_KEY_BYTES if key.startswith(SHARED_PREFIXES) else None
    return check_text(key, f"{what} {brief_repr(key, 40)}", max_bytes=limit, empty=True)


def split_shared(state: dict[str, Any], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``state`` as (the session's own keys, the ``app:``/``user:`` keys),
    each key checked as ``check_state_key`` does (``what`` names the keys)."""
    own: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    for key, value in state.items():
        # ASCII without NUL and short: what almost every key is, judged here
        # without a call.
        if not key.isascii() or "\x00" in key or len(key) > MAX_SHARED_KEY_BYTES:
            check_state_key(key, what)
        (shared if key.startswith(SHARED_PREFIXES) else own)[key] = value
    return own, shared


def merged_state(own: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """The state a session shows: its own keys and the shared keys its app
    and user see (``own`` itself when there are none)."""
    return {**own, **shared} if shared else own


class NewSession(Input):
    id: Id
    app_name: Id
    user_id: Id
    project_id: Id | None = None
    state: dict[str, Any] = Field(default_factory=dict)


class NewSessionFields(Protocol):
    """A new session's checked fields: a ``NewSession`` or a ``PlainNewSession``."""

    @property
    def id(self) -> str: ...
    @property
    def app_name(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...
    @property
    def state(self) -> dict[str, Any]: ...


class PlainNewSession(NamedTuple):
    """``new_session``'s result for arguments ``NewSession`` takes as they are."""

    id: str
    app_name: str
    user_id: str
    project_id: str | None
    state: dict[str, Any]


def new_session(
    session_id: Any, app_name: Any, user_id: Any, project_id: Any, state: Any
) -> NewSessionFields:
    """``create_session``'s arguments checked as ``validated(NewSession, ...)``
    checks them (``state`` None is ``{}``). Arguments that pass ``Id``'s own
    rule called directly (``check_text``) and a plain dict with ``str`` keys,
    which ``NewSession`` accepts unchanged, skip pydantic (issue 16: the check costs
    more than the rest of the call's client side); any other argument goes
    through ``NewSession``, which returns them or raises its own
    ValidationError. Either way ``state`` is not copied: the caller splits it
    (``split_shared``) into new dicts."""
    if state is None:
        state = {}
    # Plain loops, no generator expressions: each is a code object more to
    # run, and this runs on every create (issue 16: cold caches).
    plain = _str_keyed(state)
    if plain:
        ids = (
            (session_id, app_name, user_id)
            if project_id is None
            else (session_id, app_name, user_id, project_id)
        )
        try:
            for value in ids:
                if type(value) is not str:
                    plain = False
                    break
                check_text(value, "value")
        except ValidationError:  # NewSession raises its own error for it
            plain = False
    if plain:
        return PlainNewSession(session_id, app_name, user_id, project_id, state)
    return validated(
        NewSession,
        id=session_id,
        app_name=app_name,
        user_id=user_id,
        project_id=project_id,
        state=state,
    )


class EventBatch(Input):
    session_id: Id
    events: list[dict[str, Any]]
    state_delta: dict[str, Any] | None = None
    expected_seq: Count | None = None


class EventBatchFields(Protocol):
    """An append's checked arguments: an ``EventBatch`` or a ``PlainEventBatch``."""

    @property
    def session_id(self) -> str: ...
    @property
    def events(self) -> list[dict[str, Any]]: ...
    @property
    def state_delta(self) -> dict[str, Any] | None: ...
    @property
    def expected_seq(self) -> int | None: ...


class PlainEventBatch(NamedTuple):
    """``event_batch``'s result for arguments ``EventBatch`` takes as they are."""

    session_id: str
    events: list[dict[str, Any]]
    state_delta: dict[str, Any] | None
    expected_seq: int | None


def event_batch(
    session_id: Any, events: Any, state_delta: Any, expected_seq: Any
) -> EventBatchFields:
    """``append_events``' arguments checked as ``validated(EventBatch, ...)``
    checks them, as ``new_session`` does for a create: a session id that
    passes ``Id``'s own rule (``check_text``), a ``list`` of ``dict`` events
    and a ``dict`` delta (or None) with ``str`` keys, and an ``int`` seq (not a
    bool) in ``Count``'s range (or None) are exactly what ``EventBatch``
    accepts unchanged, so they skip pydantic (issue 16); anything else goes
    through ``EventBatch``, which returns them or raises its own
    ValidationError. The events and the delta are not copied: the caller
    builds new dicts from them."""
    plain = (
        type(session_id) is str
        and type(events) is list
        and (state_delta is None or _str_keyed(state_delta))
        and (expected_seq is None or (type(expected_seq) is int and 0 <= expected_seq <= MAX_COUNT))
    )
    if plain:
        for event in events:
            if not _str_keyed(event):
                plain = False
                break
    if plain:
        try:
            check_text(session_id, "session_id")
        except ValidationError:  # EventBatch raises its own error for it
            plain = False
    if plain:
        return PlainEventBatch(session_id, events, state_delta, expected_seq)
    return validated(
        EventBatch,
        session_id=session_id,
        events=events,
        state_delta=state_delta,
        expected_seq=expected_seq,
    )


def _str_keyed(value: Any) -> bool:
    """A ``dict`` whose keys are all ``str``: what a strict ``dict[str, Any]``
    takes unchanged."""
    if type(value) is not dict:
        return False
    for key in value:  # noqa: SIM110 - a loop, not all(<generator>): no generator frame
        if type(key) is not str:
            return False
    return True


class StateKey(Input):
    session_id: Id
    key: Text


class EventQuery(Input):
    recent_events: Count | None = None
    after: datetime | None = None
    after_seq: Count | None = None
    limit: PositiveCount | None = None


class SessionQuery(Input):
    app_name: Id | None = None
    user_id: Id | None = None
    project_id: Id | None = None
    status: SessionStatus | None = None
    limit: PositiveCount = 50
    before: Id | None = None


class SessionFields(Protocol):
    """What ``session_dict`` reads: a session row (ORM object or plain row)."""

    @property
    def id(self) -> str: ...
    @property
    def app_name(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def state(self) -> Any: ...
    @property
    def metadata_(self) -> Any: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_update_time(self) -> datetime: ...
    @property
    def terminated_at(self) -> datetime | None: ...
    @property
    def archived_at(self) -> datetime | None: ...


class SessionDict(TypedDict):
    """A session as ``get_session`` and the listings return it."""

    id: str
    app_name: str
    user_id: str
    project_id: str | None
    status: str
    state: dict[str, Any]
    metadata: Any
    created_at: datetime
    last_update_time: datetime
    terminated_at: datetime | None
    archived_at: datetime | None


class SessionWithEvents(SessionDict):
    """``get_session``'s result: the session and (some of) its events."""

    events: list[Any]
    last_seq: int


class ListedSession(SessionDict):
    """An entry of ``list_sessions``: the session (its own state, without
    events) and ``last_seq``, the seq of its newest event (0 before the first)."""

    last_seq: int


class AppSharedState(TypedDict):
    """``get_app_shared_state``'s result: an app's ``app:`` keys and each
    user's ``user:`` keys (by user id; a user without any is absent)."""

    app: dict[str, Any]
    users: dict[str, dict[str, Any]]


class SessionLog(TypedDict):
    """``get_session_log``'s result: of ``get_session(id, events_as_text=True)``,
    the merged state, ``last_update_time``, ``last_seq`` and the event texts."""

    state: dict[str, Any]
    last_update_time: datetime
    last_seq: int
    events: list[str]


def session_dict(row: SessionFields) -> SessionDict:
    """A session as the API returns it (read from the database, whose
    constraints already hold every field to its shape)."""
    return {
        "id": row.id,
        "app_name": row.app_name,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "status": row.status,
        "state": row.state,
        "metadata": row.metadata_,
        "created_at": row.created_at,
        "last_update_time": row.last_update_time,
        "terminated_at": row.terminated_at,
        "archived_at": row.archived_at,
    }


class EventFields(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def event(self) -> Any: ...
    @property
    def created_at(self) -> datetime: ...


class EventDict(TypedDict):
    """One entry of ``list_events``: the event and its place in the log."""

    seq: int
    event: Any
    created_at: datetime


def event_dict(row: EventFields) -> EventDict:
    return {"seq": row.seq, "event": row.event, "created_at": row.created_at}


def session_closed(session_id: str, status: str) -> ConflictError:
    """A write to a terminated or archived session."""
    return ConflictError(f"session {session_id!r} is {status}: it accepts no more writes")


def session_stale(session_id: str, last_seq: int, expected_seq: int) -> StaleSessionError:
    """An append whose ``expected_seq`` is no longer the newest event's seq."""
    return StaleSessionError(
        f"session {session_id!r} is at seq {last_seq}, not the expected {expected_seq}"
    )
