"""SessionService: sessions, their event logs and their scoped state.

The eight methods of the Milestone 2 spec, plus paging and batch operations.
Every write is one unit of work (``db.write``) that first locks the session
row (see ``SessionRepository.lock``), so concurrent appenders and state
writers never lose each other's work, and ``db.write`` retries the whole unit
when SQLite reports a lock it could not wait out.

Methods return plain dicts as the spec says: JSON parsed, datetimes aware UTC.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import orm
from sqlalchemy.engine import Connection

from abathur.db.storage import Storage
from abathur.domain import text_arg, validated
from abathur.domain.clock import utcnow
from abathur.domain.sessions import (
    CLOSED_STATUSES,
    SESSION_STATUSES,
    TEMP_PREFIX,
    TRANSITIONS,
    AppSharedState,
    EventDict,
    EventQuery,
    ListedSession,
    SessionDict,
    SessionLog,
    SessionQuery,
    SessionWithEvents,
    StateKey,
    check_state_key,
    event_batch,
    event_dict,
    is_shared_key,
    merged_state,
    new_session,
    session_closed,
    session_dict,
    session_stale,
    split_shared,
)
from abathur.domain.values import bool_arg, brief_repr
from abathur.errors import (
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from abathur.repositories.base import require
from abathur.repositories.sessions import (
    SessionRepository,
    SessionRow,
    append_statement,
    create_statement,
    later,
    log_statement,
    whole_statement,
)
from abathur.repositories.shared_state import SharedStateRepository
from abathur.schema.models import Session
from abathur.strict_json import JSONText, check_json, check_members, loads

EMPTY_STATE = JSONText("{}")  # check_json({})

# uuid.uuid4(): clear the version and variant bits, then set version 4, RFC 4122.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _event_id() -> str:
    """``uuid.uuid4().hex``, without building a UUID object (a third of the cost)."""
    return "%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET)


def _require_aware(value: datetime | None, what: str) -> None:
    if value is not None and value.tzinfo is None:
        raise ValidationError(f"{what} must be a timezone-aware datetime")


def _check_transition(row: SessionRow, status: str) -> None:
    if status not in TRANSITIONS[row.status]:
        allowed = ", ".join(sorted(TRANSITIONS[row.status])) or "none"
        raise InvalidTransitionError(
            f"session {row.id!r} cannot go from {row.status!r} to {status!r} "
            f"(allowed from {row.status!r}: {allowed})"
        )


def _check_open(row: SessionRow) -> None:
    if row.status in CLOSED_STATUSES:
        raise session_closed(row.id, row.status)


class SessionService:
    def __init__(self, db: Storage):
        self._db = db

    # ------------------------------------------------------------ spec API

    async def create_session(
        self,
        session_id: str,
        app_name: str,
        user_id: str,
        project_id: str | None = None,
        initial_state: dict[str, Any] | None = None,
    ) -> SessionDict:
        """Create a session in status ``created``; a duplicate id raises AlreadyExistsError.

        ``app:`` and ``user:`` keys of ``initial_state`` go to the shared state
        of the app / of (app, user), in the same transaction. Returns the new
        session as ``get_session`` would read it at once (without events): its
        ``state`` is the merged view, read in the same transaction."""
        new = new_session(session_id, app_name, user_id, project_id, initial_state)
        state: JSONText
        shared_delta: dict[str, JSONText]
        if new.state:
            own, shared = split_shared(new.state, "initial_state key")
            state = check_json(own, "initial_state")  # stored as this text
            shared_delta = check_members(shared, "initial_state")
        else:  # what those three make of {}: the usual call, without their work
            state, shared_delta = EMPTY_STATE, {}

        def made(created: datetime, seen: dict[str, Any]) -> SessionDict:
            return {
                "id": new.id,
                "app_name": new.app_name,
                "user_id": new.user_id,
                "project_id": new.project_id,
                "status": "created",
                # A copy of the state stored: the document its text reads as.
                "state": {**seen} if state == "{}" else {**loads(state), **seen},
                "metadata": {},
                "created_at": created,
                "last_update_time": created,
                "terminated_at": None,
                "archived_at": None,
            }

        if not shared_delta and not self._db.is_sqlite:
            # PostgreSQL: one statement, awaited without a greenlet (OneStatement).
            return await self._db.write(
                create_statement(new, state, self._db.dialect, made), one_statement=True
            )

        def work(conn: Connection) -> SessionDict:
            # The shared keys first: the INSERT returns the shared state it sees.
            SharedStateRepository(conn).write(new.app_name, new.user_id, shared_delta)
            return made(*SessionRepository(conn).create(new, state))

        return await self._db.write(work, one_statement=not shared_delta)

    async def get_session(
        self,
        session_id: str,
        *,
        recent_events: int | None = None,
        after: datetime | None = None,
        events_as_text: bool = False,
    ) -> SessionWithEvents | None:
        """The session with its ordered ``events``, or None.

        ``recent_events=n`` keeps only the newest n events (0: none);
        ``after`` only events stored after that instant. ``last_seq`` is the
        seq of the newest event in the whole log, for ``expected_seq``.
        ``state`` is the merged view: the session's own keys and the shared
        ``app:`` / ``user:`` keys of its app and user. With ``events_as_text``
        each event is its stored JSON text (a ``str``), for a caller that
        parses or validates it itself, instead of the parsed document.
        """
        text_arg(session_id, "session_id")
        bool_arg(events_as_text, "events_as_text")
        query = validated(EventQuery, recent_events=recent_events, after=after)
        _require_aware(query.after, "after")

        def work(conn: Connection) -> SessionWithEvents | None:
            repo = SessionRepository(conn)
            row = repo.get_with_last_seq(session_id)
            if row is None:
                return None
            shared = SharedStateRepository(conn).read(row.app_name, row.user_id)
            if query.recent_events == 0:
                events: list[Any] = []
            else:
                events = repo.payloads(
                    session_id,
                    after=query.after,
                    last=query.recent_events,
                    as_text=events_as_text,
                )
            return {
                **session_dict(row),
                "state": merged_state(row.state, shared),
                "events": events,
                "last_seq": int(row.last_seq or 0),
            }

        def whole(row: Any) -> SessionWithEvents | None:
            log = _session_log(row)  # the state, events and last_seq it reads too
            return None if log is None else {**session_dict(row), **log}

        if not self._db.is_sqlite and query.after is None and query.recent_events is None:
            # PostgreSQL: the whole session in one statement, one snapshot.
            return await self._db.read(
                whole_statement(session_id, events_as_text, whole), one_statement=True
            )
        return await self._db.read(work)

    async def get_session_log(self, session_id: str) -> SessionLog | None:
        """Of ``get_session(session_id, events_as_text=True)``, only the merged
        ``state``, ``last_update_time``, ``last_seq`` and ``events`` (every
        event's stored JSON text, in seq order), or None: the same values,
        read with fewer columns, for a caller that builds its own session
        object from them (the ADK adapter)."""
        text_arg(session_id, "session_id")
        if self._db.is_sqlite:
            got = await self.get_session(session_id, events_as_text=True)
            if got is None:
                return None
            return {
                "state": got["state"],
                "last_update_time": got["last_update_time"],
                "last_seq": got["last_seq"],
                "events": got["events"],
            }
        # PostgreSQL: ``get_session``'s whole read, its other columns left out.
        return await self._db.read(log_statement(session_id, _session_log), one_statement=True)

    async def append_event(
        self,
        session_id: str,
        event: dict[str, Any],
        state_delta: dict[str, Any] | None = None,
        *,
        expected_seq: int | None = None,
    ) -> None:
        """Append one event and merge ``state_delta`` into the state, atomically
        (``app:`` / ``user:`` keys into the shared state of the app / user).

        ``event_id`` (uuid4 hex) and ``timestamp`` (UTC ISO-8601) are filled in
        when missing. With ``expected_seq``, raise StaleSessionError unless the
        newest event's seq is still that number.
        """
        await self.append_events(session_id, [event], state_delta, expected_seq=expected_seq)

    async def update_status(self, session_id: str, status: str) -> None:
        """Move the session along its lifecycle; an illegal move changes nothing."""
        text_arg(session_id, "session_id")
        if status not in SESSION_STATUSES:
            raise ValidationError(
                f"Invalid status {brief_repr(status)} for a session; "
                f"valid: {', '.join(SESSION_STATUSES)}"
            )

        def work(conn: Connection) -> None:
            repo = SessionRepository(conn)
            row = repo.lock(session_id)
            _check_transition(row, status)
            changes: dict[str, Any] = {"status": status}
            if status == "terminated":
                changes["terminated_at"] = utcnow()
            elif status == "archived":
                changes["archived_at"] = utcnow()
            repo.save(row, **changes)

        await self._db.write(work)

    async def get_state(self, session_id: str, key: str) -> Any | None:
        """The value under ``key``, or None when the key is not set or there is
        no such session (as the specification's reference implementation does).
        An ``app:`` / ``user:`` key reads the shared state of the session's app / user."""
        ref = validated(StateKey, session_id=session_id, key=key)

        def work(conn: Connection) -> Any | None:
            if is_shared_key(ref.key):
                return SharedStateRepository(conn).read_key(ref.session_id, ref.key)
            state = SessionRepository(conn).state_or_none(ref.session_id)
            return None if state is None else state.get(ref.key)

        return await self._db.read(work, one_statement=True)

    async def set_state(self, session_id: str, key: str, value: Any) -> None:
        """Set one state key, keeping every other key (also those written concurrently).
        An ``app:`` / ``user:`` key is set in the shared state of the session's app / user."""
        write = validated(StateKey, session_id=session_id, key=key)
        check_state_key(write.key, "key")
        delta = {write.key: check_json(value, f"state value of {key!r}")}
        shared = is_shared_key(write.key)

        def work(conn: Connection) -> None:
            repo = SessionRepository(conn)
            row = repo.lock(write.session_id)
            _check_open(row)
            if shared:
                repo.save(row)
                SharedStateRepository(conn).write(row.app_name, row.user_id, delta)
            else:
                repo.merge_state(row, delta)

        await self._db.write(work)

    async def list_active_sessions(self, user_id: str | None = None) -> list[SessionDict]:
        """Active sessions, most recently updated first (without their events)."""
        if user_id is not None:
            text_arg(user_id, "user_id")

        def work(session: orm.Session) -> list[SessionDict]:
            rows = SessionRepository(session).list_active(user_id)
            return [session_dict(r) for r in rows]

        return await self._db.run(work, write=False)

    async def terminate_session(self, session_id: str) -> None:
        """Status ``terminated``, ``terminated_at`` set, every ``temp:`` key dropped."""
        text_arg(session_id, "session_id")

        def work(conn: Connection) -> None:
            repo = SessionRepository(conn)
            row = repo.lock(session_id, with_state=True)
            _check_transition(row, "terminated")
            kept = {k: v for k, v in row.state.items() if not k.startswith(TEMP_PREFIX)}
            repo.save(row, status="terminated", terminated_at=utcnow(), state=kept)

        await self._db.write(work)

    # ------------------------------------------------------------ beyond the spec

    async def append_events(
        self,
        session_id: str,
        events: list[dict[str, Any]],
        state_delta: dict[str, Any] | None = None,
        *,
        expected_seq: int | None = None,
    ) -> int:
        """Append a batch of events (in order) and merge ``state_delta``, in one
        transaction (``app:`` / ``user:`` keys into the shared state, as
        ``append_event``). Returns the seq of the last event now in the log."""
        batch = event_batch(session_id, events, state_delta, expected_seq)
        now = utcnow()
        stamp: str | None = None
        stamped = []
        for event in batch.events:
            # An event's own ``event_id`` and ``timestamp`` win (``**event``):
            # the ones made here only when it has none (a random id is a
            # system call, and the ADK adapter's events carry both).
            event_id = event["event_id"] if "event_id" in event else _event_id()
            if "timestamp" in event:
                timestamp = event["timestamp"]
            else:
                timestamp = stamp = stamp or now.isoformat()
            stamped.append({"event_id": event_id, "timestamp": timestamp, **event})
        documents = [check_json(event, "event") for event in stamped]  # serialised once
        own, shared = split_shared(batch.state_delta or {}, "state_delta key")
        delta = check_members(own, "state_delta")
        shared_delta = check_members(shared, "state_delta")

        def work(conn: Connection) -> int:
            repo = SessionRepository(conn)
            row, last = repo.lock_for_append(batch.session_id)
            _check_open(row)
            if batch.expected_seq is not None and batch.expected_seq != last:
                raise session_stale(batch.session_id, last, batch.expected_seq)
            # Stored after the lock, and after the session's last write: the
            # log's seq order is its created_at order, even across processes
            # (``get_session(after=...)`` relies on it).
            repo.add_events(batch.session_id, documents, last + 1, later(row.last_update_time))
            repo.merge_state(row, delta)
            SharedStateRepository(conn).write(row.app_name, row.user_id, shared_delta)
            return last + len(stamped)

        if not self._db.is_sqlite and not shared_delta:
            # PostgreSQL: the same unit as one statement (abathur_append_events).
            return await self._db.write(
                append_statement(
                    session_id=batch.session_id,
                    documents=documents,
                    delta=delta,
                    expected_seq=batch.expected_seq,
                    now=now,
                ),
                one_statement=True,
            )
        return await self._db.write(work)

    async def list_events(
        self, session_id: str, *, after_seq: int | None = None, limit: int = 100
    ) -> list[EventDict]:
        """A page of the log in seq order: ``{"seq", "event", "created_at"}`` dicts.
        Pass the last ``seq`` of a page as ``after_seq`` to get the next."""
        text_arg(session_id, "session_id")
        query = validated(EventQuery, after_seq=after_seq, limit=limit)

        def work(conn: Connection) -> list[EventDict]:
            require(conn, Session, session_id, "session")
            rows = SessionRepository(conn).events(
                session_id, after_seq=query.after_seq, limit=query.limit
            )
            return [event_dict(r) for r in rows]

        return await self._db.read(work)

    async def list_sessions(
        self,
        *,
        app_name: str | None = None,
        user_id: str | None = None,
        project_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[ListedSession]:
        """Sessions newest first (without events), each with ``last_seq`` (the
        seq of its newest event, as ``get_session`` reads it, for
        ``expected_seq``). For the next page pass the id of the last session
        of this one as ``before``."""
        query = validated(
            SessionQuery,
            app_name=app_name,
            user_id=user_id,
            project_id=project_id,
            status=status,
            limit=limit,
            before=before,
        )

        def work(session: orm.Session) -> list[ListedSession]:
            rows = SessionRepository(session).page(query)
            return [{**session_dict(r), "last_seq": int(r.last_seq or 0)} for r in rows]

        return await self._db.run(work, write=False)

    async def get_shared_state(self, app_name: str, user_id: str | None = None) -> dict[str, Any]:
        """The shared state keys (with their prefixes): the ``app:`` keys of
        ``app_name`` and, given ``user_id``, that user's ``user:`` keys. They
        exist without any session (a deleted session leaves them in place)."""
        text_arg(app_name, "app_name")
        if user_id is not None:
            text_arg(user_id, "user_id")

        def work(conn: Connection) -> dict[str, Any]:
            return SharedStateRepository(conn).read(app_name, user_id)

        return await self._db.read(work, one_statement=True)

    async def get_app_shared_state(self, app_name: str) -> AppSharedState:
        """Every shared key of ``app_name`` in one read: ``app``, its ``app:``
        keys, and ``users``, each user's ``user:`` keys by user id (users
        without any left out). ``get_shared_state(app_name, user)`` is
        ``{**app, **users.get(user, {})}``: one read instead of one per user
        for a caller that shows the sessions of many users."""
        text_arg(app_name, "app_name")

        def work(conn: Connection) -> AppSharedState:
            return SharedStateRepository(conn).read_app(app_name)

        return await self._db.read(work, one_statement=True)

    async def delete_session(self, session_id: str) -> None:
        """Delete the session and its events; tasks, agents and checkpoints that
        referred to it keep their rows with ``session_id`` NULL."""
        text_arg(session_id, "session_id")

        def work(conn: Connection) -> None:
            if not SessionRepository(conn).delete(session_id):
                raise NotFoundError(f"session {session_id!r} not found")

        await self._db.write(work)


def _session_log(row: Any) -> SessionLog | None:
    """``get_session_log``'s result from ``log_statement``'s row, or from
    ``whole_statement``'s (``get_session`` adds the session's other fields)."""
    if row is None:
        return None
    return {
        "state": merged_state(row.state, row.shared),
        "last_update_time": row.last_update_time,
        "last_seq": int(row.last_seq or 0),
        "events": row.events,
    }
