"""MemoryService against a plain-Python model, under random operation sequences.

Each example gets a fresh database (a private in-memory SQLite, or a new
PostgreSQL schema) driven through a private event loop, so hypothesis runs the
state machine synchronously. After every step the whole table and the audit
log are compared with the model.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry, MemoryEntry
from tests.conftest import PG_URL, pg_schema

T = TypeVar("T")

NAMESPACES = ["user:a", "user:a:b", "user:ab", "user:a%", "user:a_", "user:a_:x", "session:a"]
ROOTS = [*NAMESPACES, "user", "user:a\\"]
KEYS = ["k", "k%", "k_", "%", "_"]
LEAF = st.integers(min_value=0, max_value=3)
VALUES = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(LEAF, st.dictionaries(st.sampled_from(["x", "y"]), LEAF, max_size=2)),
    max_size=3,
)
TYPES = st.sampled_from(["semantic", "episodic", "procedural"])


def merged(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Deep merge, oldest first, written independently of the service's."""

    def merge_into(target: dict[str, Any], source: dict[str, Any]) -> None:
        for k, v in source.items():
            if isinstance(v, dict) and isinstance(target.get(k), dict):
                merge_into(target[k], v)
            else:
                target[k] = copy.deepcopy(v)

    out: dict[str, Any] = {}
    for value in values:
        merge_into(out, value)
    return out


def in_subtree(namespace: str, root: str) -> bool:
    return namespace == root or namespace.startswith(root + ":")


class MemoryMachine(RuleBasedStateMachine):
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.schema: AbstractAsyncContextManager[str] | None = None
        if self.backend == "sqlite":
            self.db = Database(Path(":memory:"))
        else:
            self.schema = pg_schema()
            name = self.run(self.schema.__aenter__())
            self.db = Database(PG_URL, connect_args={"server_settings": {"search_path": name}})
        self.run(self.db.initialize())
        self.task_id = self.run(self.db.tasks.create_task("state machine")).id
        # (namespace, key) -> versions, each {"value", "memory_type", "deleted"}
        self.model: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.writes: list[tuple[str, str, str, int]] = []  # (operation, ns, key, version)
        self.rows_seen = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.db.close())
            if self.schema is not None:
                self.run(self.schema.__aexit__(None, None, None))
        finally:
            self.loop.close()

    # ------------------------------------------------------------ model helpers

    def live(self, ns: str, key: str) -> bool:
        versions = self.model.get((ns, key), [])
        return bool(versions) and not versions[-1]["deleted"]

    def append(self, ns: str, key: str, value: dict[str, Any], memory_type: str) -> int:
        versions = self.model.setdefault((ns, key), [])
        versions.append(
            {"value": copy.deepcopy(value), "memory_type": memory_type, "deleted": False}
        )
        return len(versions)

    def pick(self, data: st.DataObject) -> tuple[str, str]:
        """Mostly a key the model knows, so that updates and reads hit real rows."""
        if self.model and data.draw(st.integers(0, 4)) > 0:
            return data.draw(st.sampled_from(sorted(self.model)))
        return data.draw(st.sampled_from(NAMESPACES)), data.draw(st.sampled_from(KEYS))

    # ------------------------------------------------------------ writes

    @rule(
        ns=st.sampled_from(NAMESPACES),
        key=st.sampled_from(KEYS),
        value=VALUES,
        memory_type=TYPES,
    )
    def add(self, ns: str, key: str, value: dict[str, Any], memory_type: str) -> None:
        memory = self.db.memory
        if self.live(ns, key):
            with pytest.raises(AlreadyExistsError):
                self.run(memory.add_memory(ns, key, value, memory_type, "m", self.task_id))
            return
        self.run(memory.add_memory(ns, key, value, memory_type, "m", self.task_id))
        self.writes.append(("create", ns, key, self.append(ns, key, value, memory_type)))

    @rule(data=st.data(), value=VALUES)
    def update(self, data: st.DataObject, value: dict[str, Any]) -> None:
        ns, key = self.pick(data)
        memory = self.db.memory
        if not self.live(ns, key):
            with pytest.raises(NotFoundError):
                self.run(memory.update_memory(ns, key, value, "m", self.task_id))
            return
        self.run(memory.update_memory(ns, key, value, "m", self.task_id))
        memory_type = self.model[(ns, key)][-1]["memory_type"]
        self.writes.append(("update", ns, key, self.append(ns, key, value, memory_type)))

    @rule(
        data=st.data(),
    )
    def delete(self, data: st.DataObject) -> None:
        ns, key = self.pick(data)
        memory = self.db.memory
        if not self.live(ns, key):
            with pytest.raises(NotFoundError):
                self.run(memory.delete_memory(ns, key, "m", self.task_id))
            return
        self.run(memory.delete_memory(ns, key, "m", self.task_id))
        versions = self.model[(ns, key)]
        for v in versions:
            v["deleted"] = True
        self.writes.append(("delete", ns, key, len(versions)))

    @rule(data=st.data(), version=st.integers(1, 4))
    def restore(self, data: st.DataObject, version: int) -> None:
        ns, key = self.pick(data)
        memory = self.db.memory
        versions = self.model.get((ns, key), [])
        if version > len(versions):
            with pytest.raises(NotFoundError):
                self.run(memory.restore_memory(ns, key, version, "m", self.task_id))
            return
        self.run(memory.restore_memory(ns, key, version, "m", self.task_id))
        source = versions[version - 1]
        self.writes.append(
            ("update", ns, key, self.append(ns, key, source["value"], source["memory_type"]))
        )

    @rule(root=st.sampled_from(ROOTS), strategy=st.sampled_from(["latest_wins", "merge"]))
    def consolidate(self, root: str, strategy: str) -> None:
        expected = 0
        for (ns, key), versions in sorted(self.model.items()):
            live = [v for v in versions if not v["deleted"]]
            if not in_subtree(ns, root) or len(live) < 2:
                continue
            values = [v["value"] for v in live]
            value = copy.deepcopy(values[-1]) if strategy == "latest_wins" else merged(values)
            for v in live:
                v["deleted"] = True
            version = self.append(ns, key, value, live[-1]["memory_type"])
            self.writes.append(("consolidate", ns, key, version))
            expected += 1
        got = self.run(self.db.memory.consolidate_memories(root, strategy, task_id=self.task_id))
        assert got == expected

    # ------------------------------------------------------------ reads

    @rule(
        data=st.data(),
        version=st.none() | st.integers(1, 4),
    )
    def get(self, data: st.DataObject, version: int | None) -> None:
        ns, key = self.pick(data)
        got = self.run(self.db.memory.get_memory(ns, key, version))
        versions = self.model.get((ns, key), [])
        if version is None:
            if not self.live(ns, key):
                assert got is None
                return
            version = len(versions)
        if version > len(versions):
            assert got is None
            return
        expected = versions[version - 1]
        assert got is not None
        assert (got["version"], got["value"], got["memory_type"], got["is_deleted"]) == (
            version,
            expected["value"],
            expected["memory_type"],
            expected["deleted"],
        )

    @rule(data=st.data())
    def history(self, data: st.DataObject) -> None:
        ns, key = self.pick(data)
        got = self.run(self.db.memory.get_memory_history(ns, key))
        expected = self.model.get((ns, key), [])
        assert [(h["version"], h["value"], h["is_deleted"]) for h in got] == [
            (i, v["value"], v["deleted"]) for i, v in enumerate(expected, 1)
        ]

    @rule(root=st.sampled_from(ROOTS), memory_type=st.none() | TYPES)
    def search(self, root: str, memory_type: str | None) -> None:
        self.check_search(root, memory_type)

    def check_search(self, root: str, memory_type: str | None) -> None:
        got = self.run(self.db.memory.search_memories(root, memory_type, limit=1000))
        expected = sorted(
            (ns, key, len(versions), False)
            for (ns, key), versions in self.model.items()
            if in_subtree(ns, root)
            and not versions[-1]["deleted"]
            and memory_type in (None, versions[-1]["memory_type"])
        )
        found = sorted((r["namespace"], r["key"], r["version"], r["is_deleted"]) for r in got)
        assert found == expected, root
        stamps = [r["updated_at"] for r in got]
        assert stamps == sorted(stamps, reverse=True)

    # ------------------------------------------------------------ invariants

    @invariant()
    def database_equals_model(self) -> None:
        async def snapshot() -> tuple[list[Any], list[Any]]:
            async with self.db.transaction(write=False) as session:
                rows = (
                    await session.execute(
                        select(
                            MemoryEntry.namespace,
                            MemoryEntry.key,
                            MemoryEntry.version,
                            MemoryEntry.is_deleted,
                            MemoryEntry.value,
                            MemoryEntry.memory_type,
                        )
                    )
                ).all()
                audit = (
                    await session.execute(
                        select(
                            AuditEntry.memory_operation_type,
                            AuditEntry.memory_namespace,
                            AuditEntry.action_data,
                            AuditEntry.memory_entry_id,
                        )
                    )
                ).all()
            return list(rows), list(audit)

        rows, audit = self.run(snapshot())
        # Reads agree, versions of every key are exactly 1..n, nothing is lost.
        assert sorted((r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows) == sorted(
            (ns, key, i, v["deleted"], v["value"], v["memory_type"])
            for (ns, key), versions in self.model.items()
            for i, v in enumerate(versions, 1)
        )
        assert len(rows) >= self.rows_seen
        self.rows_seen = len(rows)
        # Every write has exactly one audit row, naming its row.
        assert sorted(
            (op, ns, data["key"], data["version"]) for op, ns, data, entry_id in audit
        ) == sorted(self.writes)
        assert all(entry_id is not None for *_, entry_id in audit)

    @invariant()
    def search_returns_the_live_keys_of_each_subtree(self) -> None:
        for root in ("user", "user:a", "session"):
            self.check_search(root, None)


SETTINGS = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_memory_service_matches_the_model(backend: str) -> None:
    machine = type(f"MemoryMachine_{backend}", (MemoryMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=SETTINGS)
