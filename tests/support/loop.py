"""Waiting in tests by what happens, never by how long it takes.

A sleep "long enough for the others to queue" is a guess about the machine's
speed; on a loaded machine the guess fails and the test with it. These wait
for the event itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy.exc import DBAPIError

from abathur.db import errors as db_errors


async def until(condition: Callable[[], object], turns: int = 100_000) -> None:
    """Let the event loop run, turn by turn, until ``condition()`` holds (for
    what the loop itself brings about: tasks queueing, a lock changing hands)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still false after {turns} turns of the event loop: {condition}")


class Retries:
    """Counts the contention errors Databases made from now on decide to retry
    ("database is locked"), and lets a test wait for the n-th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        decide = db_errors.is_retryable

        def recording(exc: BaseException) -> bool:
            retry = decide(exc)
            if retry and isinstance(exc, DBAPIError):
                self._loop.call_soon_threadsafe(self._bump)  # called from either thread
            return retry

        monkeypatch.setattr(db_errors, "is_retryable", recording)

    def _bump(self) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, count: int) -> None:
        while self.count < count:
            self._changed.clear()
            await self._changed.wait()
