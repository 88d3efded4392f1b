"""Shared state scopes: ``app:`` keys shared by every session of an app,
``user:`` keys by every session of (app, user), on both backends."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import text

from abathur.domain.sessions import MAX_SHARED_KEY_BYTES
from abathur.domain.values import MAX_ID_BYTES
from abathur.errors import ConflictError, NotFoundError, StaleSessionError, ValidationError
from abathur.infrastructure.database import Database
from tests.support.plans import recording


async def _state(db: Database, session_id: str) -> dict[str, object]:
    got = await db.sessions.get_session(session_id)
    assert got is not None
    return dict(got["state"])


async def test_app_keys_are_shared_by_every_session_of_the_app(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice", initial_state={"app:k1": 1})
    await db.sessions.append_event("a1", {"n": 1}, {"app:k2": [2]})
    await db.sessions.create_session("b1", "app", "bob")
    await db.sessions.create_session("x1", "other-app", "alice")

    assert await _state(db, "b1") == {"app:k1": 1, "app:k2": [2]}
    assert await _state(db, "a1") == {"app:k1": 1, "app:k2": [2]}
    assert await _state(db, "x1") == {}
    await db.sessions.set_state("b1", "app:k1", "from bob")
    assert await db.sessions.get_state("a1", "app:k1") == "from bob"
    assert await db.sessions.get_state("x1", "app:k1") is None


async def test_user_keys_are_shared_by_the_sessions_of_one_user_only(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice", initial_state={"user:k": "v1"})
    await db.sessions.create_session("a2", "app", "alice")
    await db.sessions.create_session("b1", "app", "bob")
    await db.sessions.create_session("x1", "app2", "alice")
    await db.sessions.append_event("a2", {"n": 1}, {"user:k2": {"deep": [1, None]}})

    shared = {"user:k": "v1", "user:k2": {"deep": [1, None]}}
    assert await _state(db, "a1") == shared
    assert await _state(db, "a2") == shared
    assert await _state(db, "b1") == {}
    assert await _state(db, "x1") == {}
    assert await db.sessions.get_state("a1", "user:k2") == {"deep": [1, None]}
    assert await db.sessions.get_state("b1", "user:k2") is None
    assert await db.sessions.get_shared_state("app", "alice") == shared
    assert await db.sessions.get_shared_state("app", "bob") == {}
    assert await db.sessions.get_shared_state("app") == {}


async def test_session_and_temp_keys_stay_per_session(db: Database) -> None:
    await db.sessions.create_session(
        "a1", "app", "alice", initial_state={"k": 1, "session:k": 2, "temp:k": 3, "app:k": 4}
    )
    await db.sessions.create_session("a2", "app", "alice")
    assert await _state(db, "a1") == {"k": 1, "session:k": 2, "temp:k": 3, "app:k": 4}
    assert await _state(db, "a2") == {"app:k": 4}
    await db.sessions.terminate_session("a1")
    assert await _state(db, "a1") == {"k": 1, "session:k": 2, "app:k": 4}


async def test_shared_keys_are_stored_once_not_in_the_session(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice", initial_state={"user:k": 1, "own": 2})
    await db.sessions.append_event("a1", {}, {"app:k": 3, "own2": 4})
    async with db.transaction(write=False) as tx:
        state = (await tx.execute(text("SELECT state FROM sessions"))).scalar_one()
        rows = (
            await tx.execute(text("SELECT user_id, key FROM shared_state ORDER BY user_id, key"))
        ).all()
    assert (state if isinstance(state, dict) else json.loads(state)) == {
        "own": 2,
        "own2": 4,
    }
    assert [tuple(r) for r in rows] == [("", "app:k"), ("alice", "user:k")]


async def test_a_rejected_append_writes_no_shared_key(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice")
    await db.sessions.append_event("a1", {"n": 1})
    with pytest.raises(StaleSessionError):
        await db.sessions.append_event("a1", {"n": 2}, {"user:k": 1}, expected_seq=0)
    with pytest.raises(ValidationError, match="user:bad"):
        await db.sessions.append_event("a1", {"n": 2}, {"user:bad": float("nan")})
    await db.sessions.terminate_session("a1")
    with pytest.raises(ConflictError):
        await db.sessions.append_event("a1", {"n": 3}, {"app:k": 1})
    with pytest.raises(ConflictError):
        await db.sessions.set_state("a1", "user:k", 1)
    assert await db.sessions.get_shared_state("app", "alice") == {}
    got = await db.sessions.get_session("a1")
    assert got is not None and [e["n"] for e in got["events"]] == [1]


async def test_shared_keys_survive_the_sessions_that_wrote_them(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice", initial_state={"user:k": 1})
    await db.sessions.delete_session("a1")
    assert await db.sessions.get_shared_state("app", "alice") == {"user:k": 1}
    await db.sessions.create_session("a2", "app", "alice")
    assert await _state(db, "a2") == {"user:k": 1}


async def test_an_apps_shared_state_is_read_whole_in_one_statement(db: Database) -> None:
    """``get_app_shared_state``: the app's keys and every user's, by scope;
    each user's merged view is what ``get_shared_state`` reads for that user."""
    await db.sessions.create_session(
        "a1", "app", "alice", initial_state={"app:k": 1, "user:k": "a"}
    )
    await db.sessions.create_session(
        "b1", "app", "bob", initial_state={"user:k": "b", "user:j": [2]}
    )
    await db.sessions.create_session("c1", "app", "carol")
    await db.sessions.create_session("x1", "app2", "alice", initial_state={"app:k": 9, "user:z": 0})
    await db.sessions.delete_session("b1")  # bob's keys stay (as get_shared_state reads them)
    with recording(db) as sent:
        got = await db.sessions.get_app_shared_state("app")
    assert len(sent) == 1
    assert got == {
        "app": {"app:k": 1},
        "users": {"alice": {"user:k": "a"}, "bob": {"user:k": "b", "user:j": [2]}},
    }
    for user in ("alice", "bob", "carol"):
        merged = {**got["app"], **got["users"].get(user, {})}
        assert merged == await db.sessions.get_shared_state("app", user)
    assert await db.sessions.get_app_shared_state("nope") == {"app": {}, "users": {}}
    with pytest.raises(ValidationError):
        await db.sessions.get_app_shared_state("")


async def test_shared_key_reads_and_writes_need_a_session(db: Database) -> None:
    with pytest.raises(NotFoundError):
        await db.sessions.set_state("nope", "user:k", 1)
    with pytest.raises(NotFoundError):
        await db.sessions.append_event("nope", {}, {"app:k": 1})
    with pytest.raises(ValidationError):
        await db.sessions.get_shared_state("")
    with pytest.raises(ValidationError):
        await db.sessions.create_session("a1", "app", "alice", initial_state={"app:k": {1, 2}})
    assert await db.sessions.get_session("a1") is None


async def test_create_session_returns_the_session_as_get_session_reads_it(db: Database) -> None:
    await db.sessions.create_session("a1", "app", "alice", initial_state={"user:k": [1]})
    await db.sessions.create_session("b1", "app", "bob", initial_state={"app:k": {"x": None}})
    await db.sessions.create_session("z1", "app2", "alice", initial_state={"app:k": "other"})
    for sid, user, initial in [
        ("a2", "alice", {"own": 1, "user:k2": 2}),  # shared keys written and already there
        ("a3", "alice", {}),  # shared keys already there only, one statement
        ("c1", "carol", {"app:k": "new", "temp:t": True}),  # a shared key overwritten
        ("c2", "carol", None),
    ]:
        created = await db.sessions.create_session(sid, "app", user, initial_state=initial)
        got = await db.sessions.get_session(sid)
        assert got is not None
        del got["events"], got["last_seq"]  # type: ignore[misc]
        assert created == got


# Not compressible (PostgreSQL compresses a long index entry before it checks
# its size): distinct hex digests.
NOISE = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(100))
WIDE = "\U0001f600"  # four bytes in UTF-8
BAD_STATE_KEYS = [
    pytest.param("user:\ud800", id="shared key with a lone surrogate"),
    pytest.param("\ud800", id="own key with a lone surrogate"),
    pytest.param("temp:x\udfff", id="temp key with a lone surrogate"),
    pytest.param("app:" + NOISE[:3000], id="shared key too long for PostgreSQL's index"),
    pytest.param("user:" + WIDE * 128, id="shared key of 4-byte characters past the limit"),
]


@pytest.mark.parametrize("key", BAD_STATE_KEYS)
async def test_a_state_key_that_cannot_be_stored_is_refused_alike(db: Database, key: str) -> None:
    """Before: a lone surrogate in a ``state_delta`` key escaped as
    UnicodeEncodeError on SQLite (PostgreSQL: ValidationError for an own key,
    a bare DatabaseError for a shared one); a shared key too long for the
    ``shared_state`` primary key was stored on SQLite and a DatabaseError on
    PostgreSQL. Now ValidationError naming the key on both, nothing stored."""
    await db.sessions.create_session("a1", "app", "alice")
    with pytest.raises(ValidationError, match="state_delta key"):
        await db.sessions.append_event("a1", {"n": 1}, {key: 1, "user:fine": 1})
    with pytest.raises(ValidationError, match="state_delta key"):
        await db.sessions.append_events("a1", [{"n": 1}], {key: 1}, expected_seq=0)
    with pytest.raises(ValidationError, match="initial_state key"):
        await db.sessions.create_session("a2", "app", "alice", initial_state={key: 1})
    with pytest.raises(ValidationError, match="key"):
        await db.sessions.set_state("a1", key, 1)
    got = await db.sessions.get_session("a1")
    assert got is not None and (got["last_seq"], got["state"]) == (0, {})
    assert await db.sessions.get_session("a2") is None
    assert await db.sessions.get_shared_state("app", "alice") == {}


async def test_the_longest_shared_key_is_stored_with_the_longest_ids(db: Database) -> None:
    """At the limits exactly (ids of ``MAX_ID_BYTES``, a shared key of
    ``MAX_SHARED_KEY_BYTES``, none compressible), PostgreSQL's primary key
    entry of ``shared_state`` has room for all three."""
    app, user = NOISE[:MAX_ID_BYTES], NOISE[MAX_ID_BYTES : 2 * MAX_ID_BYTES]
    key = "user:" + NOISE[-(MAX_SHARED_KEY_BYTES - 5) :]
    await db.sessions.create_session("a1", app, user, initial_state={key: 1})
    await db.sessions.set_state("a1", key, 2)
    assert await db.sessions.get_state("a1", key) == 2
    assert await db.sessions.get_shared_state(app, user) == {key: 2}
