"""SessionService: every method and every error path, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

from abathur.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseError,
    InvalidTransitionError,
    NotFoundError,
    StaleSessionError,
    ValidationError,
)
from abathur.infrastructure.database import Database
from abathur.infrastructure.session_service import SessionService
from abathur.schema.models import Session
from tests.support.plans import explain, full_scans, recording

SPEC_KEYS = {
    "id", "app_name", "user_id", "project_id", "status", "events", "state", "metadata",
    "created_at", "last_update_time", "terminated_at", "archived_at",
}  # fmt: skip


async def page_through(sessions: SessionService, limit: int) -> list[str]:
    """Every session id, newest first, read ``limit`` at a time with ``before``."""
    paged: list[str] = []
    before: str | None = None
    for _ in range(100):
        page = await sessions.list_sessions(limit=limit, before=before)
        if not page:
            return paged
        paged += [s["id"] for s in page]
        before = page[-1]["id"]
    raise AssertionError("paging did not end")


@pytest.fixture
def sessions(db: Database) -> SessionService:
    return db.sessions


async def created(sessions: SessionService, session_id: str = "s1", **kw: Any) -> str:
    await sessions.create_session(session_id, kw.pop("app_name", "app"), "alice", **kw)
    return session_id


async def session(sessions: SessionService, session_id: str) -> dict[str, Any]:
    found = await sessions.get_session(session_id)
    assert found is not None
    return found


# ------------------------------------------------------------------ create / get


async def test_create_and_get_return_parsed_fields(sessions: SessionService) -> None:
    await sessions.create_session("s1", "app", "alice", "proj", {"k": [1, {"x": None}]})
    got = await session(sessions, "s1")
    assert got.keys() >= SPEC_KEYS
    assert got["status"] == "created"
    assert got["events"] == []
    assert got["state"] == {"k": [1, {"x": None}]}
    assert got["metadata"] == {}
    assert (got["app_name"], got["user_id"], got["project_id"]) == ("app", "alice", "proj")
    assert got["created_at"].tzinfo is UTC
    assert got["last_update_time"].utcoffset() == timedelta(0)
    assert got["terminated_at"] is None and got["archived_at"] is None
    assert got["last_seq"] == 0


async def test_get_missing_session_is_none(sessions: SessionService) -> None:
    assert await sessions.get_session("nope") is None


async def test_duplicate_id_says_already_exists_and_keeps_the_original(
    sessions: SessionService,
) -> None:
    await sessions.create_session("s1", "app", "alice", initial_state={"v": 1})
    with pytest.raises(AlreadyExistsError, match="already exists") as info:
        await sessions.create_session("s1", "other", "bob", initial_state={"v": 2})
    assert isinstance(info.value, ValueError)
    got = await session(sessions, "s1")
    assert (got["app_name"], got["user_id"], got["state"]) == ("app", "alice", {"v": 1})


@pytest.mark.parametrize(
    "initial_state",
    [[1, 2], "text", {1: "int key"}, {"f": float("nan")}, {"o": object()}, {"s": {1, 2}}],
)
async def test_create_rejects_bad_initial_state(
    sessions: SessionService, initial_state: Any
) -> None:
    with pytest.raises(ValidationError) as info:
        await sessions.create_session("s1", "app", "alice", initial_state=initial_state)
    assert isinstance(info.value, ValueError)
    assert await sessions.get_session("s1") is None


async def test_create_returns_the_session_as_stored(sessions: SessionService) -> None:
    # PostgreSQL's lean INSERT (issue 16) writes its constants and one timestamp
    # in SQL: the row stored is still the one create_session returns.
    state = {"k": [1, {"x": None}], "app:a": 1, "user:b": "é"}
    made = await sessions.create_session("s1", "app", "alice", "proj", state)
    got = await session(sessions, "s1")
    assert made == {key: got[key] for key in made}
    assert made["state"] == state
    assert got["created_at"] == got["last_update_time"] == made["created_at"]


@pytest.mark.parametrize("field", ["session_id", "app_name", "user_id"])
async def test_create_rejects_empty_identity(sessions: SessionService, field: str) -> None:
    args = {"session_id": "s1", "app_name": "app", "user_id": "alice", field: ""}
    with pytest.raises(ValidationError):
        await sessions.create_session(**args)


# ------------------------------------------------------------------ events


async def test_append_event_fills_id_and_timestamp_and_keeps_order(
    sessions: SessionService,
) -> None:
    await created(sessions)
    before = datetime.now(UTC)
    for i in range(5):
        await sessions.append_event("s1", {"n": i})
    await sessions.append_event("s1", {"n": 5, "event_id": "mine", "timestamp": "t"})
    got = await session(sessions, "s1")
    assert [e["n"] for e in got["events"]] == list(range(6))
    assert got["last_seq"] == 6
    first = got["events"][0]
    event_id = uuid.UUID(hex=first["event_id"])
    assert event_id.version == 4 and event_id.variant == uuid.RFC_4122
    assert event_id.hex == first["event_id"]
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == timedelta(0) and stamp >= before - timedelta(seconds=1)
    assert len({e["event_id"] for e in got["events"]}) == 6
    assert got["events"][5]["event_id"] == "mine" and got["events"][5]["timestamp"] == "t"


async def test_append_does_not_mutate_the_callers_dict(sessions: SessionService) -> None:
    await created(sessions)
    event = {"type": "x"}
    await sessions.append_event("s1", event)
    assert event == {"type": "x"}


async def test_append_event_merges_state_delta_and_advances_update_time(
    sessions: SessionService,
) -> None:
    await created(sessions, initial_state={"keep": 1, "over": 1, "gone": 1})
    before = await session(sessions, "s1")
    await sessions.append_event("s1", {"t": 1}, {"over": 2, "gone": None, "new": {"a": [1]}})
    after = await session(sessions, "s1")
    assert after["state"] == {"keep": 1, "over": 2, "gone": None, "new": {"a": [1]}}
    assert after["last_update_time"] > before["last_update_time"]
    assert await sessions.get_state("s1", "gone") is None
    assert [e["t"] for e in after["events"]] == [1]


@pytest.mark.parametrize("keys", [63, 64, 200, 20_000])
async def test_a_state_delta_of_many_keys_is_merged(sessions: SessionService, keys: int) -> None:
    """Before: on SQLite a delta of 64 plain keys or more failed with
    DatabaseError "too many arguments on function json_set" (two arguments a
    key, SQLite allows 127); PostgreSQL merged it."""
    await created(sessions, initial_state={"keep": 1, "k0": "old"})
    delta = {f"k{i}": i for i in range(keys)}
    assert await sessions.append_events("s1", [{"t": 1}], delta) == 1
    assert (await session(sessions, "s1"))["state"] == {"keep": 1, **delta}


async def test_append_to_missing_session_is_not_found(sessions: SessionService) -> None:
    with pytest.raises(NotFoundError) as info:
        await sessions.append_event("nope", {"t": 1})
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("event", "delta"),
    [
        (["not", "a", "dict"], None),
        ("text", None),
        ({"f": float("inf")}, None),
        ({"o": object()}, None),
        ({1: "int key"}, None),
        ({"ok": 1}, {"f": float("nan")}),
        ({"ok": 1}, ["not", "a", "dict"]),
        ({"ok": 1}, {2: "int key"}),
    ],
)
async def test_append_rejects_non_json_and_writes_nothing(
    sessions: SessionService, event: Any, delta: Any
) -> None:
    await created(sessions, initial_state={"a": 1})
    with pytest.raises(ValidationError):
        await sessions.append_event("s1", event, delta)
    got = await session(sessions, "s1")
    assert got["events"] == [] and got["state"] == {"a": 1}


@pytest.mark.parametrize("closed", ["terminated", "archived"])
async def test_closed_sessions_accept_no_events_or_state(
    sessions: SessionService, closed: str
) -> None:
    await created(sessions)
    await sessions.update_status("s1", "terminated")
    if closed == "archived":
        await sessions.update_status("s1", "archived")
    with pytest.raises(ConflictError, match=closed):
        await sessions.append_event("s1", {"t": 1}, {"k": 1})
    with pytest.raises(ConflictError, match=closed):
        await sessions.append_events("s1", [{"t": 1}])
    with pytest.raises(ConflictError, match=closed):
        await sessions.set_state("s1", "k", 1)
    got = await session(sessions, "s1")
    assert got["events"] == [] and got["state"] == {}


async def test_append_events_is_one_ordered_batch(sessions: SessionService) -> None:
    await created(sessions)
    assert await sessions.append_events("s1", [{"n": 0}], {"a": 1}) == 1
    assert await sessions.append_events("s1", [{"n": i} for i in range(1, 4)], {"b": 2}) == 4
    assert await sessions.append_events("s1", [], {"c": 3}) == 4
    got = await session(sessions, "s1")
    assert [e["n"] for e in got["events"]] == [0, 1, 2, 3]
    assert got["state"] == {"a": 1, "b": 2, "c": 3}


async def test_append_events_rejects_a_bad_member_and_writes_none(
    sessions: SessionService,
) -> None:
    await created(sessions)
    with pytest.raises(ValidationError):
        await sessions.append_events("s1", [{"ok": 1}, {"bad": float("nan")}])
    assert (await session(sessions, "s1"))["events"] == []


async def test_expected_seq_detects_a_concurrent_append(sessions: SessionService) -> None:
    await created(sessions)
    await sessions.append_event("s1", {"n": 0}, expected_seq=0)
    seen = (await session(sessions, "s1"))["last_seq"]
    assert seen == 1
    await sessions.append_event("s1", {"n": 1}, expected_seq=seen)
    with pytest.raises(StaleSessionError, match="seq 2"):
        await sessions.append_event("s1", {"n": "late"}, {"lost": True}, expected_seq=seen)
    got = await session(sessions, "s1")
    assert [e["n"] for e in got["events"]] == [0, 1]
    assert "lost" not in got["state"]
    with pytest.raises(ValidationError):
        await sessions.append_event("s1", {"n": 2}, expected_seq=-1)


async def test_get_session_recent_events_and_after(sessions: SessionService, db: Database) -> None:
    await created(sessions)
    await sessions.append_events("s1", [{"n": i} for i in range(5)])
    async with db.transaction(write=False) as tx:
        cut = (await tx.execute(text("SELECT max(created_at) FROM session_events"))).scalar_one()
    cut = (cut if isinstance(cut, datetime) else datetime.fromisoformat(cut)).replace(tzinfo=UTC)
    await sessions.append_events("s1", [{"n": i} for i in range(5, 8)])

    async def ns(**kw: Any) -> list[int]:
        got = await sessions.get_session("s1", **kw)
        assert got is not None and got["last_seq"] == 8
        return [e["n"] for e in got["events"]]

    assert await ns() == list(range(8))
    assert await ns(recent_events=3) == [5, 6, 7]
    assert await ns(recent_events=100) == list(range(8))
    assert await ns(recent_events=0) == []
    assert await ns(after=cut) == [5, 6, 7]
    assert await ns(after=cut, recent_events=2) == [6, 7]
    assert await ns(after=cut - timedelta(days=1)) == list(range(8))
    assert await ns(after=datetime.now(UTC) + timedelta(days=1)) == []
    with pytest.raises(ValidationError):
        await sessions.get_session("s1", recent_events=-1)
    with pytest.raises(ValidationError):
        await sessions.get_session("s1", after=datetime(2020, 1, 1))  # naive


async def test_get_session_events_as_text(sessions: SessionService, db: Database) -> None:
    await created(sessions)
    documents = [
        {"n": i, "text": 'é ✓ "quoted"', "nested": {"a": [1, None, True]}} for i in range(4)
    ]
    await sessions.append_events("s1", documents)
    async with db.transaction(write=False) as tx:
        cut = (await tx.execute(text("SELECT max(created_at) FROM session_events"))).scalar_one()
    cut = (cut if isinstance(cut, datetime) else datetime.fromisoformat(cut)).replace(tzinfo=UTC)
    await sessions.append_event("s1", {"n": 4})
    for kw in ({}, {"recent_events": 2}, {"after": cut}, {"recent_events": 0}):
        parsed = await sessions.get_session("s1", **kw)
        as_text = await sessions.get_session("s1", events_as_text=True, **kw)
        assert parsed is not None and as_text is not None
        assert all(type(e) is str for e in as_text["events"])
        assert [json.loads(e) for e in as_text["events"]] == parsed["events"]
        assert {**as_text, "events": None} == {**parsed, "events": None}
    assert await sessions.get_session("nope", events_as_text=True) is None


async def test_get_session_log_is_get_session_as_text_in_part(
    sessions: SessionService, db: Database
) -> None:
    await sessions.create_session("s1", "app", "u1", initial_state={"k": 1, "user:x": [2]})
    await sessions.create_session("s2", "app", "u1")
    await sessions.append_events("s1", [{"n": i, "text": 'é ✓ "quoted"'} for i in range(3)])
    for sid in ("s1", "s2"):
        whole = await sessions.get_session(sid, events_as_text=True)
        log = await sessions.get_session_log(sid)
        assert whole is not None and log is not None
        assert log == {
            key: whole[key] for key in ("state", "last_update_time", "last_seq", "events")
        }
    log = await sessions.get_session_log("s1")
    assert log is not None and log["state"] == {"k": 1, "user:x": [2]} and log["last_seq"] == 3
    assert all(type(e) is str for e in log["events"])
    assert await sessions.get_session_log("nope") is None
    for bad in ("", "a\x00b", 3):
        with pytest.raises(ValidationError):
            await sessions.get_session_log(bad)  # type: ignore[arg-type]


async def test_list_events_pages_through_the_log(sessions: SessionService) -> None:
    await created(sessions)
    await sessions.append_events("s1", [{"n": i} for i in range(25)])
    seen: list[int] = []
    after: int | None = None
    pages = 0
    for _ in range(10):
        page = await sessions.list_events("s1", after_seq=after, limit=10)
        if not page:
            break
        pages += 1
        assert [p["seq"] for p in page] == list(range(page[0]["seq"], page[0]["seq"] + len(page)))
        assert all(p["created_at"].tzinfo is not None for p in page)
        seen += [p["event"]["n"] for p in page]
        after = page[-1]["seq"]
    assert pages == 3
    assert seen == list(range(25))
    assert [p["seq"] for p in await sessions.list_events("s1")] == list(range(1, 26))
    with pytest.raises(NotFoundError):
        await sessions.list_events("nope")
    with pytest.raises(ValidationError):
        await sessions.list_events("s1", limit=0)


# ------------------------------------------------------------------ status


LEGAL = [
    ["active"],
    ["terminated"],
    ["active", "paused", "active", "paused", "active", "terminated", "archived"],
    ["active", "terminated", "archived"],
    ["active", "paused", "terminated", "archived"],
]
ILLEGAL = [
    ([], "paused"),
    ([], "archived"),
    ([], "created"),
    (["active"], "created"),
    (["active"], "archived"),
    (["active"], "active"),
    (["active", "paused"], "paused"),
    (["active", "paused"], "archived"),
    (["terminated"], "active"),
    (["terminated"], "terminated"),
    (["terminated", "archived"], "terminated"),
    (["terminated", "archived"], "active"),
]


@pytest.mark.parametrize("path", LEGAL)
async def test_legal_lifecycles(sessions: SessionService, path: list[str]) -> None:
    await created(sessions)
    for status in path:
        await sessions.update_status("s1", status)
        got = await session(sessions, "s1")
        assert got["status"] == status
    assert (got["terminated_at"] is not None) == ("terminated" in path)
    assert (got["archived_at"] is not None) == ("archived" in path)


@pytest.mark.parametrize(("path", "target"), ILLEGAL)
async def test_illegal_transitions_change_nothing(
    sessions: SessionService, path: list[str], target: str
) -> None:
    await created(sessions)
    for status in path:
        await sessions.update_status("s1", status)
    before = await session(sessions, "s1")
    with pytest.raises(InvalidTransitionError, match=target) as info:
        await sessions.update_status("s1", target)
    assert isinstance(info.value, ValueError)
    assert await session(sessions, "s1") == before


async def test_invalid_status_names_the_valid_ones(sessions: SessionService) -> None:
    await created(sessions)
    with pytest.raises(ValueError, match="created, active, paused, terminated, archived"):
        await sessions.update_status("s1", "running")
    assert (await session(sessions, "s1"))["status"] == "created"


async def test_invalid_status_message_says_invalid_status(sessions: SessionService) -> None:
    """The spec: an invalid status raises ValueError with "Invalid status"."""
    await created(sessions)
    with pytest.raises(ValueError, match="Invalid status 'running'"):
        await sessions.update_status("s1", "running")


async def test_update_status_of_missing_session(sessions: SessionService) -> None:
    with pytest.raises(NotFoundError):
        await sessions.update_status("nope", "active")


# ------------------------------------------------------------------ state


async def test_get_and_set_state(sessions: SessionService) -> None:
    await created(sessions, initial_state={"a": 1})
    assert await sessions.get_state("s1", "missing") is None
    await sessions.set_state("s1", "b", {"nested": [1, 2]})
    await sessions.set_state("s1", "a", None)
    assert await sessions.get_state("s1", "b") == {"nested": [1, 2]}
    assert (await session(sessions, "s1"))["state"] == {"a": None, "b": {"nested": [1, 2]}}


async def test_state_errors(sessions: SessionService) -> None:
    with pytest.raises(NotFoundError):
        await sessions.set_state("nope", "k", 1)
    # As the spec's reference implementation: no session, no value.
    assert await sessions.get_state("nope", "k") is None
    await created(sessions)
    with pytest.raises(ValidationError):
        await sessions.set_state("s1", "k", float("nan"))
    with pytest.raises(ValidationError):
        await sessions.set_state("s1", "", 1)
    assert (await session(sessions, "s1"))["state"] == {}


async def test_terminate_drops_only_temp_keys(sessions: SessionService) -> None:
    await created(
        sessions,
        initial_state={"temp:a": 1, "temp:": 2, "session:x": 3, "user:temp:y": 4, "tempo": 5},
    )
    await sessions.update_status("s1", "active")
    await sessions.terminate_session("s1")
    got = await session(sessions, "s1")
    assert got["status"] == "terminated" and got["terminated_at"] is not None
    assert got["state"] == {"session:x": 3, "user:temp:y": 4, "tempo": 5}


async def test_terminate_errors(sessions: SessionService) -> None:
    with pytest.raises(NotFoundError):
        await sessions.terminate_session("nope")
    await created(sessions, initial_state={"temp:a": 1})
    await sessions.terminate_session("s1")  # created -> terminated is allowed
    with pytest.raises(InvalidTransitionError):
        await sessions.terminate_session("s1")
    await sessions.create_session("s2", "app", "alice", initial_state={"temp:a": 1})
    await sessions.update_status("s2", "active")
    await sessions.update_status("s2", "paused")
    await sessions.terminate_session("s2")  # a paused session can be ended directly
    assert (await session(sessions, "s2"))["state"] == {}
    await sessions.update_status("s2", "archived")
    with pytest.raises(InvalidTransitionError):
        await sessions.terminate_session("s2")
    assert (await session(sessions, "s2"))["status"] == "archived"


# ------------------------------------------------------------------ listings


async def test_list_active_sessions_newest_update_first(sessions: SessionService) -> None:
    for sid, user in [("a", "alice"), ("b", "bob"), ("c", "alice"), ("d", "alice")]:
        await sessions.create_session(sid, "app", user)
    for sid in ["a", "b", "c", "d"]:
        await sessions.update_status(sid, "active")
    await sessions.update_status("d", "paused")
    await sessions.append_event("a", {"touch": 1})  # a becomes the most recent
    assert [s["id"] for s in await sessions.list_active_sessions()] == ["a", "c", "b"]
    listed = await sessions.list_active_sessions("alice")
    assert [s["id"] for s in listed] == ["a", "c"]
    assert all(s["status"] == "active" for s in listed)
    assert await sessions.list_active_sessions("nobody") == []


async def test_list_sessions_filters_and_keyset_pages(sessions: SessionService) -> None:
    for i in range(7):
        await sessions.create_session(
            f"s{i}", "app" if i % 2 else "other", "alice" if i < 5 else "bob",
            project_id="p" if i % 3 == 0 else None,
        )  # fmt: skip
    await sessions.update_status("s3", "active")
    every = [s["id"] for s in await sessions.list_sessions()]
    assert every == [f"s{i}" for i in reversed(range(7))]

    assert await page_through(sessions, 3) == every

    async def ids(**kw: Any) -> list[str]:
        return [s["id"] for s in await sessions.list_sessions(**kw)]

    assert await ids(user_id="bob") == ["s6", "s5"]
    assert await ids(app_name="app") == ["s5", "s3", "s1"]
    assert await ids(app_name="app", user_id="alice") == ["s3", "s1"]
    assert await ids(project_id="p") == ["s6", "s3", "s0"]
    assert await ids(status="active") == ["s3"]
    assert await ids(status="created", user_id="alice", limit=2) == ["s4", "s2"]
    assert await ids(user_id="alice", before="s2") == ["s1", "s0"]
    assert "events" not in (await sessions.list_sessions(limit=1))[0]
    with pytest.raises(ValidationError):
        await sessions.list_sessions(status="running")
    with pytest.raises(ValidationError):
        await sessions.list_sessions(limit=0)
    with pytest.raises(NotFoundError):
        await sessions.list_sessions(before="nope")


async def test_list_sessions_pages_through_equal_creation_times(
    sessions: SessionService, db: Database
) -> None:
    for i in range(5):
        await sessions.create_session(f"s{i}", "app", "alice")
    async with db.transaction() as tx:
        await tx.execute(update(Session).values(created_at=datetime(2024, 1, 1, tzinfo=UTC)))
    assert await page_through(sessions, 2) == ["s4", "s3", "s2", "s1", "s0"]


async def test_list_sessions_returns_each_sessions_last_seq(sessions: SessionService) -> None:
    """Each listed session carries ``last_seq`` as ``get_session`` reads it
    (the seq of its newest event, 0 before the first), read by the listing's
    own statement: a caller can pass it as ``expected_seq``."""
    await sessions.create_session("s0", "app", "alice")
    await sessions.create_session("s1", "app", "bob")
    await sessions.append_events("s1", [{"n": 1}, {"n": 2}])
    await sessions.create_session("s2", "app", "alice")
    await sessions.append_event("s2", {"n": 1})
    await sessions.append_event("s2", {"n": 2})
    await sessions.append_event("s2", {"n": 3})
    listed = await sessions.list_sessions(app_name="app")
    assert {s["id"]: s["last_seq"] for s in listed} == {"s0": 0, "s1": 2, "s2": 3}
    for row in listed:
        got = await sessions.get_session(row["id"])
        assert got is not None and got["last_seq"] == row["last_seq"]
        del got["events"], got["last_seq"]  # type: ignore[misc]
        assert {k: v for k, v in row.items() if k != "last_seq"} == got
    seen = {s["id"]: s["last_seq"] for s in listed}["s1"]
    await sessions.append_event("s1", {"n": 3}, expected_seq=seen)
    with pytest.raises(StaleSessionError):
        await sessions.append_event("s1", {"n": 4}, expected_seq=seen)


# ------------------------------------------------------------------ delete


async def test_delete_session_cascades_events_and_nulls_references(
    sessions: SessionService, db: Database
) -> None:
    await created(sessions)
    await created(sessions, "keep")
    await sessions.append_events("s1", [{"n": 1}, {"n": 2}])
    await sessions.append_event("keep", {"n": 1})
    task = await db.tasks.create_task("t", session_id="s1")
    agent = await db.tasks.create_agent("a", "spec", "model", task.id, session_id="s1")
    await db.tasks.save_checkpoint(task.id, 1, {"x": 1}, session_id="s1")

    await sessions.delete_session("s1")

    assert await sessions.get_session("s1") is None
    t = await db.tasks.get_task(task.id)
    a = await db.tasks.get_agent(agent.id)
    c = await db.tasks.latest_checkpoint(task.id)
    assert t is not None and t.session_id is None
    assert a is not None and a.session_id is None
    assert c is not None and c.session_id is None and c.state == {"x": 1}
    async with db.transaction(write=False) as tx:
        left = (
            await tx.execute(text("SELECT session_id, seq FROM session_events ORDER BY id"))
        ).all()
    assert [tuple(r) for r in left] == [("keep", 1)]
    with pytest.raises(NotFoundError):
        await sessions.delete_session("s1")
    await sessions.create_session("s1", "app", "alice")  # the id is free again
    assert (await session(sessions, "s1"))["events"] == []


async def test_db_sessions_is_one_service(db: Database) -> None:
    assert db.sessions is db.sessions
    assert isinstance(db.sessions, SessionService)


# ------------------------------------------------------------------ query plans


async def _every_statement(db: Database, sessions: SessionService) -> list[tuple[str, Any]]:
    """Run every SessionService operation, capturing each statement it sends."""
    await sessions.create_session("p0", "app", "alice", "proj")
    await sessions.create_session("p1", "app", "bob")
    with recording(db) as recorded:
        await sessions.create_session("p2", "app", "carol")
        await sessions.append_event("p0", {"n": 1}, {"k": 1})
        await sessions.append_events("p0", [{"n": 2}, {"n": 3}], expected_seq=1)
        await sessions.get_session("p0")
        await sessions.get_session("p0", recent_events=2, after=datetime(2020, 1, 1, tzinfo=UTC))
        await sessions.list_events("p0", after_seq=1, limit=10)
        await sessions.update_status("p0", "active")
        await sessions.get_state("p0", "k")
        await sessions.set_state("p0", "k", 2)
        await sessions.set_state("p0", 'odd"key', 3)  # the read-merge-write way
        await sessions.list_active_sessions()
        await sessions.list_active_sessions("alice")
        for kw in [
            {}, {"user_id": "alice"}, {"project_id": "proj"}, {"app_name": "app"},
            {"status": "active"}, {"status": "created"}, {"before": "p1"},
        ]:  # fmt: skip
            await sessions.list_sessions(**kw)
        await sessions.get_shared_state("app", "alice")
        await sessions.get_app_shared_state("app")
        await sessions.terminate_session("p0")
        await sessions.delete_session("p1")
    return list(recorded.items())


async def test_every_repository_query_uses_an_index(db: Database, sessions: SessionService) -> None:
    statements = await _every_statement(db, sessions)
    assert len(statements) >= 15, statements
    planned_active = 0
    for statement, params in statements:
        plan = await explain(db, statement, params)
        where = f"{statement}\n" + "\n".join(plan)
        assert not full_scans(db, statement, plan), where
        if "status IN" in statement and "ORDER BY sessions.last_update_time DESC" in statement:
            planned_active += 1
            assert any("idx_sessions_status_updated" in line for line in plan), where
        if "FROM session_events" in statement and "session_events.session_id =" in statement:
            assert any(
                "uq_session_events_session_id_seq" in line
                or "sqlite_autoindex_session_events_1" in line
                for line in plan
            ), where
    assert planned_active == 2


async def test_plan_check_sees_a_full_scan(db: Database) -> None:
    """The check above can fail: an unindexed filter shows up as a scan."""
    if db.is_sqlite:
        plan = await db.explain_query_plan("SELECT id FROM sessions WHERE state = '{}'")
        assert "SCAN sessions" in [line.strip() for line in plan]
    else:
        plan = await explain(db, "SELECT id FROM sessions WHERE state IS NULL", ())
        assert any("Seq Scan on sessions" in line for line in plan)


SESSION_SAVE_FAILS = """
CREATE FUNCTION session_save_fails() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'disk full'; END $$;
CREATE TRIGGER session_save_fails BEFORE UPDATE ON sessions
FOR EACH ROW EXECUTE FUNCTION session_save_fails();
"""


async def test_session_writes_are_atomic(
    db: Database, sessions: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event and its state delta are one transaction; so is termination
    (status, terminated_at and the temp: keys): a failure in the last
    statement leaves nothing of the first. On PostgreSQL an append is one
    statement of a database function (abathur_append_events): its last
    statement is made to fail in the database, by a trigger."""
    from abathur.repositories.sessions import SessionRepository

    await sessions.create_session("s", "app", "u", initial_state={"temp:t": 1, "k": 1})
    await sessions.update_status("s", "active")
    before = await sessions.get_session("s")

    def save_fails(*_: Any, **__: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(SessionRepository, "save", save_fails)
    monkeypatch.setattr(SessionRepository, "merge_state", save_fails)
    if not db.is_sqlite:
        async with db.transaction() as session:
            for statement in SESSION_SAVE_FAILS.split(";\n"):
                if statement.strip():
                    await session.execute(text(statement))
    for write in (
        sessions.append_event("s", {"n": 1}, state_delta={"k": 2}),
        sessions.append_events("s", [{"n": 2}, {"n": 3}], state_delta={"k": 3}),
        sessions.set_state("s", "k", 4),
        sessions.terminate_session("s"),
    ):
        with pytest.raises((RuntimeError, DatabaseError), match="disk full"):
            await write
    monkeypatch.undo()
    if not db.is_sqlite:
        async with db.transaction() as session:
            await session.execute(text("DROP TRIGGER session_save_fails ON sessions"))
    assert await sessions.get_session("s") == before
    assert await sessions.list_events("s") == []


async def test_append_refusals_say_the_same_on_every_backend(
    db: Database, sessions: SessionService
) -> None:
    """On PostgreSQL an append is one call of abathur_append_events (revision
    0011), whose refusals are SQLSTATEs AB101-AB103; each maps to the
    exception and message the Python unit raises on SQLite, and nothing is
    written."""
    import re

    await sessions.create_session("s", "app", "u")
    await sessions.append_event("s", {"n": 1})
    await sessions.create_session("done", "app", "u")
    await sessions.terminate_session("done")
    before = (await sessions.get_session("s"), await sessions.get_session("done"))
    refusals: list[tuple[Any, type[Exception], str]] = [
        (sessions.append_event("nope", {"n": 1}), NotFoundError, "session 'nope' not found"),
        (
            sessions.append_event("done", {"n": 1}, {"k": 1}),
            ConflictError,
            "session 'done' is terminated: it accepts no more writes",
        ),
        (
            sessions.append_events("s", [{"n": 2}], {"k": 2}, expected_seq=0),
            StaleSessionError,
            "session 's' is at seq 1, not the expected 0",
        ),
    ]
    for call, kind, message in refusals:
        with pytest.raises(kind, match=f"^{re.escape(message)}$"):
            await call
    assert (await sessions.get_session("s"), await sessions.get_session("done")) == before
    assert await sessions.append_events("s", [{"n": 2}], {"k": 2}, expected_seq=1) == 2
