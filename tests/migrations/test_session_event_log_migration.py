"""Revision 0003: sessions.events arrays become session_events rows and back,
with every event kept in order, on both backends."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from abathur.errors import MigrationError
from abathur.infrastructure.database import Database
from tests.conftest import DbFactory
from tests.migrations.test_migrations import M2, _run, snapshot

M3 = "0003_session_event_log"

# Enough events that an accidental order (by id text, by hash, by value) shows:
# element i has n = i, and the keys put the events in a different text order.
LONG = [{"n": i, "key": f"{(i * 7919) % 1000:04d}"} for i in range(120)]
ARRAYS: dict[str, list[Any]] = {
    "empty": [],
    "one": [{"type": "start", "nested": {"a": [1, 2, None]}}],
    "long": LONG,
    "mixed": [
        {"a": 1},
        "text",
        3,
        2.5,
        True,
        False,
        None,
        [1, "x"],
        {"u": "é ✓"},
        0.30000000000000004,
        123456789012345678901234567890,
        -1.5e-300,
        {"k": 0.1 + 0.2},
    ],
}


async def _seed_m2(db: Database) -> None:
    async with db.transaction() as tx:
        for sid, events in ARRAYS.items():
            await tx.execute(
                text(
                    "INSERT INTO sessions (id, app_name, user_id, events, state) "
                    "VALUES (:id, 'app', 'alice', :events, '{}')"
                    if db.is_sqlite
                    else "INSERT INTO sessions (id, app_name, user_id, events, state) "
                    "VALUES (:id, 'app', 'alice', CAST(:events AS JSONB), '{}')"
                ),
                {"id": sid, "events": json.dumps(events)},
            )


async def _insert_events(db: Database, sid: str, rows: list[tuple[int, Any]]) -> None:
    event = ":event" if db.is_sqlite else "CAST(:event AS JSONB)"
    async with db.transaction() as tx:
        for seq, value in rows:
            await tx.execute(
                text(
                    "INSERT INTO session_events (session_id, seq, event, created_at) "
                    f"VALUES (:sid, :seq, {event}, CURRENT_TIMESTAMP)"
                ),
                {"sid": sid, "seq": seq, "event": json.dumps(value)},
            )


async def _arrays(db: Database) -> dict[str, list[Any]]:
    async with db.transaction(write=False) as tx:
        rows = (await tx.execute(text("SELECT id, events FROM sessions"))).all()
    return {sid: json.loads(ev) if isinstance(ev, str) else ev for sid, ev in rows}


async def test_upgrade_moves_every_event_in_order(make_db: DbFactory) -> None:
    db = await make_db()
    await db.upgrade(M2)
    await _seed_m2(db)
    await db.upgrade(M3)
    assert await db.integrity_check() == "ok"
    assert await db.validate_foreign_keys() == []
    # The services read the newest schema (revision 0008 added shared_state);
    # the revisions after 0003 keep its rows as they are.
    await db.upgrade("head")

    for sid, events in ARRAYS.items():
        got = await db.sessions.get_session(sid)
        assert got is not None
        assert got["events"] == events, sid
        assert got["last_seq"] == len(events)
        listed = await db.sessions.list_events(sid, limit=1000)
        assert [e["seq"] for e in listed] == list(range(1, len(events) + 1))
    # Appends continue the migrated sequence.
    await db.sessions.append_event("long", {"n": 120})
    assert [e["seq"] for e in await db.sessions.list_events("long", after_seq=118)] == [
        119,
        120,
        121,
    ]


async def test_downgrade_folds_rows_back_in_seq_order(make_db: DbFactory) -> None:
    db = await make_db()
    await db.upgrade("head")
    for sid in ("empty", "long", "mixed"):
        await db.sessions.create_session(sid, "app", "alice")
    # Insert the long log in an order that is not seq order, so an aggregate
    # that followed insertion (rowid) order would put the events out of order.
    shuffled = sorted(range(len(LONG)), key=lambda i: LONG[i]["key"])
    await _insert_events(db, "long", [(i + 1, LONG[i]) for i in shuffled])
    await _insert_events(db, "mixed", list(enumerate(ARRAYS["mixed"], start=1))[::-1])

    await db.downgrade(M2)
    assert await db.current_revision() == M2
    assert await db.integrity_check() == "ok"
    arrays = await _arrays(db)
    assert arrays["empty"] == []
    assert arrays["long"] == LONG
    assert arrays["mixed"] == ARRAYS["mixed"]

    # And up again (through 0003 to the schema the services read): the same
    # events, the same order.
    await db.upgrade(M3)
    await db.upgrade("head")
    for sid in ("long", "mixed"):
        got = await db.sessions.get_session(sid)
        assert got is not None and got["events"] == arrays[sid]


async def test_round_trip_schema_matches_a_fresh_m2_and_head(make_db: DbFactory) -> None:
    fresh_m2 = await make_db("m2.db")
    await fresh_m2.upgrade(M2)
    cycled = await make_db("cycled.db")
    await cycled.upgrade("head")
    await cycled.downgrade(M2)

    def unordered(shot: dict[str, Any]) -> dict[str, Any]:
        # PostgreSQL cannot put a re-added column back in its old position.
        return {
            t: {**v, "columns": sorted(v["columns"])} if t != "indexes" else v
            for t, v in shot.items()
        }

    cycled_shot = await _run(cycled, snapshot)
    fresh_shot = await _run(fresh_m2, snapshot)
    if cycled.is_sqlite:
        assert cycled_shot == fresh_shot
    else:
        assert unordered(cycled_shot) == unordered(fresh_shot)

    fresh_head = await make_db("head.db")
    await fresh_head.upgrade("head")
    await cycled.upgrade("head")
    assert await _run(cycled, snapshot) == await _run(fresh_head, snapshot)


async def test_upgrade_refuses_events_that_are_not_an_array(make_db: DbFactory) -> None:
    db = await make_db()
    await db.upgrade(M2)
    async with db.transaction() as tx:
        await tx.execute(
            text(
                "INSERT INTO sessions (id, app_name, user_id, events, state) "
                "VALUES ('odd', 'app', 'alice', '{\"a\": 1}', '{}')"
            )
        )
    with pytest.raises(MigrationError, match="not a JSON array"):
        await db.upgrade(M3)
    assert await db.current_revision() == M2
    assert await _arrays(db) == {"odd": {"a": 1}}


async def _set_metadata(db: Database, sid: str, metadata: Any) -> None:
    value = ":m" if db.is_sqlite else "CAST(:m AS JSONB)"
    async with db.transaction() as tx:
        await tx.execute(
            text(f"UPDATE sessions SET metadata = {value} WHERE id = :id"),
            {"id": sid, "m": None if metadata is None else json.dumps(metadata)},
        )


async def _metadata(db: Database) -> dict[str, Any]:
    async with db.transaction(write=False) as tx:
        rows = (await tx.execute(text("SELECT id, metadata FROM sessions"))).all()
    return {sid: json.loads(m) if isinstance(m, str) else m for sid, m in rows}


async def test_downgrade_and_upgrade_keep_each_events_time(make_db: DbFactory) -> None:
    """Before, the round trip gave every event its session's last_update_time,
    which changed what get_session(after=) returns."""
    db = await make_db()
    await db.upgrade("head")
    metadata: dict[str, Any] = {"object": {"x": 1}, "null": None, "empty": {}}
    for sid, value in metadata.items():
        await db.sessions.create_session(sid, "app", "alice")
        await _set_metadata(db, sid, value)
        for n in range(4):
            await db.sessions.append_event(sid, {"n": n})
    await db.sessions.create_session("no-events", "app", "alice")
    before = {sid: await db.sessions.list_events(sid) for sid in metadata}
    times = {sid: [e["created_at"] for e in events] for sid, events in before.items()}
    assert all(len(set(t)) == 4 for t in times.values())  # four distinct instants each
    middle = times["object"][1]
    seen_after = await db.sessions.get_session("object", after=middle)
    assert seen_after is not None and [e["n"] for e in seen_after["events"]] == [2, 3]

    await db.downgrade(M2)
    arrays = await _arrays(db)
    for sid, events in before.items():
        assert arrays[sid] == [e["event"] for e in events]  # the events themselves unchanged
    await db.upgrade(M3)
    await db.upgrade("head")

    for sid, events in before.items():
        assert await db.sessions.list_events(sid) == events, sid
    again = await db.sessions.get_session("object", after=middle)
    assert again is not None and again["events"] == seen_after["events"]
    # The reserved keys are gone again; a NULL metadata is NULL again.
    assert await _metadata(db) == {**metadata, "no-events": {}}


async def test_events_appended_below_0003_take_the_sessions_time(make_db: DbFactory) -> None:
    """An event added at revision 0002 after the downgrade has no kept time: it
    takes last_update_time, after every kept one; a metadata that is not an
    object keeps no times and is left as it was."""
    db = await make_db()
    await db.upgrade("head")
    for sid in ("grown", "odd"):
        await db.sessions.create_session(sid, "app", "alice")
        await db.sessions.append_events(sid, [{"n": 0}, {"n": 1}])
    await _set_metadata(db, "odd", [1, 2])
    kept = [e["created_at"] for e in await db.sessions.list_events("grown")]
    await db.downgrade(M2)
    grown = (await _arrays(db))["grown"] + [{"n": 2}]
    events = ":e" if db.is_sqlite else "CAST(:e AS JSONB)"
    async with db.transaction() as tx:
        await tx.execute(
            text(
                f"UPDATE sessions SET events = {events}, last_update_time = :t WHERE id = 'grown'"
            ),
            {"e": json.dumps(grown), "t": kept[-1] + timedelta(seconds=5)},
        )
    await db.upgrade("head")
    listed = await db.sessions.list_events("grown")
    assert [e["event"]["n"] for e in listed] == [0, 1, 2]
    assert [e["created_at"] for e in listed] == [*kept, kept[-1] + timedelta(seconds=5)]
    odd = await db.sessions.get_session("odd")
    assert odd is not None and odd["metadata"] == [1, 2] and len(odd["events"]) == 2
