"""Revision 0008: per-session ``app:``/``user:`` keys move to ``shared_state``
(the newest write wins) and are copied back on downgrade, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from abathur.db.migrate import alembic_config
from abathur.infrastructure.database import Database
from abathur.schema.types import JSONDocument, UTCDateTime
from tests.conftest import DbFactory

M8 = "0008_shared_state_scopes"
BELOW = ScriptDirectory.from_config(alembic_config()).get_revision(M8).down_revision
assert isinstance(BELOW, str)

SESSIONS = sa.table(
    "sessions",
    sa.column("id", sa.Text()),
    sa.column("app_name", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("state", JSONDocument()),
    sa.column("created_at", UTCDateTime()),
    sa.column("last_update_time", UTCDateTime()),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BIG = 123456789012345678901234567890
# (id, app, user, minutes after T0 of the last write, state)
ROWS: list[tuple[str, str, str, int, dict[str, Any]]] = [
    ("s1", "A", "alice", 1, {"app:k": 1, "app:big": BIG, "app:f": 0.1 + 0.2, "user:k": "old",
                              "own": 1, "temp:t": True}),
    ("s2", "A", "alice", 2, {"user:k": {"new": [1, None]}, "own": 2}),
    ("s3", "A", "bob", 3, {"app:k": 3, "session:x": "y"}),
    ("s4", "B", "alice", 0, {"user:k": "b"}),
    ("s5", "B", "carol", 0, {}),
]  # fmt: skip
SHARED_AFTER = {
    ("A", "", "app:big"): BIG,
    ("A", "", "app:f"): 0.1 + 0.2,
    ("A", "", "app:k"): 3,  # s3 wrote last
    ("A", "alice", "user:k"): {"new": [1, None]},  # s2 wrote last
    ("B", "alice", "user:k"): "b",
}
OWN_AFTER = {
    "s1": {"own": 1, "temp:t": True},
    "s2": {"own": 2},
    "s3": {"session:x": "y"},
    "s4": {},
    "s5": {},
}
APP_A = {"app:k": 3, "app:big": BIG, "app:f": 0.1 + 0.2}
STATES_BELOW = {  # after the downgrade: every session sees what it saw at head
    "s1": {"own": 1, "temp:t": True, **APP_A, "user:k": {"new": [1, None]}},
    "s2": {"own": 2, **APP_A, "user:k": {"new": [1, None]}},
    "s3": {"session:x": "y", **APP_A},
    "s4": {"user:k": "b"},
    "s5": {},
}


async def _seed(db: Database) -> None:
    async with db.transaction() as tx:
        for sid, app, user, minutes, state in ROWS:
            at = T0 + timedelta(minutes=minutes)
            await tx.execute(
                SESSIONS.insert().values(
                    id=sid, app_name=app, user_id=user, state=state,
                    created_at=T0, last_update_time=at,
                )
            )  # fmt: skip


async def _states(db: Database) -> dict[str, Any]:
    async with db.transaction(write=False) as tx:
        rows = (await tx.execute(sa.select(SESSIONS.c.id, SESSIONS.c.state))).all()
    return {sid: state for sid, state in rows}


async def _shared(db: Database) -> dict[tuple[str, str, str], Any]:
    table = sa.table(
        "shared_state",
        sa.column("app_name", sa.Text()),
        sa.column("user_id", sa.Text()),
        sa.column("key", sa.Text()),
        sa.column("value", JSONDocument()),
    )
    async with db.transaction(write=False) as tx:
        rows = (await tx.execute(sa.select(table))).all()
    return {(a, u, k): v for a, u, k, v in rows}


async def test_up_down_up_moves_shared_keys_and_copies_them_back(make_db: DbFactory) -> None:
    db = await make_db()
    await db.upgrade(BELOW)
    await _seed(db)

    await db.upgrade(M8)
    assert await _shared(db) == SHARED_AFTER
    assert await _states(db) == OWN_AFTER
    # (``recent_events``: the read of several statements; the whole read is
    # a function of 0018 on PostgreSQL, checked at head below.)
    got = await db.sessions.get_session("s1", recent_events=10)
    assert got is not None and got["state"] == STATES_BELOW["s1"]
    assert await db.sessions.get_state("s5", "user:k") is None

    # A session created at head sees the shared keys; after the downgrade it owns copies.
    # (At head: on PostgreSQL create_session reads them through a function of 0014.)
    await db.upgrade("head")
    got = await db.sessions.get_session("s1")
    assert got is not None and got["state"] == STATES_BELOW["s1"]
    await db.sessions.create_session("s6", "A", "alice")
    await db.downgrade(BELOW)
    assert await _states(db) == STATES_BELOW | {"s6": {**APP_A, "user:k": {"new": [1, None]}}}

    await db.upgrade(M8)
    assert await _shared(db) == SHARED_AFTER
    assert await _states(db) == OWN_AFTER | {"s6": {}}
    assert await db.integrity_check() == "ok"


async def test_upgrade_of_a_database_without_shared_keys_writes_no_row(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.upgrade(BELOW)
    async with db.transaction() as tx:
        await tx.execute(
            SESSIONS.insert().values(
                id="s", app_name="A", user_id="u", state={"k": 1},
                created_at=T0, last_update_time=T0,
            )
        )  # fmt: skip
    await db.upgrade(M8)
    assert await _shared(db) == {}
    assert await _states(db) == {"s": {"k": 1}}
