"""MemoryService against a plain-Python model, under random operation sequences.

Each example gets a fresh database (a private in-memory SQLite, or a new
PostgreSQL schema) driven through a private event loop, so hypothesis runs the
state machine synchronously. After every step the whole table, the expiry
table and the audit log are compared with the model, and so are filtered and
paged searches and list_namespaces. Time is a clock the machine moves
(``tick``), so TTLs expire when the model says.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.schema.models import AuditEntry, MemoryEntry, MemoryExpiry
from tests.conftest import PG_URL, pg_schema
from tests.support.memory_model import Clock, list_namespaces, matches

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
TTLS = st.none() | st.sampled_from([5, 10, 30]).map(lambda s: timedelta(seconds=s))
FILTERS = st.dictionaries(
    st.sampled_from(["a", "b", "a.x", "c.y"]),
    st.one_of(
        LEAF,
        st.fixed_dictionaries({"$ne": LEAF}),
        st.fixed_dictionaries({"$in": st.lists(LEAF, max_size=2)}),
        st.dictionaries(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), LEAF, min_size=1),
    ),
    max_size=2,
)
FIXED_FILTERS: list[dict[str, Any]] = [{"a": 1}, {"a": {"$gte": 2}}, {"a.x": {"$ne": 0}}]


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
            self.schema = pg_schema(migrated=True)
            name = self.run(self.schema.__aenter__())
            self.db = Database(PG_URL, connect_args={"server_settings": {"search_path": name}})
        self.clock = Clock()
        self.patch = pytest.MonkeyPatch()
        self.patch.setattr("abathur.domain.clock.utcnow", self.clock)
        self.run(self.db.initialize())
        self.task_id = self.run(self.db.tasks.create_task("state machine")).id
        # (namespace, key) -> versions, each {"value", "memory_type", "deleted"}
        self.model: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # (namespace, key) -> (expires_at, ttl) for keys written with a TTL
        self.expiry: dict[tuple[str, str], tuple[datetime, timedelta]] = {}
        self.writes: list[tuple[str, str, str, int]] = []  # (operation, ns, key, version)
        self.rows_seen = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.patch.undo()
        try:
            self.run(self.db.close())
            if self.schema is not None:
                self.run(self.schema.__aexit__(None, None, None))
        finally:
            self.loop.close()

    # ------------------------------------------------------------ model helpers

    def expired(self, ns: str, key: str) -> bool:
        found = self.expiry.get((ns, key))
        return found is not None and found[0] <= self.clock.now

    def live(self, ns: str, key: str) -> bool:
        versions = self.model.get((ns, key), [])
        return bool(versions) and not versions[-1]["deleted"] and not self.expired(ns, key)

    def settle_expired(self, ns: str, key: str) -> None:
        """What a successful write finds first: an expired key's rows are
        soft-deleted and its expiry dropped (no audit row of their own)."""
        if self.expired(ns, key):
            for v in self.model[(ns, key)]:
                v["deleted"] = True
            del self.expiry[(ns, key)]

    def set_ttl(self, ns: str, key: str, ttl: timedelta | None) -> None:
        if ttl is None:
            self.expiry.pop((ns, key), None)
        else:
            self.expiry[(ns, key)] = (self.clock.now + ttl, ttl)

    def live_keys(self) -> list[tuple[str, str]]:
        return [k for k in self.model if self.live(*k)]

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
        ttl=TTLS,
    )
    def add(
        self, ns: str, key: str, value: dict[str, Any], memory_type: str, ttl: timedelta | None
    ) -> None:
        memory = self.db.memory
        if self.live(ns, key):
            with pytest.raises(AlreadyExistsError):
                self.run(memory.add_memory(ns, key, value, memory_type, "m", self.task_id, ttl=ttl))
            return
        self.run(memory.add_memory(ns, key, value, memory_type, "m", self.task_id, ttl=ttl))
        self.settle_expired(ns, key)
        self.writes.append(("create", ns, key, self.append(ns, key, value, memory_type)))
        self.set_ttl(ns, key, ttl)

    @rule(data=st.data(), value=VALUES, ttl=TTLS)
    def update(self, data: st.DataObject, value: dict[str, Any], ttl: timedelta | None) -> None:
        ns, key = self.pick(data)
        memory = self.db.memory
        if not self.live(ns, key):
            with pytest.raises(NotFoundError):
                self.run(memory.update_memory(ns, key, value, "m", self.task_id, ttl=ttl))
            return
        self.run(memory.update_memory(ns, key, value, "m", self.task_id, ttl=ttl))
        memory_type = self.model[(ns, key)][-1]["memory_type"]
        self.writes.append(("update", ns, key, self.append(ns, key, value, memory_type)))
        self.set_ttl(ns, key, ttl)

    @rule(data=st.data(), value=VALUES, memory_type=TYPES, ttl=TTLS)
    def put(
        self, data: st.DataObject, value: dict[str, Any], memory_type: str, ttl: timedelta | None
    ) -> None:
        ns, key = self.pick(data)
        written = self.run(
            self.db.memory.put_memory(
                ns, key, value, memory_type, by="m", task_id=self.task_id, ttl=ttl
            )
        )
        if self.live(ns, key):
            memory_type = self.model[(ns, key)][-1]["memory_type"]
            operation = "update"
        else:
            self.settle_expired(ns, key)
            operation = "create"
        version = self.append(ns, key, value, memory_type)
        self.writes.append((operation, ns, key, version))
        self.set_ttl(ns, key, ttl)
        assert (written["version"], written["value"], written["memory_type"]) == (
            version,
            value,
            memory_type,
        )
        assert written == self.run(self.db.memory.get_memory(ns, key))

    @precondition(lambda self: bool(self.expiry))
    @rule(data=st.data())
    def refresh(self, data: st.DataObject) -> None:
        """get_memory(refresh_ttl=True) on a key written with a TTL."""
        ns, key = data.draw(st.sampled_from(sorted(self.expiry)))
        got = self.run(self.db.memory.get_memory(ns, key, refresh_ttl=True))
        if not self.live(ns, key):
            assert got is None
            return
        assert got is not None and got["version"] == len(self.model[(ns, key)])
        self.set_ttl(ns, key, self.expiry[(ns, key)][1])

    @rule(seconds=st.sampled_from([1, 5, 10, 30]))
    def tick(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @rule()
    def sweep(self) -> None:
        got = self.run(self.db.memory.sweep_expired(task_id=self.task_id))
        expected = 0
        for ns, key in sorted(self.expiry):
            if not self.expired(ns, key):
                continue
            versions = self.model[(ns, key)]
            if not versions[-1]["deleted"]:
                for v in versions:
                    v["deleted"] = True
                self.writes.append(("delete", ns, key, len(versions)))
                expected += 1
            del self.expiry[(ns, key)]
        assert got == expected

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
        self.expiry.pop((ns, key), None)

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
        self.settle_expired(ns, key)  # restore keeps a live key's expiry as it is
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
            if self.expired(ns, key):
                self.settle_expired(ns, key)  # nothing left to consolidate
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
        refresh=st.booleans(),
    )
    def get(self, data: st.DataObject, version: int | None, refresh: bool) -> None:
        ns, key = self.pick(data)
        got = self.run(self.db.memory.get_memory(ns, key, version, refresh_ttl=refresh))
        versions = self.model.get((ns, key), [])
        if version is None:
            if not self.live(ns, key):
                assert got is None
                return
            if refresh and (ns, key) in self.expiry:
                self.set_ttl(ns, key, self.expiry[(ns, key)][1])
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

    @rule(
        root=st.sampled_from(ROOTS),
        memory_type=st.none() | TYPES,
        filter=st.none() | FILTERS,
        page=st.integers(1, 4),
        refresh=st.booleans(),
    )
    def search(
        self,
        root: str,
        memory_type: str | None,
        filter: dict[str, Any] | None,
        page: int,
        refresh: bool,
    ) -> None:
        whole = self.check_search(root, memory_type, filter)
        self.check_pages(root, memory_type, filter, page, whole)
        if refresh:
            got = self.run(
                self.db.memory.search_memories(
                    root, memory_type, 1000, filter=filter, refresh_ttl=True
                )
            )
            assert [r["id"] for r in got] == [r["id"] for r in whole]
            for r in got:
                if (r["namespace"], r["key"]) in self.expiry:
                    ttl = self.expiry[(r["namespace"], r["key"])][1]
                    self.set_ttl(r["namespace"], r["key"], ttl)

    def check_search(
        self, root: str, memory_type: str | None, filter: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        got = self.run(self.db.memory.search_memories(root, memory_type, 1000, filter=filter))
        expected = sorted(
            (ns, key, len(versions), False)
            for (ns, key), versions in self.model.items()
            if in_subtree(ns, root)
            and self.live(ns, key)
            and memory_type in (None, versions[-1]["memory_type"])
            and matches(versions[-1]["value"], filter)
        )
        found = sorted((r["namespace"], r["key"], r["version"], r["is_deleted"]) for r in got)
        assert found == expected, (root, filter)
        order = [(r["updated_at"], r["id"]) for r in got]
        assert order == sorted(order, reverse=True)
        return list(got)

    def check_pages(
        self,
        root: str,
        memory_type: str | None,
        filter: dict[str, Any] | None,
        size: int,
        whole: list[dict[str, Any]],
    ) -> None:
        pages: list[dict[str, Any]] = []
        for offset in range(0, len(whole) + size, size):
            pages += self.run(
                self.db.memory.search_memories(
                    root, memory_type, size, filter=filter, offset=offset
                )
            )
        assert [r["id"] for r in pages] == [r["id"] for r in whole]

    @rule(
        prefix=st.none() | st.sampled_from(ROOTS),
        suffix=st.none() | st.sampled_from(["a", "b", "x", "a:b", "a_:x"]),
        max_depth=st.none() | st.integers(1, 3),
        limit=st.integers(1, 4),
        offset=st.integers(0, 3),
    )
    def namespaces(
        self,
        prefix: str | None,
        suffix: str | None,
        max_depth: int | None,
        limit: int,
        offset: int,
    ) -> None:
        got = self.run(
            self.db.memory.list_namespaces(
                prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
            )
        )
        live = [ns for ns, _ in self.live_keys()]
        assert got == list_namespaces(live, prefix, suffix, max_depth, limit, offset)

    # ------------------------------------------------------------ invariants

    @invariant()
    def database_equals_model(self) -> None:
        async def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
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
                expiry = (
                    await session.execute(
                        select(MemoryExpiry.namespace, MemoryExpiry.key, MemoryExpiry.expires_at)
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
            return list(rows), list(audit), list(expiry)

        rows, audit, expiry = self.run(snapshot())
        assert sorted(tuple(e) for e in expiry) == sorted(
            (ns, key, at) for (ns, key), (at, _ttl) in self.expiry.items()
        )
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

    @invariant()
    def filtered_and_paged_search_equal_the_model(self) -> None:
        for filter in FIXED_FILTERS:
            whole = self.check_search("user", None, filter)
            self.check_pages("user", None, filter, 2, whole)
        self.check_pages("user", None, None, 3, self.check_search("user", None))

    @invariant()
    def list_namespaces_equals_the_model(self) -> None:
        live = [ns for ns, _ in self.live_keys()]
        assert self.run(self.db.memory.list_namespaces(limit=1000)) == list_namespaces(
            live, limit=1000
        )
        assert self.run(self.db.memory.list_namespaces("user", max_depth=2)) == list_namespaces(
            live, "user", max_depth=2
        )


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_memory_service_matches_the_model(backend: str) -> None:
    machine = type(f"MemoryMachine_{backend}", (MemoryMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=SETTINGS)
