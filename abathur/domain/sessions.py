"""Session values: what SessionService accepts, and the dicts it returns.

The spec's methods return plain dicts; these models shape them
(``model_dump()``) so every caller sees the same keys, parsed JSON and aware
UTC datetimes. The lifecycle lives here too, as data: which status may follow
which.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SessionStatus = Literal["created", "active", "paused", "terminated", "archived"]
SESSION_STATUSES: tuple[SessionStatus, ...] = (
    "created",
    "active",
    "paused",
    "terminated",
    "archived",
)

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


class Input(BaseModel):
    """Strict: a wrong type is an error, never silently converted."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NewSession(Input):
    id: str = Field(min_length=1)
    app_name: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    project_id: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)


class EventBatch(Input):
    session_id: str = Field(min_length=1)
    events: list[dict[str, Any]]
    state_delta: dict[str, Any] | None = None
    expected_seq: int | None = Field(default=None, ge=0)


class StateKey(Input):
    session_id: str = Field(min_length=1)
    key: str = Field(min_length=1)


class EventQuery(Input):
    recent_events: int | None = Field(default=None, ge=0)
    after: datetime | None = None
    after_seq: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)


class SessionQuery(Input):
    app_name: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    status: SessionStatus | None = None
    limit: int = Field(default=50, ge=1)
    before: str | None = None


class Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class EventRecord(Record):
    """One entry of ``list_events``: the event and its place in the log."""

    seq: int
    event: Any
    created_at: datetime
