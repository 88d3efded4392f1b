"""The physical limits: the same work as abathur's services, as hand-written SQL.

``SyncBaseline`` drives plain ``sqlite3`` (the limit for a synchronous caller),
``AsyncBaseline`` plain ``aiosqlite`` (the limit for an async caller). Both run
the statements a correct implementation needs and nothing more: a write takes
the write lock at BEGIN (``BEGIN IMMEDIATE``), reads the row it changes,
inserts, updates and commits; a state delta is merged by SQLite
(``json_set``) inside that transaction, as abathur does. A session's state is
returned merged with the shared ``app:``/``user:`` keys its app and user see
(issue 13), by create (in the INSERT's RETURNING) and by get_session (in its
read transaction), as abathur's are.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiosqlite

PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=WAL",
)


def now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# A new session returns its merged state, as abathur's create does (the
# shared ``app:``/``user:`` keys its app and user see, issue 13), in the
# same statement.
CREATE_SESSION = (
    "INSERT INTO sessions (id, app_name, user_id, status, state, metadata, created_at, "
    "last_update_time) VALUES (?, ?, ?, 'created', ?, '{}', ?, ?) "
    "RETURNING state, (SELECT json_group_object(shared_state.key, json(shared_state.value)) "
    "FROM shared_state WHERE shared_state.app_name = sessions.app_name "
    "AND shared_state.user_id IN ('', sessions.user_id))"
)
SHARED_STATE = "SELECT key, value FROM shared_state WHERE app_name = ? AND user_id IN ('', ?)"
LOCK_SESSION = "SELECT status FROM sessions WHERE id = ?"
NEXT_SEQ = "SELECT coalesce(max(seq), 0) + 1 FROM session_events WHERE session_id = ?"
INSERT_EVENT = "INSERT INTO session_events (session_id, seq, event, created_at) VALUES (?, ?, ?, ?)"


def merge_state(delta: dict[str, Any], stamp: str, session_id: str) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE merging ``delta``'s keys into the state, and its parameters."""
    pairs = ", ".join(["?, json(?)"] * len(delta))
    sql = f"UPDATE sessions SET state = json_set(state, {pairs}), last_update_time = ? WHERE id = ?"
    args = [a for key, value in delta.items() for a in (f'$."{key}"', dumps(value))]
    return sql, (*args, stamp, session_id)


GET_SESSION = (
    "SELECT id, app_name, user_id, project_id, status, state, metadata, created_at, "
    "last_update_time, terminated_at, archived_at FROM sessions WHERE id = ?"
)
GET_EVENTS = "SELECT event FROM session_events WHERE session_id = ? ORDER BY seq"

TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = ?"
LATEST = (
    "SELECT id, namespace, key, value, memory_type, version, is_deleted, metadata, "
    "created_by, updated_by, created_at, updated_at FROM memory_entries "
    "WHERE namespace = ? AND key = ? ORDER BY version DESC LIMIT 1"
)
VERSION = (
    "SELECT id, namespace, key, value, memory_type, version, is_deleted, metadata, "
    "created_by, updated_by, created_at, updated_at FROM memory_entries "
    "WHERE namespace = ? AND key = ? AND version = ?"
)
HISTORY = (
    "SELECT id, namespace, key, value, memory_type, version, is_deleted, metadata, "
    "created_by, updated_by, created_at, updated_at FROM memory_entries "
    "WHERE namespace = ? AND key = ? ORDER BY version"
)
# A new version becomes its key's current one (the flag abathur keeps exact).
UNSET_CURRENT = (
    "UPDATE memory_entries SET is_current = 0 WHERE namespace = ? AND key = ? AND is_current = 1"
)
INSERT_MEMORY = (
    "INSERT INTO memory_entries (namespace, key, value, memory_type, version, is_deleted, "
    "metadata, created_by, updated_by, created_at, updated_at, is_current) "
    "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 1)"
)
INSERT_AUDIT = (
    "INSERT INTO audit (timestamp, task_id, action_type, action_data, memory_operation_type, "
    "memory_namespace, memory_entry_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# The current live version of every key in a subtree, newest first: the same
# predicate abathur uses (whole segments by a byte-wise range).
SEARCH = (
    "SELECT m.id, m.namespace, m.key, m.value, m.memory_type, m.version, m.is_deleted, "
    "m.metadata, m.created_by, m.updated_by, m.created_at, m.updated_at "
    "FROM memory_entries AS m WHERE (m.namespace = ? OR (m.namespace >= ? AND m.namespace < ?)) "
    "AND m.is_current = 1 AND m.is_deleted = 0 "
    "ORDER BY m.updated_at DESC, m.id DESC LIMIT ?"
)


def memory_row(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = (
        "id", "namespace", "key", "value", "memory_type", "version", "is_deleted",
        "metadata", "created_by", "updated_by", "created_at", "updated_at",
    )  # fmt: skip
    record = dict(zip(keys, row, strict=True))
    record["value"] = json.loads(record["value"])
    record["metadata"] = json.loads(record["metadata"] or "{}")
    record["is_deleted"] = bool(record["is_deleted"])
    record["created_at"] = aware(record["created_at"])
    record["updated_at"] = aware(record["updated_at"])
    return record


def aware(stamp: str | None) -> datetime | None:
    """A stored UTC timestamp as an aware datetime, as abathur returns it."""
    return None if stamp is None else datetime.fromisoformat(stamp).replace(tzinfo=UTC)


def merged(own: str, shared: str | None) -> dict[str, Any]:
    """A session's state (its JSON text) merged with its shared keys (a JSON
    object's text, or None for none), as abathur's merged view."""
    state: dict[str, Any] = json.loads(own)
    if shared is not None:
        state.update(json.loads(shared))
    return state


def session_row(row: tuple[Any, ...], events: list[Any], shared: Iterable[Any]) -> dict[str, Any]:
    """A session as abathur's get_session returns it: the row, its state
    merged with ``shared`` (its shared keys' rows), its events."""
    keys = (
        "id", "app_name", "user_id", "project_id", "status", "state", "metadata",
        "created_at", "last_update_time", "terminated_at", "archived_at",
    )  # fmt: skip
    record = dict(zip(keys, row, strict=True))
    record["state"] = {**json.loads(record["state"]), **{k: json.loads(v) for k, v in shared}}
    record["metadata"] = json.loads(record["metadata"] or "{}")
    for stamp in ("created_at", "last_update_time", "terminated_at", "archived_at"):
        record[stamp] = aware(record[stamp])
    record["events"] = events
    return record


def subtree_params(root: str, limit: int) -> tuple[str, str, str, int]:
    return (root, root + ":", root + ";", limit)


class SyncBaseline:
    """Plain sqlite3, autocommit mode with explicit BEGIN IMMEDIATE for writes."""

    def __init__(self, path: str):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            self.conn.execute(pragma)

    def close(self) -> None:
        self.conn.close()

    def create_session(self, session_id: str, app_name: str, user_id: str) -> dict[str, Any]:
        stamp = now()
        own, shared = self.conn.execute(
            CREATE_SESSION, (session_id, app_name, user_id, "{}", stamp, stamp)
        ).fetchone()
        return merged(own, shared)

    def append_event(self, session_id: str, event: dict[str, Any], delta: dict[str, Any]) -> None:
        event = {"event_id": uuid.uuid4().hex, "timestamp": now(), **event}
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            (_status,) = c.execute(LOCK_SESSION, (session_id,)).fetchone()
            (seq,) = c.execute(NEXT_SEQ, (session_id,)).fetchone()
            stamp = now()
            c.execute(INSERT_EVENT, (session_id, seq, dumps(event), stamp))
            c.execute(*merge_state(delta, stamp, session_id))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def get_session(self, session_id: str) -> dict[str, Any]:
        c = self.conn
        c.execute("BEGIN")
        row = c.execute(GET_SESSION, (session_id,)).fetchone()
        shared = c.execute(SHARED_STATE, (row[1], row[2])).fetchall()
        events = [json.loads(e) for (e,) in c.execute(GET_EVENTS, (session_id,))]
        c.execute("COMMIT")
        return session_row(row, events, shared)

    def _write_memory(
        self, ns: str, key: str, value: dict[str, Any], by: str, task_id: str, create: bool
    ) -> int:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute(TASK_EXISTS, (task_id,)).fetchone() is None:
                raise LookupError(task_id)
            latest = c.execute(LATEST, (ns, key)).fetchone()
            version = 1 if latest is None else latest[5] + 1
            memory_type = "semantic" if latest is None else latest[4]
            stamp = now()
            c.execute(UNSET_CURRENT, (ns, key))
            cur = c.execute(
                INSERT_MEMORY,
                (ns, key, dumps(value), memory_type, version, "{}", by, by, stamp, stamp),
            )
            entry_id = int(cur.lastrowid or 0)
            action = "create" if create else "update"
            c.execute(
                INSERT_AUDIT,
                (
                    stamp, task_id, f"memory_{action}", dumps({"key": key, "version": version}),
                    action, ns, entry_id,
                ),
            )  # fmt: skip
            c.execute("COMMIT")
            return entry_id
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def add_memory(self, ns: str, key: str, value: dict[str, Any], by: str, task: str) -> int:
        return self._write_memory(ns, key, value, by, task, create=True)

    def update_memory(self, ns: str, key: str, value: dict[str, Any], by: str, task: str) -> int:
        return self._write_memory(ns, key, value, by, task, create=False)

    def get_memory(self, ns: str, key: str, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            row = self.conn.execute(LATEST, (ns, key)).fetchone()
            return None if row is None or row[6] else memory_row(row)
        row = self.conn.execute(VERSION, (ns, key, version)).fetchone()
        return None if row is None else memory_row(row)

    def history(self, ns: str, key: str) -> list[dict[str, Any]]:
        return [memory_row(r) for r in self.conn.execute(HISTORY, (ns, key))]

    def search(self, root: str, limit: int) -> list[dict[str, Any]]:
        return [memory_row(r) for r in self.conn.execute(SEARCH, subtree_params(root, limit))]


class AsyncBaseline:
    """Plain aiosqlite on one connection; an asyncio lock serialises transactions."""

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> AsyncBaseline:
        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            await conn.execute(pragma)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    # One crossing to aiosqlite's thread per statement read (``execute_fetchall``),
    # not three (execute, fetch, close the cursor), as abathur's reads take one.
    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        rows = list(await self.conn.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, params))

    async def create_session(self, session_id: str, app_name: str, user_id: str) -> dict[str, Any]:
        stamp = now()
        async with self.lock:
            ((own, shared),) = await self.conn.execute_fetchall(
                CREATE_SESSION, (session_id, app_name, user_id, "{}", stamp, stamp)
            )  # one crossing to aiosqlite's thread, as the plain execute was
        return merged(own, shared)

    async def append_event(
        self, session_id: str, event: dict[str, Any], delta: dict[str, Any]
    ) -> None:
        event = {"event_id": uuid.uuid4().hex, "timestamp": now(), **event}
        async with self.lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                (_status,) = await self._one(LOCK_SESSION, (session_id,))
                (seq,) = await self._one(NEXT_SEQ, (session_id,))
                stamp = now()
                await c.execute(INSERT_EVENT, (session_id, seq, dumps(event), stamp))
                await c.execute(*merge_state(delta, stamp, session_id))
                await c.execute("COMMIT")
            except BaseException:
                await c.execute("ROLLBACK")
                raise

    async def get_session(self, session_id: str) -> dict[str, Any]:
        async with self.lock:
            await self.conn.execute("BEGIN")
            row = await self._one(GET_SESSION, (session_id,))
            shared = await self._all(SHARED_STATE, (row[1], row[2]))
            events = [json.loads(e) for (e,) in await self._all(GET_EVENTS, (session_id,))]
            await self.conn.execute("COMMIT")
        return session_row(row, events, shared)

    async def _write_memory(
        self, ns: str, key: str, value: dict[str, Any], by: str, task_id: str, create: bool
    ) -> int:
        async with self.lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                if await self._one(TASK_EXISTS, (task_id,)) is None:
                    raise LookupError(task_id)
                latest = await self._one(LATEST, (ns, key))
                version = 1 if latest is None else latest[5] + 1
                memory_type = "semantic" if latest is None else latest[4]
                stamp = now()
                await c.execute(UNSET_CURRENT, (ns, key))
                cur = await c.execute(
                    INSERT_MEMORY,
                    (ns, key, dumps(value), memory_type, version, "{}", by, by, stamp, stamp),
                )
                entry_id = int(cur.lastrowid or 0)
                action = "create" if create else "update"
                await c.execute(
                    INSERT_AUDIT,
                    (
                        stamp, task_id, f"memory_{action}",
                        dumps({"key": key, "version": version}), action, ns, entry_id,
                    ),
                )  # fmt: skip
                await c.execute("COMMIT")
                return entry_id
            except BaseException:
                await c.execute("ROLLBACK")
                raise

    async def add_memory(self, ns: str, key: str, value: dict[str, Any], by: str, task: str) -> int:
        return await self._write_memory(ns, key, value, by, task, create=True)

    async def update_memory(
        self, ns: str, key: str, value: dict[str, Any], by: str, task: str
    ) -> int:
        return await self._write_memory(ns, key, value, by, task, create=False)

    async def get_memory(
        self, ns: str, key: str, version: int | None = None
    ) -> dict[str, Any] | None:
        if version is None:
            row = await self._one(LATEST, (ns, key))
            return None if row is None or row[6] else memory_row(row)
        row = await self._one(VERSION, (ns, key, version))
        return None if row is None else memory_row(row)

    async def history(self, ns: str, key: str) -> list[dict[str, Any]]:
        return [memory_row(r) for r in await self._all(HISTORY, (ns, key))]

    async def search(self, root: str, limit: int) -> list[dict[str, Any]]:
        return [memory_row(r) for r in await self._all(SEARCH, subtree_params(root, limit))]
