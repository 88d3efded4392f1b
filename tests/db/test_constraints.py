"""Every CHECK, UNIQUE and foreign-key rule rejects a bad row and accepts a good one."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from abathur.errors import AlreadyExistsError, DatabaseError, ValidationError
from abathur.infrastructure.database import Database

NOW = "CURRENT_TIMESTAMP"
TASK = (
    "INSERT INTO tasks (id, prompt, status, input_data, submitted_at, last_updated_at{cols}) "
    "VALUES ('{id}', 'p', {status}, {input}, " + NOW + ", " + NOW + "{vals})"
)


def task(id: str = "t", status: str = "'pending'", input: str = "'{}'", **extra: str) -> str:
    cols = "".join(f", {k}" for k in extra)
    vals = "".join(f", {v}" for v in extra.values())
    return TASK.format(id=id, status=status, input=input, cols=cols, vals=vals)


SETUP = [
    task("t0"),
    "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at) "
    "VALUES ('a0', 'n', 's', 'm', 't0', 'idle', " + NOW + ")",
    "INSERT INTO sessions (id, app_name, user_id) VALUES ('s0', 'app', 'u')",
]

GOOD = {
    "task": task("t1", priority="10", result_data="'[1, 2]'", dependencies="'[\"t0\"]'"),
    "task_with_null_json": task("t2", result_data="NULL", dependencies="NULL"),
    "agent": "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at, "
    "resource_usage) VALUES ('a1', 'n', 's', 'm', 't0', 'working', " + NOW + ", '{}')",
    "state": "INSERT INTO state (task_id, key, value, created_at, updated_at) "
    "VALUES ('t0', 'k', '1', " + NOW + ", " + NOW + ")",
    "audit": "INSERT INTO audit (timestamp, task_id, agent_id, action_type, action_data, "
    "memory_operation_type) VALUES (" + NOW + ", 't0', 'a0', 'memory_create', '{}', 'create')",
    "metric": "INSERT INTO metrics (timestamp, metric_name, metric_value, labels) "
    "VALUES (" + NOW + ", 'm', 0, '{}')",
    "checkpoint": "INSERT INTO checkpoints (task_id, iteration, state, created_at, session_id) "
    "VALUES ('t0', 1, '{}', " + NOW + ", 's0')",
    "session": "INSERT INTO sessions (id, app_name, user_id, status, state, metadata) "
    "VALUES ('s1', 'app', 'u', 'paused', '{}', '{}')",
    "memory": "INSERT INTO memory_entries (namespace, key, value, memory_type, version) "
    "VALUES ('user:u', 'k', '{}', 'episodic', 1)",
    "document": "INSERT INTO document_index (file_path, title, content_hash, sync_status) "
    "VALUES ('a.md', 'A', 'h', 'stale')",
}

# (rule, statement, is a JSON-syntax rule). On PostgreSQL, JSONB itself refuses
# invalid JSON with a data error instead of a CHECK violation.
BAD = [
    ("task status enum", task("b", status="'done'"), False),
    ("task priority range", task("b", priority="11"), False),
    ("task input_data json", task("b", input="'{oops'"), True),
    ("task result_data json", task("b", result_data="'nope'"), True),
    ("task dependencies json", task("b", dependencies="'[1,'"), True),
    ("task parent fk", task("b", parent_task_id="'missing'"), False),
    ("task session fk", task("b", session_id="'missing'"), False),
    ("duplicate task id", task("t0"), False),
    (
        "agent state enum",
        "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at) "
        "VALUES ('b', 'n', 's', 'm', 't0', 'sleeping', " + NOW + ")",
        False,
    ),
    (
        "agent task fk",
        "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at) "
        "VALUES ('b', 'n', 's', 'm', 'missing', 'idle', " + NOW + ")",
        False,
    ),
    (
        "agent resource_usage json",
        "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at, "
        "resource_usage) VALUES ('b', 'n', 's', 'm', 't0', 'idle', " + NOW + ", 'x')",
        True,
    ),
    (
        "state value json",
        "INSERT INTO state (task_id, key, value, created_at, updated_at) "
        "VALUES ('t0', 'k2', 'x', " + NOW + ", " + NOW + ")",
        True,
    ),
    (
        "state unique (task_id, key)",
        "INSERT INTO state (task_id, key, value, created_at, updated_at) "
        "VALUES ('t0', 'k', '2', " + NOW + ", " + NOW + ")",
        False,
    ),
    (
        "audit memory_operation_type enum",
        "INSERT INTO audit (timestamp, task_id, action_type, memory_operation_type) "
        "VALUES (" + NOW + ", 't0', 'x', 'restore')",
        False,
    ),
    (
        "audit action_data json",
        "INSERT INTO audit (timestamp, task_id, action_type, action_data) "
        "VALUES (" + NOW + ", 't0', 'x', '{]')",
        True,
    ),
    (
        "audit task fk",
        "INSERT INTO audit (timestamp, task_id, action_type) VALUES (" + NOW + ", 'no', 'x')",
        False,
    ),
    (
        "audit memory entry fk",
        "INSERT INTO audit (timestamp, task_id, action_type, memory_entry_id) "
        "VALUES (" + NOW + ", 't0', 'x', 999)",
        False,
    ),
    (
        "negative metric",
        "INSERT INTO metrics (timestamp, metric_name, metric_value) "
        "VALUES (" + NOW + ", 'm', -0.5)",
        False,
    ),
    (
        "metric labels json",
        "INSERT INTO metrics (timestamp, metric_name, metric_value, labels) "
        "VALUES (" + NOW + ", 'm', 1, '[')",
        True,
    ),
    (
        "checkpoint state json",
        "INSERT INTO checkpoints (task_id, iteration, state, created_at) "
        "VALUES ('t0', 2, 'x', " + NOW + ")",
        True,
    ),
    (
        "checkpoint session fk",
        "INSERT INTO checkpoints (task_id, iteration, state, created_at, session_id) "
        "VALUES ('t0', 3, '{}', " + NOW + ", 'missing')",
        False,
    ),
    (
        "session status enum",
        "INSERT INTO sessions (id, app_name, user_id, status) VALUES ('b', 'a', 'u', 'open')",
        False,
    ),
    (
        "session state json",
        "INSERT INTO sessions (id, app_name, user_id, state) VALUES ('b', 'a', 'u', '{')",
        True,
    ),
    (
        "session metadata json",
        "INSERT INTO sessions (id, app_name, user_id, metadata) VALUES ('b', 'a', 'u', 'm')",
        True,
    ),
    (
        "duplicate session id",
        "INSERT INTO sessions (id, app_name, user_id) VALUES ('s0', 'a', 'u')",
        False,
    ),
    (
        "memory type enum",
        "INSERT INTO memory_entries (namespace, key, value, memory_type) "
        "VALUES ('user:u', 'x', '{}', 'factual')",
        False,
    ),
    (
        "memory version > 0",
        "INSERT INTO memory_entries (namespace, key, value, memory_type, version) "
        "VALUES ('user:u', 'x', '{}', 'semantic', 0)",
        False,
    ),
    (
        "memory value json",
        "INSERT INTO memory_entries (namespace, key, value, memory_type) "
        "VALUES ('user:u', 'x', 'v', 'semantic')",
        True,
    ),
    (
        "memory metadata json",
        "INSERT INTO memory_entries (namespace, key, value, memory_type, metadata) "
        "VALUES ('user:u', 'x', '{}', 'semantic', '{')",
        True,
    ),
    (
        "memory unique (namespace, key, version)",
        "INSERT INTO memory_entries (namespace, key, value, memory_type, version) "
        "VALUES ('user:u', 'k', '{}', 'semantic', 1)",
        False,
    ),
    (
        "document sync_status enum",
        "INSERT INTO document_index (file_path, title, content_hash, sync_status) "
        "VALUES ('b.md', 'B', 'h', 'done')",
        False,
    ),
    (
        "document metadata json",
        "INSERT INTO document_index (file_path, title, content_hash, metadata) "
        "VALUES ('b.md', 'B', 'h', 'x')",
        True,
    ),
    (
        "document unique file_path",
        "INSERT INTO document_index (file_path, title, content_hash) VALUES ('a.md', 'A', 'h')",
        False,
    ),
]


async def _execute(db: Database, *statements: str) -> None:
    async with db.transaction() as session:
        for statement in statements:
            await session.execute(text(statement))


@pytest.fixture
async def seeded(db: Database) -> Database:
    await _execute(db, *SETUP, *GOOD.values())
    return db


async def test_good_rows_are_accepted(seeded: Database) -> None:
    async with seeded.transaction(write=False) as session:
        count = await session.scalar(
            text("SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM memory_entries)")
        )
    assert count == 4  # t0, t1, t2 and one memory row


@pytest.mark.parametrize(("rule", "statement", "json_rule"), BAD, ids=[b[0] for b in BAD])
async def test_bad_row_is_rejected(
    seeded: Database, rule: str, statement: str, json_rule: bool
) -> None:
    # transaction() lets no driver error out: each arrives translated, its
    # cause kept.
    expected: type[Exception] = IntegrityError
    if json_rule and not seeded.is_sqlite:
        expected = DBAPIError  # JSONB: "invalid input syntax for type json"
    translated = (
        (DatabaseError,) if expected is DBAPIError else (ValidationError, AlreadyExistsError)
    )
    with pytest.raises(translated) as caught:
        await _execute(seeded, statement)
    cause = caught.value.__cause__
    assert isinstance(cause, expected)
    if json_rule and seeded.is_sqlite:
        assert "json" in str(cause.orig).lower()


async def test_deleting_a_session_sets_references_to_null(seeded: Database) -> None:
    await _execute(
        seeded,
        task("t9", session_id="'s0'"),
        "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at, "
        "session_id) VALUES ('a9', 'n', 's', 'm', 't9', 'idle', " + NOW + ", 's0')",
    )
    await _execute(seeded, "DELETE FROM sessions WHERE id = 's0'")
    async with seeded.transaction(write=False) as session:
        rows = (
            await session.execute(
                text(
                    "SELECT (SELECT session_id FROM tasks WHERE id = 't9'), "
                    "(SELECT session_id FROM agents WHERE id = 'a9'), "
                    "(SELECT session_id FROM checkpoints WHERE task_id = 't0' "
                    "AND iteration = 1), (SELECT count(*) FROM tasks WHERE id = 't9')"
                )
            )
        ).one()
    assert tuple(rows) == (None, None, None, 1)


async def test_deleting_a_memory_entry_sets_audit_reference_to_null(seeded: Database) -> None:
    await _execute(
        seeded,
        "INSERT INTO audit (timestamp, task_id, action_type, memory_entry_id) "
        "SELECT " + NOW + ", 't0', 'fk_probe', id FROM memory_entries",
        "DELETE FROM memory_entries",
    )
    async with seeded.transaction(write=False) as session:
        refs = await session.scalar(
            text(
                "SELECT count(*) FROM audit WHERE action_type = 'fk_probe' "
                "AND memory_entry_id IS NULL"
            )
        )
    assert refs == 1
