"""The warm unfiltered query search on PostgreSQL (issue 16): two one-statement
units awaited without a greenlet (the subtree's live ids, then the rows of the
best-ranked ids), the same answers as the whole unit in one transaction, which
runs instead whenever the kept vectors do not serve or a ranked version was
deleted between the two statements."""

from __future__ import annotations

from typing import Any

import pytest
from greenlet import getcurrent
from sqlalchemy import event

from abathur.embeddings import HashingEmbedder
from abathur.infrastructure import memory_service
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService


def _whole_unit(memory: MemoryService) -> None:
    async def cold(*_: Any) -> None:
        return None

    memory._warm_query_search = cold  # type: ignore[method-assign]


async def _filled(db: Database, task_id: str) -> MemoryService:
    memory = MemoryService(db, embedder=HashingEmbedder(dims=32))
    for i in range(12):
        await memory.add_memory(
            f"user:u:n{i % 3}", f"k{i}", {"text": f"note {i} about {'tea' if i % 2 else 'code'}"},
            "semantic" if i % 4 else "episodic", "me", task_id,
        )  # fmt: skip
    return memory


@pytest.fixture
def postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's native units")


SEARCHES: list[dict[str, Any]] = [
    {"query": "code note"},
    {"query": "tea", "limit": 3, "offset": 2},
    {"query": "note", "memory_type": "episodic"},
    {"query": "tea", "offset": 50},
]


@pytest.mark.usefixtures("postgres_only")
async def test_warm_searches_are_those_of_the_whole_unit(db: Database, task_id: str) -> None:
    memory = await _filled(db, task_id)
    plain = MemoryService(db, embedder=HashingEmbedder(dims=32))
    _whole_unit(plain)
    for search in SEARCHES:
        for root in ("user:u", "user:u:n1", "user:nobody"):
            for _ in range(2):  # cold, then warm
                assert await memory.search_memories(root, **search) == (
                    await plain.search_memories(root, **search)
                )


@pytest.mark.usefixtures("postgres_only")
async def test_a_warm_search_sends_two_statements_outside_any_greenlet(
    db: Database, task_id: str
) -> None:
    memory = await _filled(db, task_id)
    await memory.search_memories("user:u", query="code")  # cold: the whole unit
    sent: list[tuple[str, bool]] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append((statement, getcurrent().parent is not None))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        found = await memory.search_memories("user:u", query="code")
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len(found) == 12
    assert len(sent) == 2, sent
    assert "array_agg" in sent[0][0] and "= ANY" in sent[1][0]
    assert not any(in_greenlet for _, in_greenlet in sent)


@pytest.mark.usefixtures("postgres_only")
async def test_a_version_deleted_between_the_two_statements_takes_the_whole_unit(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows of the ranked ids come from a later snapshot than the ids: a
    version deleted in between (``is_deleted`` set, or the row gone) is not
    returned as it is now; the whole unit answers instead."""
    memory = await _filled(db, task_id)
    expected = await memory.search_memories("user:u", query="code", limit=4)
    original = memory_service.versions_statement

    for change in ("deleted", "gone"):

        def raced(ids: Any, then: Any, change: str = change) -> Any:
            def changed(rows: dict[int, Any]) -> Any:
                first = min(rows)
                if change == "deleted":
                    rows[first] = rows[first]._replace(is_deleted=True)
                else:
                    del rows[first]
                return then(rows)

            return original(ids, changed)

        monkeypatch.setattr(memory_service, "versions_statement", raced)
        assert await memory.search_memories("user:u", query="code", limit=4) == expected
    assert not any(r["is_deleted"] for r in expected)
