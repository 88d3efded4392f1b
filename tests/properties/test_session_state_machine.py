"""Random sequences of SessionService operations agree with a plain-Python
model after every step, on SQLite and PostgreSQL. A fresh database per
example: SQLite copies a migrated template file, PostgreSQL migrates a new
schema."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from abathur.domain.sessions import SESSION_STATUSES
from abathur.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    StaleSessionError,
    ValidationError,
)
from abathur.infrastructure.database import Database
from tests.conftest import PG_URL, pg_schema

IDS = st.sampled_from(["a", "b", "c"])
KEYS = st.sampled_from(["x", "y", "temp:t", "temp:u", "session:s", "app:a", "user:b", "user:c"])
APPS = st.sampled_from(["app", "app2"])
USERS = st.sampled_from(["u", "v"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(-1e6, 1e6, allow_nan=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
EVENTS = st.dictionaries(st.sampled_from(["kind", "n", "payload"]), JSON, max_size=3)
DELTAS = st.none() | st.dictionaries(KEYS, JSON, max_size=3)
FILLED = ("event_id", "timestamp")

# The model's own lifecycle, written from the issue (not imported from the code
# under test): created -> active -> (paused <-> active)* -> terminated -> archived,
# created -> terminated, and (our choice) paused -> terminated.
LIFECYCLE = {
    "created": {"active", "terminated"},
    "active": {"paused", "terminated"},
    "paused": {"active", "terminated"},
    "terminated": {"archived"},
    "archived": set(),
}


class SessionMachine(RuleBasedStateMachine):
    backend = "sqlite"
    template: Path | None = None
    workdir: Path | None = None
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.schema: AbstractAsyncContextManager[str] | None = None
        self.db = self.run(self.open())
        self.model: dict[str, dict[str, Any]] = {}
        # The shared state scopes: (app, "") holds app: keys, (app, user) user: keys.
        self.shared: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def open(self) -> Database:
        cls = type(self)
        if self.backend == "sqlite":
            assert cls.template is not None and cls.workdir is not None
            cls.counter += 1
            path = cls.workdir / f"example{cls.counter}.db"
            shutil.copyfile(cls.template, path)
            return Database(path)
        self.schema = pg_schema(migrated=True)
        name = await self.schema.__aenter__()
        db = Database(PG_URL, connect_args={"server_settings": {"search_path": name}})
        await db.initialize()
        return db

    def teardown(self) -> None:
        async def close() -> None:
            await self.db.close()
            if self.schema is not None:
                await self.schema.__aexit__(None, None, None)

        try:
            self.run(close())
        finally:
            self.loop.close()

    def expect(self, error: type[Exception] | None, coro: Any) -> Any:
        if error is None:
            return self.run(coro)
        with pytest.raises(error):
            self.run(coro)
        return None

    # ------------------------------------------------------------ rules

    def _write(self, sid: str, delta: dict[str, Any]) -> None:
        """The model of a state write: app:/user: keys to the shared scopes."""
        session = self.model[sid]
        for key, value in delta.items():
            if key.startswith("app:"):
                self.shared.setdefault((session["app"], ""), {})[key] = value
            elif key.startswith("user:"):
                self.shared.setdefault((session["app"], session["user"]), {})[key] = value
            else:
                session["state"][key] = value

    def _merged(self, sid: str) -> dict[str, Any]:
        session = self.model[sid]
        return {
            **session["state"],
            **self.shared.get((session["app"], ""), {}),
            **self.shared.get((session["app"], session["user"]), {}),
        }

    @rule(sid=IDS, app=APPS, user=USERS, state=st.dictionaries(KEYS, JSON, max_size=3))
    def create(self, sid: str, app: str, user: str, state: dict[str, Any]) -> None:
        error = AlreadyExistsError if sid in self.model else None
        self.expect(error, self.db.sessions.create_session(sid, app, user, None, state))
        if error is None:
            self.model[sid] = {
                "app": app,
                "user": user,
                "status": "created",
                "state": {},
                "events": [],
                "terminated": False,
                "archived": False,
            }
            self._write(sid, state)

    def _append_error(self, sid: str, expected_seq: int | None) -> type[Exception] | None:
        if sid not in self.model:
            return NotFoundError
        if self.model[sid]["status"] in ("terminated", "archived"):
            return ConflictError
        if expected_seq is not None and expected_seq != len(self.model[sid]["events"]):
            return StaleSessionError
        return None

    @rule(
        sid=IDS,
        events=st.lists(EVENTS, min_size=1, max_size=3),
        delta=DELTAS,
        stale=st.none() | st.integers(-1, 1),
    )
    def append(self, sid: str, events: list[dict[str, Any]], delta: Any, stale: int | None) -> None:
        current = len(self.model[sid]["events"]) if sid in self.model else 0
        expected_seq = None if stale is None else current + stale
        if expected_seq is not None and expected_seq < 0:
            call = self.db.sessions.append_event(sid, events[0], delta, expected_seq=expected_seq)
            self.expect(ValidationError, call)
            return
        error = self._append_error(sid, expected_seq)
        if len(events) == 1:
            call = self.db.sessions.append_event(sid, events[0], delta, expected_seq=expected_seq)
        else:
            call = self.db.sessions.append_events(sid, events, delta, expected_seq=expected_seq)
        self.expect(error, call)
        if error is None:
            self.model[sid]["events"] += events
            self._write(sid, delta or {})

    @rule(sid=IDS, status=st.sampled_from([*SESSION_STATUSES, "bogus"]))
    def update_status(self, sid: str, status: str) -> None:
        if status not in SESSION_STATUSES:
            self.expect(ValidationError, self.db.sessions.update_status(sid, status))
            return
        if sid not in self.model:
            self.expect(NotFoundError, self.db.sessions.update_status(sid, status))
            return
        legal = status in LIFECYCLE[self.model[sid]["status"]]
        self.expect(
            None if legal else InvalidTransitionError,
            self.db.sessions.update_status(sid, status),
        )
        if legal:
            self.model[sid]["status"] = status
            self.model[sid]["terminated"] |= status == "terminated"
            self.model[sid]["archived"] |= status == "archived"

    @rule(sid=IDS, key=KEYS, value=JSON)
    def set_state(self, sid: str, key: str, value: Any) -> None:
        error = self._append_error(sid, None)
        self.expect(error, self.db.sessions.set_state(sid, key, value))
        if error is None:
            self._write(sid, {key: value})

    @rule(sid=IDS)
    def terminate(self, sid: str) -> None:
        if sid not in self.model:
            self.expect(NotFoundError, self.db.sessions.terminate_session(sid))
            return
        session = self.model[sid]
        legal = "terminated" in LIFECYCLE[session["status"]]
        self.expect(
            None if legal else InvalidTransitionError, self.db.sessions.terminate_session(sid)
        )
        if legal:
            session["status"] = "terminated"
            session["terminated"] = True
            session["state"] = {
                k: v for k, v in session["state"].items() if not k.startswith("temp:")
            }

    @rule(sid=IDS, key=KEYS)
    def get_state(self, sid: str, key: str) -> None:
        if sid not in self.model:  # as the spec's reference implementation: no session, None
            assert self.run(self.db.sessions.get_state(sid, key)) is None
            return
        assert self.run(self.db.sessions.get_state(sid, key)) == self._merged(sid).get(key)

    @rule(sid=IDS)
    def delete(self, sid: str) -> None:
        error = None if sid in self.model else NotFoundError
        self.expect(error, self.db.sessions.delete_session(sid))
        self.model.pop(sid, None)

    # ------------------------------------------------------------ agreement

    @invariant()
    def database_agrees_with_model(self) -> None:
        for sid in ("a", "b", "c"):
            got = self.run(self.db.sessions.get_session(sid))
            if sid not in self.model:
                assert got is None
                continue
            want = self.model[sid]
            assert got is not None
            assert got["status"] == want["status"]
            assert got["state"] == self._merged(sid)
            assert got["last_seq"] == len(want["events"])
            assert [{k: v for k, v in e.items() if k not in FILLED} for e in got["events"]] == (
                want["events"]
            )
            assert all(all(k in e for k in FILLED) for e in got["events"])
            assert (got["terminated_at"] is not None) == want["terminated"]
            assert (got["archived_at"] is not None) == want["archived"]

        active = self.run(self.db.sessions.list_active_sessions())
        assert {s["id"] for s in active} == {
            sid for sid, s in self.model.items() if s["status"] == "active"
        }
        times = [s["last_update_time"] for s in active]
        assert times == sorted(times, reverse=True)
        listed = self.run(self.db.sessions.list_sessions(limit=10))
        assert {s["id"] for s in listed} == set(self.model)
        for app in ("app", "app2"):
            for user in ("u", "v"):
                want = {**self.shared.get((app, ""), {}), **self.shared.get((app, user), {})}
                assert self.run(self.db.sessions.get_shared_state(app, user)) == want


@pytest.mark.slow
def test_session_service_agrees_with_a_model(backend: str, tmp_path: Path) -> None:
    class Machine(SessionMachine):
        pass

    Machine.backend = backend
    Machine.workdir = tmp_path
    examples = 40
    if backend == "sqlite":
        template = tmp_path / "template.db"

        async def migrate() -> None:
            async with Database(template):
                pass

        asyncio.run(migrate())
        Machine.template = template
    else:
        examples = 15
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
