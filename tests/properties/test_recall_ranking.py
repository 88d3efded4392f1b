"""A query search ranks exactly as brute force does (issue 12), on both backends.

Generated memories carry their own vector (small integers, so that every
product and sum is exact and equal scores are truly equal): the embedder
reads it back out of the value's JSON text. Many share a vector, so ties are
common. The reference ranks the model's current live versions one by one in
plain Python: ``dot / (sqrt(|v|^2) * sqrt(|q|^2))``, best first, ties by row
id descending, after the memory type filter, cut at ``limit``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abathur.embeddings import Embedder
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from tests.conftest import PG_URL, pg_schema

T = TypeVar("T")
DIMS = 4
COMPONENT = st.integers(-3, 3)
VECTOR = st.lists(COMPONENT, min_size=DIMS, max_size=DIMS).filter(any)
TYPES = ["semantic", "episodic"]


def embed(texts: list[str]) -> list[list[int]]:
    """A memory value ``{"v": [...], ...}`` or a query ``[...]``: its own vector."""
    out = []
    for text in texts:
        parsed = json.loads(text)
        out.append(parsed["v"] if isinstance(parsed, dict) else parsed)
    return out


def reference(
    live: dict[int, tuple[str, list[int]]], query: list[int], memory_type: str | None, limit: int
) -> list[tuple[int, float]]:
    q_norm = math.sqrt(sum(x * x for x in query))
    scored = []
    for row_id, (kind, vector) in live.items():
        if memory_type is not None and kind != memory_type:
            continue
        dot = sum(a * b for a, b in zip(vector, query, strict=True))
        scored.append((row_id, dot / (math.sqrt(sum(x * x for x in vector)) * q_norm)))
    scored.sort(key=lambda item: (-item[1], -item[0]))
    return scored[:limit]


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "write", "delete"]),
        st.integers(0, 7),  # key
        st.sampled_from(["a", "a:b", "c"]),  # sub-namespace
        st.sampled_from(TYPES),
        st.integers(0, 5),  # which of a few shared vectors (ties) ...
        VECTOR,  # ... or this one
    ),
    min_size=1,
    max_size=25,
)


class Harness:
    """One database for every example, driven through a private event loop;
    each example writes below a root of its own."""

    def __init__(self, backend: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.schema: AbstractAsyncContextManager[str] | None = None
        if backend == "sqlite":
            self.db = Database(Path(":memory:"))
        else:
            self.schema = pg_schema(migrated=True)
            name = self.run(self.schema.__aenter__())
            self.db = Database(PG_URL, connect_args={"server_settings": {"search_path": name}})
        self.run(self.db.initialize())
        self.task_id = self.run(self.db.tasks.create_task("ranking")).id
        self.memory = MemoryService(self.db, embedder=Embedder(embed, DIMS, model="own-vector"))
        self.examples = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        try:
            self.run(self.db.close())
            if self.schema is not None:
                self.run(self.schema.__aexit__(None, None, None))
        finally:
            self.loop.close()


def test_query_search_equals_brute_force_ranking(backend: str) -> None:
    harness = Harness(backend)
    shared = [[1, 0, 0, 0], [1, 1, 0, 0], [2, 2, 0, 0], [0, 0, 1, -1], [-1, 0, 0, 0]]
    try:

        @settings(
            max_examples=100 if backend == "sqlite" else 40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            operations=OPERATIONS,
            query=VECTOR,
            memory_type=st.none() | st.sampled_from(TYPES),
            limit=st.integers(1, 12),
            sub_root=st.sampled_from(["", ":a", ":c"]),
        )
        def check(
            operations: list[tuple[str, int, str, str, int, list[int]]],
            query: list[int],
            memory_type: str | None,
            limit: int,
            sub_root: str,
        ) -> None:
            harness.examples += 1
            root = f"user:ex{harness.examples}"
            memory, task = harness.memory, harness.task_id
            live: dict[tuple[str, str], tuple[int, str, list[int]]] = {}
            for op, key_number, sub, kind, pick, own in operations:
                ns, key = f"{root}:{sub}", f"k{key_number}"
                vector = shared[pick] if pick < len(shared) else own
                value = {"v": vector, "n": key_number}
                if op == "delete":
                    if (ns, key) in live:
                        harness.run(memory.delete_memory(ns, key, "me", task))
                        del live[(ns, key)]
                    continue
                if (ns, key) in live:
                    row_id = harness.run(memory.update_memory(ns, key, value, "me", task))
                    kind = live[(ns, key)][1]  # the type carries forward
                else:
                    row_id = harness.run(memory.add_memory(ns, key, value, kind, "me", task))
                live[(ns, key)] = (row_id, kind, vector)
            search_root = root + sub_root
            in_scope = {
                row_id: (kind, vector)
                for (ns, _), (row_id, kind, vector) in live.items()
                if ns == search_root or ns.startswith(search_root + ":")
            }
            got = harness.run(
                memory.search_memories(search_root, memory_type, limit, query=json.dumps(query))
            )
            assert [(r["id"], r["score"]) for r in got] == reference(
                in_scope, query, memory_type, limit
            )

        check()
    finally:
        harness.close()
