"""Alembic history: one linear chain, no drift from the models, a rollback
path to Milestone 1 that keeps every Milestone 1 row, on both backends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from abathur.db.migrate import alembic_config
from abathur.infrastructure.database import Database
from abathur.schema.models import Base
from tests.conftest import DbFactory

M1 = "0001_milestone1_core"
M2 = "0002_milestone2_memory"

M1_TABLES = {
    "tasks": {
        "id", "prompt", "agent_type", "priority", "status", "input_data", "result_data",
        "error_message", "retry_count", "max_retries", "max_execution_timeout_seconds",
        "submitted_at", "last_updated_at", "started_at", "completed_at", "created_by",
        "parent_task_id", "dependencies", "session_id",
    },
    "agents": {
        "id", "name", "specialization", "model", "task_id", "state", "spawned_at",
        "terminated_at", "resource_usage", "session_id",
    },
    "state": {"id", "task_id", "key", "value", "created_at", "updated_at"},
    "audit": {
        "id", "timestamp", "agent_id", "task_id", "action_type", "action_data", "result",
        "memory_operation_type", "memory_namespace", "memory_entry_id",
    },
    "metrics": {"id", "timestamp", "metric_name", "metric_value", "labels"},
    "checkpoints": {"task_id", "iteration", "state", "created_at", "session_id"},
}  # fmt: skip
M1_INDEXES = {
    "idx_tasks_status_priority", "idx_tasks_session_id", "idx_tasks_submitted_at",
    "idx_tasks_parent_task_id", "idx_agents_task_id", "idx_agents_session_id",
    "idx_agents_spawned_at", "idx_audit_task_id", "idx_audit_timestamp",
    "idx_audit_memory_operation", "idx_audit_memory_entry_id",
    "idx_checkpoints_task_id_iteration", "idx_checkpoints_session_id",
    "idx_checkpoints_created_at", "idx_metrics_timestamp",
}  # fmt: skip
M2_TABLES = {
    "sessions": {
        "id", "app_name", "user_id", "project_id", "status", "events", "state", "metadata",
        "created_at", "last_update_time", "terminated_at", "archived_at",
    },
    "memory_entries": {
        "id", "namespace", "key", "value", "memory_type", "version", "is_deleted", "metadata",
        "created_by", "updated_by", "created_at", "updated_at",
    },
    "document_index": {
        "id", "file_path", "title", "document_type", "content_hash", "chunk_count",
        "embedding_model", "embedding_blob", "metadata", "last_synced_at", "sync_status",
        "created_at", "updated_at",
    },
}  # fmt: skip
M2_INDEXES = {
    "idx_sessions_status_updated", "idx_sessions_user_created", "idx_sessions_project_id",
    "idx_sessions_app_user", "idx_memory_namespace_key_version", "idx_memory_type_updated",
    "idx_memory_namespace_prefix", "idx_memory_created_by", "idx_memory_updated_at",
    "idx_memory_type_namespace", "idx_memory_is_deleted", "idx_document_file_path",
    "idx_document_type", "idx_document_sync_status", "idx_document_hash",
    "idx_document_updated",
}  # fmt: skip
M2_FOREIGN_KEYS = {
    ("tasks", "session_id", "sessions", "SET NULL"),
    ("agents", "session_id", "sessions", "SET NULL"),
    ("checkpoints", "session_id", "sessions", "SET NULL"),
    ("audit", "memory_entry_id", "memory_entries", "SET NULL"),
}


def test_history_is_one_linear_chain() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    chain = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert chain[:2] == [M1, M2]
    for rev in script.walk_revisions():
        assert rev.down_revision is None or isinstance(rev.down_revision, str)


# ------------------------------------------------------------------ snapshots


def _user_tables(conn: Connection) -> list[str]:
    return sorted(t for t in inspect(conn).get_table_names() if t != "alembic_version")


def _index_names(conn: Connection) -> set[str]:
    insp = inspect(conn)
    return {
        ix["name"]
        for t in _user_tables(conn)
        for ix in insp.get_indexes(t)
        if ix["name"] and "duplicates_constraint" not in ix  # PostgreSQL's UNIQUE backing
    }


def _normalise_sql(sql: str | None) -> str:
    return re.sub(r"\s+", " ", (sql or "").replace('"', "")).strip().lower()


def snapshot(conn: Connection) -> dict[str, Any]:
    """Everything that defines the schema, in a form two databases can be compared by."""
    insp = inspect(conn)
    shot: dict[str, Any] = {}
    for table in _user_tables(conn):
        shot[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], _normalise_sql(str(c["default"])))
                for c in insp.get_columns(table)
            ],
            "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
            "fks": sorted(
                (
                    fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"],
                    tuple(fk["referred_columns"]), fk["options"].get("ondelete"),
                )
                for fk in insp.get_foreign_keys(table)
            ),
            "checks": sorted(
                (ck["name"], _normalise_sql(ck["sqltext"]))
                for ck in insp.get_check_constraints(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
        }  # fmt: skip
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
            "AND sql IS NOT NULL ORDER BY name"
        )
    else:
        rows = conn.exec_driver_sql(
            "SELECT indexname, tablename, replace(indexdef, current_schema() || '.', '') "
            "FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename <> 'alembic_version' ORDER BY indexname"
        )
    shot["indexes"] = [(n, t, _normalise_sql(sql)) for n, t, sql in rows]
    return shot


async def _run(db: Database, fn: Any) -> Any:
    async with db.engine.connect() as conn:
        return await conn.run_sync(fn)


# ------------------------------------------------------------------ drift


async def test_autogenerate_finds_no_drift(db: Database) -> None:
    def diff(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    assert await _run(db, diff) == []


async def test_migrated_schema_equals_the_models_exactly(make_db: DbFactory) -> None:
    """Stronger than autogenerate: CHECK constraints, DESC, partial WHERE, names."""
    migrated = await make_db("migrated.db")
    await migrated.initialize()
    declared = await make_db("declared.db")
    async with declared.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    assert await _run(migrated, snapshot) == await _run(declared, snapshot)


async def test_every_spec_table_column_and_index_after_each_revision(
    make_db: DbFactory,
) -> None:
    db = await make_db()
    await db.upgrade(M1)
    tables = await _run(db, lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)}
                                       for t in _user_tables(c)})  # fmt: skip
    assert tables == M1_TABLES
    assert await _run(db, _index_names) == M1_INDEXES

    await db.upgrade(M2)
    tables = await _run(db, lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)}
                                       for t in _user_tables(c)})  # fmt: skip
    assert tables == M1_TABLES | M2_TABLES
    assert await _run(db, _index_names) == M1_INDEXES | M2_INDEXES

    def session_fks(conn: Connection) -> set[tuple[str, str, str, str]]:
        insp = inspect(conn)
        return {
            (t, fk["constrained_columns"][0], fk["referred_table"], fk["options"]["ondelete"])
            for t in _user_tables(conn)
            for fk in insp.get_foreign_keys(t)
            if fk["options"].get("ondelete")
        }

    assert await _run(db, session_fks) == M2_FOREIGN_KEYS


# ------------------------------------------------------------------ round trip

M1_ROWS = [
    "INSERT INTO tasks (id, prompt, status, input_data, submitted_at, last_updated_at, "
    "session_id) VALUES ('t1', 'root', 'pending', '{\"a\": 1}', CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP, 'sess-1')",
    "INSERT INTO tasks (id, prompt, status, input_data, submitted_at, last_updated_at, "
    "parent_task_id) VALUES ('t2', 'child', 'running', '[]', CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP, 't1')",
    "INSERT INTO agents (id, name, specialization, model, task_id, state, spawned_at, "
    "session_id) VALUES ('a1', 'n', 's', 'm', 't1', 'working', CURRENT_TIMESTAMP, 'sess-1')",
    "INSERT INTO state (task_id, key, value, created_at, updated_at) "
    "VALUES ('t1', 'k', '\"v\"', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO audit (timestamp, task_id, agent_id, action_type, action_data) "
    "VALUES (CURRENT_TIMESTAMP, 't1', 'a1', 'task_create', '{\"x\": true}')",
    "INSERT INTO metrics (timestamp, metric_name, metric_value, labels) "
    "VALUES (CURRENT_TIMESTAMP, 'latency', 1.5, '{\"op\": \"a\"}')",
    "INSERT INTO checkpoints (task_id, iteration, state, created_at, session_id) "
    "VALUES ('t1', 1, '{\"step\": 1}', CURRENT_TIMESTAMP, 'sess-2')",
]
M2_ROWS = [
    "INSERT INTO sessions (id, app_name, user_id) VALUES ('sess-3', 'app', 'alice')",
    "UPDATE tasks SET session_id = 'sess-3' WHERE id = 't2'",
    "INSERT INTO memory_entries (namespace, key, value, memory_type) "
    "VALUES ('user:alice', 'k', '{\"v\": 1}', 'semantic')",
    "INSERT INTO audit (timestamp, task_id, action_type, memory_operation_type, "
    "memory_namespace, memory_entry_id) VALUES (CURRENT_TIMESTAMP, 't1', 'memory_create', "
    "'create', 'user:alice', (SELECT max(id) FROM memory_entries))",
    "INSERT INTO document_index (file_path, title, content_hash) VALUES ('a.md', 'A', 'h')",
]
M1_DUMP = {
    "tasks": "SELECT id, prompt, status, session_id, parent_task_id FROM tasks ORDER BY id",
    "agents": "SELECT id, task_id, state, session_id FROM agents ORDER BY id",
    "state": "SELECT task_id, key FROM state ORDER BY id",
    "audit": "SELECT id, task_id, action_type, memory_namespace FROM audit ORDER BY id",
    "metrics": "SELECT metric_name, metric_value FROM metrics ORDER BY id",
    "checkpoints": "SELECT task_id, iteration, session_id FROM checkpoints ORDER BY task_id",
}


async def _execute(db: Database, statements: list[str]) -> None:
    async with db.transaction() as session:
        for statement in statements:
            await session.execute(text(statement))


async def _dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with db.transaction(write=False) as session:
        return {
            table: [tuple(r) for r in await session.execute(text(sql))]
            for table, sql in M1_DUMP.items()
        }


async def _assert_healthy(db: Database) -> None:
    assert await db.integrity_check() == "ok"
    assert await db.validate_foreign_keys() == []


async def test_round_trip_keeps_milestone1_rows(make_db: DbFactory) -> None:
    db = await make_db()
    await db.upgrade(M1)
    await _execute(db, M1_ROWS)
    await _assert_healthy(db)
    m1_before = await _dump(db)

    await db.upgrade("head")  # orphan session ids become placeholder sessions
    await _assert_healthy(db)
    assert await _dump(db) == m1_before
    async with db.transaction(write=False) as session:
        placeholders = (
            await session.execute(text("SELECT id, status FROM sessions ORDER BY id"))
        ).all()
    assert [tuple(p) for p in placeholders] == [("sess-1", "archived"), ("sess-2", "archived")]
    await _execute(db, M2_ROWS)
    m1_with_m2 = await _dump(db)

    await db.downgrade(M1)
    await _assert_healthy(db)
    assert await db.current_revision() == M1
    assert await _dump(db) == m1_with_m2  # every M1 row, session ids included
    assert await _run(db, _index_names) == M1_INDEXES
    assert set(await _run(db, _user_tables)) == set(M1_TABLES)

    await db.upgrade("head")
    await _assert_healthy(db)
    assert await _dump(db) == m1_with_m2
    async with db.transaction(write=False) as session:
        ids = (await session.execute(text("SELECT id FROM sessions ORDER BY id"))).scalars()
        assert list(ids) == ["sess-1", "sess-2", "sess-3"]
        orphaned = await session.scalar(
            text("SELECT count(*) FROM audit WHERE memory_entry_id IS NOT NULL")
        )
        assert orphaned == 0  # its memory entry went with the downgrade

    await db.downgrade("base")
    assert await _run(db, _user_tables) == []


async def test_downgraded_schema_equals_a_fresh_milestone1(make_db: DbFactory) -> None:
    fresh = await make_db("fresh.db")
    await fresh.upgrade(M1)
    cycled = await make_db("cycled.db")
    await cycled.upgrade("head")
    await cycled.downgrade(M1)
    assert await _run(cycled, snapshot) == await _run(fresh, snapshot)


async def test_initialize_is_idempotent_and_concurrent_safe(make_db: DbFactory) -> None:
    import asyncio

    first = await make_db()
    second = await make_db(share_with=first)
    await asyncio.gather(first.initialize(), second.initialize(), first.initialize())
    await first.initialize()
    script = ScriptDirectory.from_config(alembic_config())
    assert await second.current_revision() == script.get_current_head()


async def test_foreign_keys_are_back_on_after_migrating(tmp_path: Path) -> None:
    """Migrations switch SQLite's foreign keys off; pooled connections get them back."""
    async with Database(tmp_path / "fk.db") as db:
        await db.downgrade(M1)
        await db.upgrade("head")
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


async def test_columns_matched_by_byte_ranges_use_byte_order(db: Database) -> None:
    """Namespaces (memory and audit) and document paths are matched by byte-wise
    ranges; on PostgreSQL their columns must collate as bytes ("C"), whatever
    the database's default (under ICU en-US ';' sorts before ':', and a subtree
    query would miss rows). SQLite compares bytes by default."""
    async with db.transaction(write=False) as session:
        if db.is_sqlite:  # no COLLATE clause anywhere: BINARY, SQLite's byte order
            tables = await session.execute(
                text(
                    "SELECT sql FROM sqlite_master WHERE name IN "
                    "('audit', 'document_index', 'memory_entries', 'memory_expiry')"
                )
            )
            assert [sql for (sql,) in tables if "COLLATE" in sql.upper()] == []
            return
        rows = await session.execute(
            text(
                "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_name IN "
                "('namespace', 'memory_namespace', 'file_path') ORDER BY table_name"
            )
        )
        collations = [tuple(r) for r in rows]
    assert collations == [
        ("audit", "memory_namespace", "C"),
        ("document_index", "file_path", "C"),
        ("memory_entries", "namespace", "C"),
        ("memory_expiry", "namespace", "C"),
    ]
