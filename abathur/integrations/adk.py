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
- Staleness. A session read or written through this service carries the seq
  of its newest event as ADK's storage marker; ``append_event`` passes it as
  ``expected_seq``, so an append from an outdated copy raises ADK's
  ``StaleSessionError`` (a ``ValueError``), as ADK's own services do.
- ``last_update_time`` is, as in ADK, the timestamp of the session's newest
  event (the creation time before the first); ``list_sessions`` reports the
  time abathur stored the session's last write instead (see the docs).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from google.adk.errors._stale_session_error import StaleSessionError as AdkStaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError as AdkAlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import URL

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
LIST_PAGE = 500


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


class AbathurSessionService(BaseSessionService):
    """ADK's session service on an abathur database (SQLite or PostgreSQL).

    ``db_or_url`` is a ``Database`` (used as it is: initialise it yourself;
    ``close()`` leaves it open) or a path / SQLAlchemy URL: then the service
    opens the database and brings its schema to the newest revision on first
    use, and ``close()`` (or leaving ``async with``) closes it.
    ``engine_options`` go to ``Database`` in the second case.
    """

    def __init__(self, db_or_url: Database | str | Path | URL, **engine_options: Any):
        if isinstance(db_or_url, Database):
            if engine_options:
                raise ValidationError("engine options apply only when the service opens the URL")
            self._db = db_or_url
            self._owned = False
        else:
            self._db = Database(db_or_url, **engine_options)
            self._owned = True
        self._ready = not self._owned
        self._init_lock = asyncio.Lock()

    @property
    def database(self) -> Database:
        return self._db

    async def _sessions(self) -> SessionService:
        if not self._ready:
            async with self._init_lock:
                if not self._ready:
                    await self._db.initialize()
                    self._ready = True
        return self._db.sessions

    async def close(self) -> None:
        """Close the database if this service opened it."""
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
        if recent is not None and not after:  # ADK applies after_timestamp only when truthy
            got = await sessions.get_session(cid, recent_events=max(recent, 1), events_as_text=True)
        else:
            got = await sessions.get_session(cid, events_as_text=True)
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
        shared: dict[str, dict[str, Any]] = {}
        before: str | None = None
        while True:
            page = await sessions.list_sessions(
                app_name=app_name, user_id=user_id, limit=LIST_PAGE, before=before
            )
            for row in page:
                ids = adk_session_id(row["id"])
                if ids is None or ids[0] != app_name or ids[1] != row["user_id"]:
                    continue  # not an ADK session of this app
                owner = row["user_id"]
                if owner not in shared:
                    shared[owner] = await sessions.get_shared_state(app_name, owner)
                found.append(
                    Session(
                        id=ids[2],
                        app_name=app_name,
                        user_id=owner,
                        state={**row["state"], **shared[owner]},
                        events=[],
                        last_update_time=row["last_update_time"].timestamp(),
                    )
                )
            if len(page) < LIST_PAGE:
                break
            before = page[-1]["id"]
        found.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=found)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        sessions = await self._sessions()
        with contextlib.suppress(NotFoundError):  # ADK deletes a missing session silently
            await sessions.delete_session(abathur_session_id(app_name, user_id, session_id))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        sessions = await self._sessions()
        shared = await sessions.get_shared_state(app_name, user_id)
        prefix = State.USER_PREFIX
        return {k[len(prefix) :]: v for k, v in shared.items() if k.startswith(prefix)}

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        sessions = self._db.sessions if self._ready else await self._sessions()
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        delta = event.actions.state_delta if event.actions else None
        document = {"event_id": event.id, **event.model_dump(mode="json", exclude_none=True)}
        marker = session._storage_update_marker
        expected = int(marker) if isinstance(marker, str) and marker.isdigit() else None
        cid = abathur_session_id(session.app_name, session.user_id, session.id)
        try:
            seq = await sessions.append_events(
                cid, [document], _json_safe(dict(delta)) if delta else None, expected_seq=expected
            )
        except StaleSessionError as exc:
            raise AdkStaleSessionError(STALE_MESSAGE) from exc
        except NotFoundError as exc:
            raise SessionNotFoundError(f"Session {session.id} not found.") from exc
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc
        session.last_update_time = event.timestamp
        session._storage_update_marker = str(seq)
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
