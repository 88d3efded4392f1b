"""AbathurSessionService beyond ADK's own suite (tests/conformance/adk): the
identity mapping, what is stored, listings, errors and ownership, on both backends."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from google.adk.agents import Agent
from google.adk.errors._stale_session_error import StaleSessionError as AdkStaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError as AdkAlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.adk.sessions.session import Session
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from abathur.infrastructure.database import Database
from abathur.integrations.adk import AbathurSessionService, abathur_session_id, adk_session_id
from tests.conftest import PG_URL, pg_schema

AWKWARD = ["plain", "a/b", "100%", "x:y", "%2F", "", "é ✓", "a/b/c"]


def test_identity_mapping_round_trips_awkward_parts() -> None:
    ids = set()
    for app in AWKWARD:
        for user in AWKWARD:
            for sid in AWKWARD:
                cid = abathur_session_id(app, user, sid)
                assert adk_session_id(cid) == (app, user, sid)
                ids.add(cid)
    assert len(ids) == len(AWKWARD) ** 3  # no two identities share an abathur id
    assert adk_session_id("not-adk") is None
    assert adk_session_id("adk:only/two") is None


PARTS = st.one_of(
    st.sampled_from([*AWKWARD, "a-b_c.d~e", "A9", "~", "x\n", "x y", "\x00", "\ud800x"]),
    st.text(alphabet="abcXYZ019_.~-/%: é\n", max_size=8),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(PARTS, PARTS, PARTS)
def test_identity_is_each_part_percent_encoded(app: str, user: str, sid: str) -> None:
    """The parts that need no quoting skip ``quote``: the same id (or the
    same error: ``quote`` refuses a lone surrogate) either way."""

    def outcome(make: Any) -> Any:
        try:
            return make()
        except UnicodeEncodeError as exc:
            return type(exc)

    quoted = outcome(lambda: "adk:" + "/".join(quote(part, safe="") for part in (app, user, sid)))
    assert outcome(lambda: abathur_session_id(app, user, sid)) == quoted


@pytest.fixture
def service(db: Database) -> AbathurSessionService:
    return AbathurSessionService(db)


async def test_sessions_of_one_id_under_two_users_and_apps_are_distinct(
    service: AbathurSessionService,
) -> None:
    for app in ("a/1", "a%2F1"):
        for user in ("u:1", "u/1"):
            await service.create_session(app_name=app, user_id=user, session_id="s/1")
            event = Event(author="user", invocation_id=f"{app}|{user}")
            got = await service.get_session(app_name=app, user_id=user, session_id="s/1")
            assert got is not None
            await service.append_event(got, event)
    for app in ("a/1", "a%2F1"):
        for user in ("u:1", "u/1"):
            got = await service.get_session(app_name=app, user_id=user, session_id="s/1")
            assert got is not None and (got.app_name, got.user_id, got.id) == (app, user, "s/1")
            assert [e.invocation_id for e in got.events] == [f"{app}|{user}"]
        listed = await service.list_sessions(app_name=app)
        assert sorted(s.user_id for s in listed.sessions) == ["u/1", "u:1"]


async def test_what_is_stored_for_an_event(service: AbathurSessionService, db: Database) -> None:
    session = await service.create_session(
        app_name="app", user_id="u", state={"k": 1, "temp:t": 2, "user:p": 3, "app:q": 4}
    )
    assert session.state == {"k": 1, "user:p": 3, "app:q": 4}
    event = Event(
        author="user",
        timestamp=1700000000.123,
        actions=EventActions(state_delta={"temp:x": 1, "k": 2, "user:p": 5}),
    )
    await service.append_event(session, event)
    assert session.state == {"k": 2, "temp:x": 1, "user:p": 5, "app:q": 4}
    cid = abathur_session_id("app", "u", session.id)
    stored = await db.sessions.get_session(cid)
    assert stored is not None
    assert stored["state"] == {"k": 2, "user:p": 5, "app:q": 4}  # no temp: key
    [document] = stored["events"]
    assert document["event_id"] == event.id
    assert document["timestamp"] == 1700000000.123
    assert document["actions"]["state_delta"] == {"k": 2, "user:p": 5}
    assert await db.sessions.get_shared_state("app", "u") == {"user:p": 5, "app:q": 4}
    assert await service.get_user_state(app_name="app", user_id="u") == {"p": 5}


async def test_list_sessions_orders_oldest_first_and_skips_foreign_sessions(
    service: AbathurSessionService, db: Database
) -> None:
    for sid in ("c", "a", "b"):
        await service.create_session(app_name="app", user_id="u", session_id=sid)
    await db.sessions.create_session("not-adk", "app", "u")  # abathur's own, not ADK's
    a = await service.get_session(app_name="app", user_id="u", session_id="a")
    assert a is not None
    await service.append_event(a, Event(author="user"))
    listed = (await service.list_sessions(app_name="app", user_id="u")).sessions
    assert [s.id for s in listed] == ["c", "b", "a"]  # a was written last
    assert all(s.events == [] for s in listed)
    assert (await service.list_sessions(app_name="other")).sessions == []


async def test_a_listed_session_is_checked_for_staleness_as_in_adks_database_service(
    service: AbathurSessionService, tmp_path: Path
) -> None:
    """A session from ``list_sessions`` carries the storage marker, as ADK's
    DatabaseSessionService gives its listed sessions one: an append to a
    listed copy after another copy appended raises StaleSessionError and
    stores nothing; a listed copy that is current appends."""
    adk = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
    try:
        for svc in (adk, service):
            for user in ("u", "v"):
                await svc.create_session(app_name="app", user_id=user, session_id="s")
            for mine in (None, "u"):  # all the app's sessions, and one user's
                [listed] = [
                    s
                    for s in (await svc.list_sessions(app_name="app", user_id=mine)).sessions
                    if s.user_id == "u"
                ]
                other = await svc.get_session(app_name="app", user_id="u", session_id="s")
                assert other is not None
                await svc.append_event(other, Event(author="user"))
                with pytest.raises(AdkStaleSessionError):
                    await svc.append_event(listed, Event(author="user"))
            [fresh, _] = (await svc.list_sessions(app_name="app")).sessions
            assert fresh.user_id == "v"  # not written since it was created
            await svc.append_event(fresh, Event(author="user"))
            got = await svc.get_session(app_name="app", user_id="u", session_id="s")
            assert got is not None and len(got.events) == 2
    finally:
        await adk.close()


async def test_list_sessions_of_many_users_reads_their_shared_state_at_once(
    service: AbathurSessionService, db: Database
) -> None:
    """Listing an app's sessions reads the shared state of all their users in
    one statement (ADK's database service reads its user states at once too),
    not one statement per user."""
    for i in range(6):
        user = f"u{i}"
        state = {"user:n": i, "k": -i} if i % 2 else {"app:a": "x"}
        await service.create_session(app_name="app", user_id=user, session_id="s", state=state)
    await service.create_session(app_name="app2", user_id="u1", state={"user:n": "other"})
    sent: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        listed = (await service.list_sessions(app_name="app")).sessions
        assert len(sent) == 2, sent  # the sessions, the shared state
        sent.clear()
        [one] = (await service.list_sessions(app_name="app", user_id="u3")).sessions
        assert len(sent) == 2, sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert one.state == {"app:a": "x", "user:n": 3, "k": -3}
    assert {s.user_id: s.state for s in listed} == {
        f"u{i}": {"app:a": "x", "user:n": i, "k": -i} if i % 2 else {"app:a": "x"} for i in range(6)
    }
    for session in listed:
        got = await service.get_session(app_name="app", user_id=session.user_id, session_id="s")
        assert got is not None and got.state == session.state


async def test_errors_are_adks(service: AbathurSessionService) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s")
    with pytest.raises(AdkAlreadyExistsError):
        await service.create_session(app_name="app", user_id="u", session_id="s")
    ghost = Session(id="ghost", app_name="app", user_id="u")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(ghost, Event(author="user"))
    s = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert s is not None
    copy = s.model_copy(deep=True)
    await service.append_event(s, Event(author="user"))
    with pytest.raises(AdkStaleSessionError, match="modified in storage"):
        await service.append_event(copy, Event(author="user"))
    with pytest.raises(ValueError):
        await service.append_event(
            s, Event(author="user", actions=EventActions(state_delta={"k": float("nan")}))
        )
    await service.delete_session(app_name="app", user_id="u", session_id="missing")
    assert await service.get_session(app_name="app", user_id="u", session_id="missing") is None


async def test_num_recent_events_zero_keeps_the_last_update_time(
    service: AbathurSessionService,
) -> None:
    session = await service.create_session(app_name="app", user_id="u")
    for ts in (10.0, 20.0, 30.0):
        await service.append_event(session, Event(author="user", timestamp=ts))
    for config in (
        None,
        GetSessionConfig(num_recent_events=0),
        GetSessionConfig(after_timestamp=25),
    ):
        got = await service.get_session(
            app_name="app", user_id="u", session_id=session.id, config=config
        )
        assert got is not None and got.last_update_time == 30.0
    got = await service.get_session(
        app_name="app", user_id="u", session_id=session.id,
        config=GetSessionConfig(after_timestamp=20.0, num_recent_events=1),
    )  # fmt: skip
    assert got is not None and [e.timestamp for e in got.events] == [30.0]


async def test_a_url_service_owns_its_database_and_a_database_is_left_open(
    tmp_path: Path, db: Database
) -> None:
    async with AbathurSessionService(tmp_path / "own.db") as owned:
        await owned.create_session(app_name="app", user_id="u", session_id="s")
        assert await owned.get_session(app_name="app", user_id="u", session_id="s") is not None
    reopened = AbathurSessionService(str(tmp_path / "own.db"))
    assert await reopened.get_session(app_name="app", user_id="u", session_id="s") is not None
    await reopened.close()

    async with AbathurSessionService(db) as borrowed:
        await borrowed.create_session(app_name="app", user_id="u", session_id="s")
    assert await db.sessions.get_session(abathur_session_id("app", "u", "s")) is not None


class _EchoModel(BaseLlm):
    """A model that answers every turn with the same text (no network)."""

    model: str = "echo"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="hi!")]))


async def test_a_runner_with_an_agent_keeps_its_conversation_in_abathur(db: Database) -> None:
    sessions = AbathurSessionService(db)
    agent = Agent(name="helper", model=_EchoModel(), instruction="Answer.", output_key="user:last")
    runner = Runner(agent=agent, app_name="support", session_service=sessions)
    session = await sessions.create_session(app_name="support", user_id="alice")
    for text in ("hello", "again"):
        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for _ in runner.run_async(
            user_id="alice", session_id=session.id, new_message=message
        ):
            pass
    got = await sessions.get_session(app_name="support", user_id="alice", session_id=session.id)
    assert got is not None
    texts = [
        (e.author, e.content.parts[0].text) for e in got.events if e.content and e.content.parts
    ]
    assert texts == [("user", "hello"), ("helper", "hi!"), ("user", "again"), ("helper", "hi!")]
    # output_key wrote a user: key: shared with the user's next session.
    other = await sessions.create_session(app_name="support", user_id="alice")
    assert other.state == {"user:last": "hi!"}


async def test_appends_from_many_coroutines_to_one_session_are_all_stored(
    service: AbathurSessionService,
) -> None:
    """ADK's services serialise the appends of one session inside the process:
    coroutines sharing one Session object each append after the other, none
    of them stale (the copy they share is always the newest)."""
    session = await service.create_session(app_name="app", user_id="u")
    events = [
        Event(
            author="a",
            invocation_id=str(i),
            actions=EventActions(state_delta={f"k{i}": i, f"user:k{i}": i, "temp:t": i}),
        )
        for i in range(20)
    ]
    results = await asyncio.gather(
        *(service.append_event(session, event) for event in events), return_exceptions=True
    )
    assert results == events
    got = await service.get_session(app_name="app", user_id="u", session_id=session.id)
    assert got is not None
    assert [e.invocation_id for e in got.events] == [e.invocation_id for e in session.events]
    assert sorted(e.invocation_id for e in got.events) == sorted(str(i) for i in range(20))
    assert got.state == {**{f"k{i}": i for i in range(20)}, **{f"user:k{i}": i for i in range(20)}}
    assert got._storage_update_marker == session._storage_update_marker == "20"
    # The shared copy is still the newest one: the next append is not stale.
    await service.append_event(session, Event(author="a"))


@pytest.fixture
async def url_and_options(
    backend: str, tmp_path: Path
) -> AsyncGenerator[tuple[Any, dict[str, Any]], None]:
    """A database the service opens itself: a path on SQLite, a URL (and its
    own schema) on PostgreSQL."""
    if backend == "sqlite":
        yield tmp_path / "own.db", {}
        return
    assert PG_URL
    async with pg_schema() as schema:
        yield PG_URL, {"connect_args": {"server_settings": {"search_path": schema}}}


async def test_a_closed_service_that_owns_its_database_opens_it_again(
    url_and_options: tuple[Any, dict[str, Any]],
) -> None:
    """As ADK's DatabaseSessionService (whose close() disposes of the engine's
    connections): a service used after close() works on the same database."""
    url, options = url_and_options
    service = AbathurSessionService(url, **options)
    session = await service.create_session(app_name="app", user_id="u", session_id="s")
    await service.close()
    first = service.database
    assert first.closed
    got = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert got is not None and got.id == "s"
    await service.append_event(got, Event(author="user"))
    assert service.database is not first and not service.database.closed
    async with service:
        await service.append_event(got, Event(author="user"))
    assert service.database.closed
    again = await service.get_session(app_name="app", user_id="u", session_id="s")
    assert again is not None and len(again.events) == 2
    assert session.id == again.id
    await service.close()


@pytest.mark.parametrize("recent", [2**31 - 1, 2**31, sys.maxsize, 2**70])
async def test_num_recent_events_beyond_any_log_reads_every_event(
    service: AbathurSessionService, recent: int
) -> None:
    """``num_recent_events=sys.maxsize`` ("no limit") is a valid config, as in
    ADK's services: every event, not abathur's limit on a count."""
    session = await service.create_session(app_name="app", user_id="u")
    for ts in (10.0, 20.0):
        await service.append_event(session, Event(author="user", timestamp=ts))
    got = await service.get_session(
        app_name="app", user_id="u", session_id=session.id,
        config=GetSessionConfig(num_recent_events=recent),
    )  # fmt: skip
    assert got is not None and [e.timestamp for e in got.events] == [10.0, 20.0]
    assert got.last_update_time == 20.0 and got._storage_update_marker == "2"


async def test_list_sessions_while_a_session_is_deleted(
    service: AbathurSessionService, db: Database
) -> None:
    """A session deleted while an app's sessions are listed: the listing
    reads one snapshot (as ADK's services do), it never fails half-way on a
    row that is gone (the app has more sessions than one page of 500)."""
    for i in range(502):
        await service.create_session(app_name="app", user_id=f"u{i % 2}", session_id=f"s{i:03d}")
    listed = db.sessions.list_sessions
    deleted: list[str] = []

    async def listing_then_a_delete(**query: Any) -> Any:
        page = await listed(**query)
        if not deleted:  # another caller deletes the last session read
            deleted.append(page[-1]["id"])
            await db.sessions.delete_session(page[-1]["id"])
        return page

    db.sessions.list_sessions = listing_then_a_delete  # type: ignore[method-assign]
    got = (await service.list_sessions(app_name="app")).sessions
    assert deleted and len(got) == 502
    assert {(s.user_id, s.id) for s in got} == {(f"u{i % 2}", f"s{i:03d}") for i in range(502)}


@pytest.mark.parametrize(
    ("app", "user", "sid"),
    [
        ("", "", "s"),
        ("app", "", "s"),
        ("a\x00", "u", "s"),
        ("a" * 2000, "u", "s"),
        ("app", "u", "s" * 2000),
    ],
)
async def test_reads_of_a_session_no_one_can_create_find_nothing(
    service: AbathurSessionService, app: str, user: str, sid: str
) -> None:
    """Names and ids abathur cannot store (empty, NUL, too long) are refused
    by create_session; a read of them finds nothing, as ADK's services answer
    for a session that does not exist, instead of raising."""
    with pytest.raises(ValueError):
        await service.create_session(app_name=app, user_id=user, session_id=sid)
    assert await service.get_session(app_name=app, user_id=user, session_id=sid) is None
    assert (await service.list_sessions(app_name=app, user_id=user)).sessions == []
    assert (await service.list_sessions(app_name=app)).sessions == []
    assert await service.get_user_state(app_name=app, user_id=user) == {}
    await service.delete_session(app_name=app, user_id=user, session_id=sid)
