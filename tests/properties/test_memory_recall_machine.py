"""The memory state machine with an embedder: every rule of ``MemoryMachine``
(add, update, delete, restore, consolidate, reads) now also stores embeddings,
and query searches must equal the model's ranking over its live versions
(issue 12). The embedder counts characters of the canonical JSON text, so
every score is exact and the model computes it independently.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from abathur.embeddings import Embedder
from tests.properties.test_memory_state_machine import (
    ROOTS,
    SETTINGS,
    TYPES,
    MemoryMachine,
    in_subtree,
)

COUNTED = "abcxy0123{"
QUERIES = st.text(alphabet="abcxy0123{} ", min_size=1, max_size=6).filter(
    lambda q: any(c in COUNTED for c in q)
)


def char_counts(text: str) -> list[int]:
    return [text.count(c) for c in COUNTED]


def embed(texts: list[str]) -> list[list[int]]:
    return [char_counts(t) for t in texts]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cosine(a: list[int], b: list[int]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


class RecallMachine(MemoryMachine):
    def __init__(self) -> None:
        super().__init__()
        self.db.embedder = Embedder(embed, len(COUNTED), model="char-counts")
        self.db.__dict__.pop("memory", None)  # rebuilt with the embedder on first use

    @rule(root=st.sampled_from(ROOTS), memory_type=st.none() | TYPES, query=QUERIES)
    def query_search(self, root: str, memory_type: str | None, query: str) -> None:
        self.check_query_search(root, memory_type, query)

    def check_query_search(self, root: str, memory_type: str | None, query: str) -> None:
        memory = self.db.memory
        got = self.run(memory.search_memories(root, memory_type, limit=1000, query=query))
        q = char_counts(query)
        expected = sorted(
            (ns, key, len(versions), cosine(char_counts(canonical(versions[-1]["value"])), q))
            for (ns, key), versions in self.model.items()
            if in_subtree(ns, root)
            and self.live(ns, key)
            and memory_type in (None, versions[-1]["memory_type"])
        )
        assert sorted((r["namespace"], r["key"], r["version"], r["score"]) for r in got) == expected
        order = [(-r["score"], -r["id"]) for r in got]
        assert order == sorted(order)  # best first, equal scores newest row first
        for limit in (1, 3):
            limited = self.run(memory.search_memories(root, memory_type, limit, query=query))
            assert limited == got[:limit]
        paged = self.run(memory.search_memories(root, memory_type, 2, query=query, offset=1))
        assert paged == got[1:3]

    @invariant()
    def query_search_ranks_the_live_versions(self) -> None:
        self.check_query_search("user", None, "ab{")


def test_query_search_matches_the_model(backend: str) -> None:
    machine = type(f"RecallMachine_{backend}", (RecallMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=SETTINGS)
