"""Google ADK on abathur: ``AbathurSessionService``, a ``BaseSessionService``.

Install with ``pip install abathur[adk]``. This is the only module that
imports ``google.adk``. Usage::

    from abathur.integrations.adk import AbathurSessionService

    sessions = AbathurSessionService("agent.db")   # or a Database, or a URL
    runner = Runner(agent=agent, app_name="support", session_service=sessions)

How ADK's contract maps onto abathur (docs/integrations.md has the list of
differences):

- Identity. ADK session ids are unique per (app_name, user_id); abathur's are
  global. An ADK session is stored as the abathur session
  ``adk:<app>/<user>/<id>``, each part percent-encoded (``quote(part,
  safe="")``, so ``/``, ``%`` and ``:`` inside a part are escaped), with
  ``app_name`` and ``user_id`` in their own columns. ``adk_session_id`` and
  ``abathur_session_id`` convert both ways.
- Events. Each ADK ``Event`` is stored as its ``model_dump(mode="json",
  exclude_none=True)`` (bytes as base64) plus ``event_id`` (the event's own
  id) and read back from its JSON text as ``Event.model_validate`` would
  (``STORED_EVENTS``); timestamps stay ADK's float seconds.
  ``after_timestamp`` filters on the event's own timestamp, inclusive;
  ``num_recent_events`` keeps the newest events in append order.
- State. ``app:`` and ``user:`` keys use abathur's shared state scopes;
  ``temp:`` keys are never persisted (ADK's rule, applied here: abathur's core
  keeps them until the session ends).
- Staleness. A session created, read (``get_session``, ``list_sessions``)
  or written through this service carries the seq of its newest event as
  ADK's storage marker; ``append_event`` passes it as ``expected_seq``, so an
  append from an outdated copy raises ADK's ``StaleSessionError`` (a
  ``ValueError``), as ADK's own services do. The appends of one session run
  one at a time in the service, so coroutines sharing a Session are not stale.
- ``last_update_time`` is, as in ADK, the timestamp of the session's newest
  event (the creation time before the first); ``list_sessions`` reports the
  time abathur stored the session's last write instead (see the docs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import uuid
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

from google.adk.errors._stale_session_error import StaleSessionError as AdkStaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError as AdkAlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import URL

from abathur.domain.sessions import SessionLog, SessionWithEvents
from abathur.domain.values import MAX_COUNT
from abathur.errors import (
    AlreadyExistsError,
    NotFoundError,
    StaleSessionError,
    ValidationError,
)
from abathur.infrastructure.database import Database
from abathur.infrastructure.session_service import SessionService
from abathur.integrations.trusted_models import (
    ALWAYS,
    EMPTY_ONLY,
    FIELDS_ONLY,
    NonEmpty,
    StoredModel,
)

PREFIX = "adk:"
# ADK's own message (google.adk.sessions.database_session_service).
STALE_MESSAGE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


# The characters ``quote(part, safe="")`` leaves as they are.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


def abathur_session_id(app_name: str, user_id: str, session_id: str) -> str:
    """The abathur session id of ADK session (app_name, user_id, session_id)."""
    if (
        type(app_name) is str
        and type(user_id) is str
        and type(session_id) is str
        and _UNQUOTED.fullmatch(app_name + user_id + session_id)
    ):  # nothing to quote (uuids, plain names): one regex instead of three quote() calls
        return f"{PREFIX}{app_name}/{user_id}/{session_id}"
    return PREFIX + "/".join(quote(part, safe="") for part in (app_name, user_id, session_id))


def adk_session_id(abathur_id: str) -> tuple[str, str, str] | None:
    """(app_name, user_id, session_id) of an abathur id made by
    ``abathur_session_id``; None for any other id."""
    if not abathur_id.startswith(PREFIX):
        return None
    parts = abathur_id[len(PREFIX) :].split("/")
    if len(parts) != 3:
        return None
    app_name, user_id, session_id = (unquote(p) for p in parts)
    return app_name, user_id, session_id


def _json_safe(state: dict[str, Any]) -> dict[str, Any]:
    """State as ADK's database service persists it: JSON values, anything
    else by its ``str()``; ``temp:`` keys dropped."""
    if not state:  # what the rest makes of {}: a new empty dict
        return {}
    kept = {k: v for k, v in state.items() if not k.startswith(State.TEMP_PREFIX)}
    safe: dict[str, Any] = to_jsonable_python(kept, fallback=str)
    return safe


# What ``Event.model_validate`` runs in Python that changes nothing in an
# Event's own dump (see ``trusted_models``): genai's base model only logs type
# mismatches (objects of another model class, which JSON cannot hold), Part's
# ``__init__`` validates the part again, Event's routing of convenience
# arguments (``message``, ``state``, ...) acts only on keys that are not
# Event's fields, ``Event.model_post_init`` only gives an event without an
# ``id`` a new one, and EventActions' ``_parse_auth_configs`` returns an empty
# ``requested_auth_configs`` as it is. ``event_id`` is the adapter's own key.
STORED_EVENTS = StoredModel(
    Event,
    {
        "google.genai._common.BaseModel._check_field_type_mismatches": ALWAYS,
        "google.genai.types.Part.__init__": ALWAYS,
        "google.adk.events.event.Event._accept_convenience_kwargs": FIELDS_ONLY,
        "google.adk.events.event.Event.model_post_init": NonEmpty(("id",)),
        "google.adk.events.event_actions.EventActions._parse_auth_configs": EMPTY_ONLY,
    },
    dropped=("event_id",),
)


def _to_events(texts: list[str]) -> list[Event]:
    """The Events stored documents (their JSON text) hold, as
    ``Event.model_validate`` returns them. They were validated when they were
    appended, so the no-ops of ``STORED_EVENTS`` are left out."""
    return STORED_EVENTS.many_from_json(texts)


_MARKER = "_storage_update_marker"
_SESSION_FIELDS = frozenset(("id", "app_name", "user_id", "state", "events", "last_update_time"))
_new = object.__new__
_set = object.__setattr__
# ``Session(...)`` of str ids, a float time, a new dict of ``str`` keys and a
# list of Events (``state: dict[str, Any]`` keeps the values, ``events``
# keeps the instances: pydantic does not revalidate them) only copies what it
# is given and sets the marker's default. ``AbathurSessionService._session``
# builds that object directly (as ``BaseModel.model_construct`` does, without
# its per-field loop) while Session is the model this was checked on: these
# six fields, no validator, serializer or post-init hook of its own, one
# private attribute (tests/integrations/test_adk_fast_paths.py compares both).
_RAW_SESSION = (
    Session.model_fields.keys() == _SESSION_FIELDS
    and not any(
        getattr(Session.__pydantic_decorators__, f.name)
        for f in dataclasses.fields(Session.__pydantic_decorators__)
    )
    and Session.__private_attributes__.keys() == {_MARKER}
    and Session.__pydantic_post_init__ == "model_post_init"
    and Session.model_post_init.__qualname__ == "init_private_attributes"  # pydantic's own
    and Session.model_post_init.__module__ == "pydantic._internal._model_construction"
    and cast(Any, Session.__init__) is BaseModel.__init__
    and not Session.model_config.get("validate_assignment")
    and not Session.model_config.get("frozen")
    and not {"__getattr__", "__setattr__"} & vars(Session).keys()
)
# EventActions' ``state_delta`` is a plain field (set as pydantic's
# ``__setattr__`` does: no validation on assignment, not frozen).
_RAW_ACTIONS = (
    "state_delta" in EventActions.model_fields
    and not EventActions.model_config.get("validate_assignment")
    and not EventActions.model_config.get("frozen")
    and "__setattr__" not in vars(EventActions)
)
_HOOKS = (
    "_apply_temp_state",
    "_trim_temp_delta_state",
    "_commit_event_to_session",
    "_update_session_state",
)


def _marker(session: Session) -> str | None:
    """``session._storage_update_marker``; a Session's private attributes
    are in ``__pydantic_private__`` (read there, not through pydantic's
    ``__getattr__``)."""
    if type(session) is Session:
        private = session.__pydantic_private__
        if private is not None and _MARKER in private:
            marker: str | None = private[_MARKER]
            return marker
    return session._storage_update_marker


def _appended(session: Session, last_update_time: float, marker: str) -> None:
    """``session.last_update_time = last_update_time`` and
    ``session._storage_update_marker = marker``, as pydantic's ``__setattr__``
    does them for a Session (a field: ``__dict__`` and the fields set; a
    private attribute: ``__pydantic_private__``)."""
    private = session.__pydantic_private__ if _RAW_SESSION and type(session) is Session else None
    if private is not None:
        session.__dict__["last_update_time"] = last_update_time
        session.__pydantic_fields_set__.add("last_update_time")
        private[_MARKER] = marker
    else:
        session.last_update_time = last_update_time
        session._storage_update_marker = marker


class AbathurSessionService(BaseSessionService):
    """ADK's session service on an abathur database (SQLite or PostgreSQL).

    ``db_or_url`` is a ``Database`` (used as it is: initialise it yourself;
    ``close()`` leaves it open) or a path / SQLAlchemy URL: then the service
    opens the database and brings its schema to the newest revision on first
    use, and ``close()`` (or leaving ``async with``) closes it.
    ``engine_options`` go to ``Database`` in the second case.
    """

    # BaseSessionService's in-memory hooks, not overridden: ``append_event``
    # runs what they do inline (the same steps, in the same order).
    _plain_hooks = _RAW_ACTIONS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plain_hooks = _RAW_ACTIONS and all(
            getattr(cls, name) is getattr(BaseSessionService, name) for name in _HOOKS
        )

    def __init__(self, db_or_url: Database | str | Path | URL, **engine_options: Any):
        if isinstance(db_or_url, Database):
            if engine_options:
                raise ValidationError("engine options apply only when the service opens the URL")
            self._db = db_or_url
            self._owned = False
        else:
            self._db = Database(db_or_url, **engine_options)
            self._owned = True
            self._source = (db_or_url, engine_options)
        self._ready = not self._owned
        self._init_lock = asyncio.Lock()
        # The appends of each session under way in this process, one at a
        # time (as ADK's DatabaseSessionService does): [its lock, its callers].
        self._appending: dict[str, list[Any]] = {}

    @property
    def database(self) -> Database:
        return self._db

    async def _sessions(self) -> SessionService:
        if not self._ready:
            async with self._init_lock:
                if not self._ready:
                    if self._db.closed:  # close()d: open the database again, as ADK's service does
                        url, options = self._source
                        self._db = Database(url, **options)
                    await self._db.initialize()
                    self._ready = True
        return self._db.sessions

    async def close(self) -> None:
        """Close the database if this service opened it (a later call opens
        it again, as a new ``database``)."""
        if self._owned:
            await self._db.close()
            self._ready = False

    async def __aenter__(self) -> AbathurSessionService:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ BaseSessionService

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        sessions = self._db.sessions if self._ready else await self._sessions()
        sid = str(uuid.uuid4()) if session_id is None else session_id
        cid = abathur_session_id(app_name, user_id, sid)
        try:
            created = await sessions.create_session(
                cid, app_name, user_id, initial_state=_json_safe(state or {})
            )
        except AlreadyExistsError as exc:
            raise AdkAlreadyExistsError(f"Session with id {sid} already exists.") from exc
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc
        # What was written, as get_session would read it (one transaction).
        return self._session(
            app_name, user_id, sid, created["state"], 0, [], created["last_update_time"].timestamp()
        )

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        sessions = self._db.sessions if self._ready else await self._sessions()
        cid = abathur_session_id(app_name, user_id, session_id)
        recent = None if config is None else config.num_recent_events
        after = None if config is None else config.after_timestamp
        got: SessionLog | SessionWithEvents | None
        # ADK applies after_timestamp only when truthy; a log holds at most
        # MAX_COUNT events, so a larger num_recent_events reads every one.
        try:
            if recent is not None and not after and recent <= MAX_COUNT:
                got = await sessions.get_session(
                    cid, recent_events=max(recent, 1), events_as_text=True
                )
            else:
                got = await sessions.get_session_log(cid)
        except ValidationError:  # an id too long to store: no such session
            return None
        if got is None:
            return None
        events = _to_events(got["events"])
        updated = events[-1].timestamp if events else got["last_update_time"].timestamp()
        if after:
            events = [e for e in events if e.timestamp >= after]
        if recent is not None:
            events = events[-recent:] if recent else []
        return self._session(
            app_name, user_id, session_id, got["state"], got["last_seq"], events, updated
        )

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        sessions = await self._sessions()
        found: list[Session] = []
        # One read, as ADK's services list: pages read one after another fail
        # when the session a page ends with is deleted before the next.
        try:
            rows = await sessions.list_sessions(app_name=app_name, user_id=user_id, limit=MAX_COUNT)
        except ValidationError:  # names create_session refuses (empty, NUL, too long)
            return ListSessionsResponse()
        listed = []
        for row in rows:
            ids = adk_session_id(row["id"])
            if ids is not None and ids[0] == app_name and ids[1] == row["user_id"]:
                listed.append((ids[2], row))  # an ADK session of this app
        if not listed:
            return ListSessionsResponse()
        # The shared state of every user listed in one read (ADK's service
        # reads its app's user states at once too).
        if user_id is None:
            scopes = await sessions.get_app_shared_state(app_name)
            app_keys, users = scopes["app"], scopes["users"]
        else:
            app_keys, users = await sessions.get_shared_state(app_name, user_id), {}
        for sid, row in listed:
            owner = row["user_id"]
            # The marker: the seq of the newest event, as get_session sets it.
            found.append(
                self._session(
                    app_name,
                    owner,
                    sid,
                    {**row["state"], **app_keys, **users.get(owner, {})},
                    row["last_seq"],
                    [],
                    row["last_update_time"].timestamp(),
                )
            )
        found.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=found)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        sessions = await self._sessions()
        # ADK deletes a missing session silently (also one whose id is too long to store).
        with contextlib.suppress(NotFoundError, ValidationError):
            await sessions.delete_session(abathur_session_id(app_name, user_id, session_id))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        sessions = await self._sessions()
        try:
            shared = await sessions.get_shared_state(app_name, user_id)
        except ValidationError:  # names create_session refuses (empty, NUL, too long)
            return {}
        prefix = State.USER_PREFIX
        return {k[len(prefix) :]: v for k, v in shared.items() if k.startswith(prefix)}

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        sessions = self._db.sessions if self._ready else await self._sessions()
        actions = event.actions
        plain = self._plain_hooks and type(actions) is EventActions
        delta: dict[str, Any] | None
        if plain:  # _apply_temp_state and _trim_temp_delta_state in one pass
            delta = actions.state_delta
            if delta:
                state = session.state
                kept = {}
                for key, value in delta.items():
                    if key.startswith(State.TEMP_PREFIX):
                        state[key] = value
                    else:
                        kept[key] = value
                actions.__dict__["state_delta"] = delta = kept  # pydantic's __setattr__ of a field
                actions.__pydantic_fields_set__.add("state_delta")
        else:
            self._apply_temp_state(session, event)
            event = self._trim_temp_delta_state(event)
            delta = event.actions.state_delta if event.actions else None
        document = {"event_id": event.id, **event.model_dump(mode="json", exclude_none=True)}
        cid = abathur_session_id(session.app_name, session.user_id, session.id)
        # One append of a session at a time: coroutines sharing one Session
        # each read its marker after the previous append set it.
        turn = self._appending.get(cid)
        if turn is None:
            turn = self._appending[cid] = [asyncio.Lock(), 0]
        turn[1] += 1
        try:
            async with turn[0]:
                marker = _marker(session)
                expected = int(marker) if isinstance(marker, str) and marker.isdigit() else None
                seq = await sessions.append_events(
                    cid,
                    [document],
                    _json_safe(dict(delta)) if delta else None,
                    expected_seq=expected,
                )
                _appended(session, event.timestamp, str(seq))
        except StaleSessionError as exc:
            raise AdkStaleSessionError(STALE_MESSAGE) from exc
        except NotFoundError as exc:
            raise SessionNotFoundError(f"Session {session.id} not found.") from exc
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc
        finally:
            turn[1] -= 1
            if not turn[1]:
                del self._appending[cid]
        if plain:  # _commit_event_to_session and _update_session_state
            actions = event.actions
            delta = actions.state_delta if actions else None
            if delta:  # no temp: key left in it (trimmed above)
                session.state.update(delta)
            session.events.append(event)
            return event
        committed: Event = self._commit_event_to_session(session, event)
        return committed

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _session(
        app_name: str,
        user_id: str,
        session_id: str,
        state: dict[str, Any],
        last_seq: int,
        events: list[Event],
        last_update_time: float,
    ) -> Session:
        if (
            _RAW_SESSION
            and type(app_name) is str
            and type(user_id) is str
            and type(session_id) is str
            and type(last_update_time) is float
        ):  # what Session(...) makes of these values, without validating them again
            session: Session = _new(Session)
            _set(
                session,
                "__dict__",
                {
                    "id": session_id,
                    "app_name": app_name,
                    "user_id": user_id,
                    "state": dict(state),
                    "events": events,
                    "last_update_time": last_update_time,
                },
            )
            _set(session, "__pydantic_fields_set__", set(_SESSION_FIELDS))
            _set(session, "__pydantic_extra__", None)
            _set(session, "__pydantic_private__", {_MARKER: str(last_seq)})
            return session
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=dict(state),
            events=events,
            last_update_time=last_update_time,
        )
        session._storage_update_marker = str(last_seq)
        return session
