"""Arguments of the wrong type, and values JSON would change, are refused with a
ValidationError on every backend before anything reaches the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from abathur.errors import ValidationError
from abathur.infrastructure.database import Database

CALLS: list[tuple[str, Callable[[Database], Awaitable[Any]]]] = [
    ("get_session", lambda db: db.sessions.get_session(123)),  # type: ignore[arg-type]
    ("update_status", lambda db: db.sessions.update_status(None, "active")),  # type: ignore[arg-type]
    ("get_state id", lambda db: db.sessions.get_state(1, "k")),  # type: ignore[arg-type]
    ("get_state key", lambda db: db.sessions.get_state("s1", ["k"])),  # type: ignore[arg-type]
    ("list_active_sessions", lambda db: db.sessions.list_active_sessions(7)),  # type: ignore[arg-type]
    ("terminate_session", lambda db: db.sessions.terminate_session(b"s1")),  # type: ignore[arg-type]
    ("list_events", lambda db: db.sessions.list_events(1.5)),  # type: ignore[arg-type]
    ("delete_session", lambda db: db.sessions.delete_session("")),
    # Before: KeyError on PostgreSQL (the whole read picks its statement by
    # the flag), the parsed events on SQLite.
    ("get_session events_as_text None", lambda db: db.sessions.get_session(
        "s1", events_as_text=None)),  # type: ignore[arg-type]
    ("get_session events_as_text 1", lambda db: db.sessions.get_session(
        "s1", events_as_text=1)),  # type: ignore[arg-type]
    ("event with int key", lambda db: db.sessions.append_event("s1", {"a": {1: "x"}})),
    ("state with tuple", lambda db: db.sessions.set_state("s1", "k", (1, 2))),
    ("delta with colliding keys", lambda db: db.sessions.append_event(
        "s1", {"t": "x"}, state_delta={"d": {1: "a", "1": "b"}})),
    # An int too long for repr() (found by the hostile-input property test).
    ("get_memory refresh_ttl", lambda db: db.memory.get_memory(
        "user:u", "k", refresh_ttl=10**5000)),  # type: ignore[arg-type]
    ("search refresh_ttl", lambda db: db.memory.search_memories(
        "user:u", refresh_ttl=10**5000)),  # type: ignore[arg-type]
    ("put ttl", lambda db: db.memory.put_memory(
        "user:u", "k", {}, "semantic", by="me", task_id="t", ttl=10**5000)),  # type: ignore[arg-type]
    ("put index", lambda db: db.memory.put_memory(
        "user:u", "k", {}, "semantic", by="me", task_id="t", index=10**5000)),  # type: ignore[arg-type]
    ("delete missing_ok", lambda db: db.memory.delete_memory(
        "user:u", "k", "me", "t", missing_ok=10**5000)),  # type: ignore[arg-type]
]  # fmt: skip


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[c[0] for c in CALLS])
async def test_refused_before_the_database(
    db: Database, name: str, call: Callable[[Database], Awaitable[Any]]
) -> None:
    await db.sessions.create_session("s1", "app", "u", initial_state={"k": 1})
    with pytest.raises(ValidationError):
        await call(db)
    stored = await db.sessions.get_session("s1")
    assert stored is not None and stored["events"] == [] and stored["state"] == {"k": 1}
