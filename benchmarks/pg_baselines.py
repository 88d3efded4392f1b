"""The PostgreSQL limit: the same work as abathur's services, as hand-written asyncpg.

``RawPostgres`` runs on one plain ``asyncpg`` connection the statements a
correct implementation of each operation needs, the way ``baselines.py`` does
on SQLite: a memory write checks that its task exists, serialises the writers
of its key (a transaction-scoped advisory lock, as SQLite's ``BEGIN
IMMEDIATE`` does there), reads the key's newest version with its expiry,
inserts the next version and one audit row, in one transaction; an append
locks the session row, numbers the event after the newest one, inserts it and
merges the state delta (``state || delta``); a session read sees one snapshot
(``REPEATABLE READ``) of the row, its shared ``app:``/``user:`` keys and its
events; a create returns the new session's state merged with those keys.
A single statement (session create, get latest, search) runs alone,
in autocommit. JSON is encoded and decoded by the connection's codecs and
timestamps come back as aware datetimes, as abathur returns them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from abathur.repositories.memory import BULK_LOCK_ID, key_lock_id
from benchmarks.baselines import dumps

MEMORY_FIELDS = (
    "m.id, m.namespace, m.key, m.value, m.memory_type, m.version, m.is_deleted, m.metadata, "
    "m.created_by, m.updated_by, m.created_at, m.updated_at, x.expires_at, x.ttl_seconds"
)
WITH_EXPIRY = (
    "memory_entries AS m LEFT JOIN memory_expiry AS x "
    "ON x.namespace = m.namespace AND x.key = m.key"
)
# A new session returns its merged state, as abathur's create does (the
# shared ``app:``/``user:`` keys its app and user see, issue 13), in the
# same statement.
CREATE_SESSION = (
    "INSERT INTO sessions (id, app_name, user_id, status, state, metadata, created_at, "
    "last_update_time) VALUES ($1, $2, $3, 'created', $4, '{}', $5, $5) "
    "RETURNING state, (SELECT jsonb_object_agg(shared_state.key, shared_state.value) "
    "FROM shared_state WHERE shared_state.app_name = sessions.app_name "
    "AND shared_state.user_id IN ('', sessions.user_id)) AS shared"
)
LOCK_SESSION = "SELECT status, app_name, user_id FROM sessions WHERE id = $1 FOR UPDATE"
LAST_SEQ = "SELECT max(seq) FROM session_events WHERE session_id = $1"
INSERT_EVENT = (
    "INSERT INTO session_events (session_id, seq, event, created_at) VALUES ($1, $2, $3, $4)"
)
MERGE_STATE = "UPDATE sessions SET state = state || $2, last_update_time = $3 WHERE id = $1"
GET_SESSION = (
    "SELECT id, app_name, user_id, project_id, status, state, metadata, created_at, "
    "last_update_time, terminated_at, archived_at FROM sessions WHERE id = $1"
)
SHARED_STATE = "SELECT key, value FROM shared_state WHERE app_name = $1 AND user_id IN ('', $2)"
GET_EVENTS = "SELECT event FROM session_events WHERE session_id = $1 ORDER BY seq"
TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = $1"
# abathur's: the key's lock after the shared side of the bulk lock (put_memories).
LOCK_KEY = (
    "SELECT pg_advisory_xact_lock($1) FROM "
    f"(SELECT pg_advisory_xact_lock_shared({BULK_LOCK_ID})) AS bulk"
)
# The key's previous current version stops being current (revision 0009).
UNSET_CURRENT = (
    "UPDATE memory_entries SET is_current = false "
    "WHERE namespace = $1 AND key = $2 AND is_current = true"
)
LATEST = (
    f"SELECT {MEMORY_FIELDS} FROM {WITH_EXPIRY} WHERE m.namespace = $1 AND m.key = $2 "
    "ORDER BY m.version DESC LIMIT 1"
)
INSERT_MEMORY = (
    "INSERT INTO memory_entries (namespace, key, value, memory_type, version, is_deleted, "
    "is_current, metadata, created_by, updated_by, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, false, true, $6, $7, $8, $9, $10) RETURNING id"
)
INSERT_AUDIT = (
    "INSERT INTO audit (timestamp, task_id, action_type, action_data, result, "
    "memory_operation_type, memory_namespace, memory_entry_id) "
    "VALUES ($1, $2, $3, $4, 'success', $5, $6, $7)"
)
# The current live, unexpired version of every key in a subtree, newest first:
# abathur's predicate (whole segments by a byte-wise range, collation "C").
SEARCH = (
    f"SELECT {MEMORY_FIELDS} FROM {WITH_EXPIRY} "
    'WHERE (m.namespace = $1::text COLLATE "C" OR (m.namespace >= $2::text COLLATE "C" '
    'AND m.namespace < $3::text COLLATE "C")) AND m.is_current AND NOT m.is_deleted '
    "AND (x.expires_at IS NULL OR x.expires_at > $4) "
    "ORDER BY m.updated_at DESC, m.id DESC LIMIT $5"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _expired(row: asyncpg.Record, now: datetime) -> bool:
    return row["expires_at"] is not None and row["expires_at"] <= now


def memory_row(row: asyncpg.Record) -> dict[str, Any]:
    record = dict(row)
    record["metadata"] = record["metadata"] or {}
    return record


async def _json_codecs(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps, decoder=json.loads, schema="pg_catalog")


class RawPostgres:
    """Plain asyncpg on one connection; an asyncio lock serialises its use."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, dsn: str, schema: str) -> RawPostgres:
        # The same server settings as abathur's engine: a custom plan per execution.
        conn = await asyncpg.connect(
            dsn, server_settings={"search_path": schema, "plan_cache_mode": "force_custom_plan"}
        )
        await _json_codecs(conn)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    # ------------------------------------------------------------ sessions

    async def create_session(self, session_id: str, app_name: str, user_id: str) -> dict[str, Any]:
        async with self.lock:
            row = await self.conn.fetchrow(
                CREATE_SESSION, session_id, app_name, user_id, {}, utcnow()
            )
        assert row is not None
        return {**row["state"], **(row["shared"] or {})}

    async def append_event(
        self, session_id: str, event: dict[str, Any], delta: dict[str, Any]
    ) -> None:
        now = utcnow()
        event = {"event_id": uuid.uuid4().hex, "timestamp": now.isoformat(), **event}
        async with self.lock, self.conn.transaction():
            c = self.conn
            row = await c.fetchrow(LOCK_SESSION, session_id)
            if row is None:
                raise LookupError(session_id)
            if row["status"] in ("terminated", "archived"):
                raise PermissionError(session_id)
            last = await c.fetchval(LAST_SEQ, session_id)
            await c.execute(INSERT_EVENT, session_id, (last or 0) + 1, event, now)
            await c.execute(MERGE_STATE, session_id, delta, now)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        async with self.lock, self.conn.transaction(isolation="repeatable_read", readonly=True):
            c = self.conn
            row = await c.fetchrow(GET_SESSION, session_id)
            if row is None:
                return None
            shared = await c.fetch(SHARED_STATE, row["app_name"], row["user_id"])
            events = [e for (e,) in await c.fetch(GET_EVENTS, session_id)]
        found = dict(row)
        found["metadata"] = found["metadata"] or {}
        if shared:
            found["state"] = {**found["state"], **{k: v for k, v in shared}}
        found["events"] = events
        return found

    # ------------------------------------------------------------ memory

    async def _write_memory(
        self,
        ns: str,
        key: str,
        value: dict[str, Any],
        memory_type: str,
        by: str,
        task_id: str,
        mode: str,  # "add", "update" or "put"
    ) -> int:
        now = utcnow()
        async with self.lock, self.conn.transaction():
            c = self.conn
            if await c.fetchval(TASK_EXISTS, task_id) is None:
                raise LookupError(task_id)
            await c.execute(LOCK_KEY, key_lock_id(ns, key))
            latest = await c.fetchrow(LATEST, ns, key)
            if latest is not None and _expired(latest, now):  # not on the benchmark's path
                raise NotImplementedError("expired keys")
            live = latest is not None and not latest["is_deleted"]
            if mode == "add" and live:
                raise KeyError(f"{ns}/{key} exists")
            if mode == "update" and not live:
                raise KeyError(f"{ns}/{key} not found")
            version = 1 if latest is None else latest["version"] + 1
            if live:
                assert latest is not None
                memory_type, metadata = latest["memory_type"], latest["metadata"] or {}
                created_by, created_at = latest["created_by"], latest["created_at"]
                action = "update"
            else:
                metadata, created_by, created_at, action = {}, by, now, "create"
            await c.execute(UNSET_CURRENT, ns, key)
            entry_id: int = await c.fetchval(
                INSERT_MEMORY,
                ns, key, value, memory_type, version, metadata, created_by, by, created_at, now,
            )  # fmt: skip
            data = {"key": key, "version": version}
            data["updated_by" if live else "created_by"] = by
            if not live:
                data["memory_type"] = memory_type
            await c.execute(
                INSERT_AUDIT, now, task_id, f"memory_{action}", data, action, ns, entry_id
            )
            return entry_id

    async def add_memory(
        self, ns: str, key: str, value: dict[str, Any], memory_type: str, by: str, task: str
    ) -> int:
        return await self._write_memory(ns, key, value, memory_type, by, task, "add")

    async def update_memory(
        self, ns: str, key: str, value: dict[str, Any], by: str, task: str
    ) -> int:
        return await self._write_memory(ns, key, value, "semantic", by, task, "update")

    async def put_memory(
        self, ns: str, key: str, value: dict[str, Any], memory_type: str, by: str, task: str
    ) -> int:
        return await self._write_memory(ns, key, value, memory_type, by, task, "put")

    async def get_memory(self, ns: str, key: str) -> dict[str, Any] | None:
        async with self.lock:
            row = await self.conn.fetchrow(LATEST, ns, key)
        if row is None or row["is_deleted"] or _expired(row, utcnow()):
            return None
        return memory_row(row)

    async def search(self, root: str, limit: int) -> list[dict[str, Any]]:
        async with self.lock:
            rows = await self.conn.fetch(SEARCH, root, root + ":", root + ";", utcnow(), limit)
        return [memory_row(r) for r in rows]
