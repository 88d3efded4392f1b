"""A read sees one snapshot: an append committed between its statements is
either wholly visible (event and state) or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from sqlalchemy.util import await_only

from abathur.infrastructure.database import Database
from abathur.repositories.sessions import SessionRepository


async def test_get_session_never_shows_half_an_append(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db.sessions.create_session("s1", "app", "u")
    await db.sessions.append_event("s1", {"n": 0}, state_delta={"session:n": 0})
    original = SessionRepository.payloads
    interleaved = []
    loop = asyncio.get_running_loop()

    def meanwhile(work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` to its end from inside a unit of work: on SQLite the unit
        runs in the connection's worker thread, on PostgreSQL in a greenlet."""
        if db.is_sqlite:
            asyncio.run_coroutine_threadsafe(work, loop).result(timeout=30)
        else:
            await_only(work)

    def payloads_after_a_concurrent_append(self: SessionRepository, *a: Any, **k: Any) -> Any:
        if not interleaved:  # once: another writer commits between the two reads
            interleaved.append(True)
            meanwhile(db.sessions.append_event("s1", {"n": 1}, state_delta={"session:n": 1}))
        return original(self, *a, **k)

    monkeypatch.setattr(SessionRepository, "payloads", payloads_after_a_concurrent_append)
    # On PostgreSQL a plain get_session is one statement (one snapshot by
    # construction); its several reads remain when events are filtered.
    filtered: dict[str, Any] = {} if db.is_sqlite else {"recent_events": 10}
    seen = await db.sessions.get_session("s1", **filtered)
    monkeypatch.undo()

    assert interleaved == [True]
    assert seen is not None
    assert [e["n"] for e in seen["events"]] == [0]  # the snapshot of the first read
    assert seen["state"] == {"session:n": 0} and seen["last_seq"] == 1
    after = await db.sessions.get_session("s1")
    assert after is not None and [e["n"] for e in after["events"]] == [0, 1]
    assert after["state"] == {"session:n": 1} and after["last_seq"] == 2
