"""Inputs at and past the limits the backends impose: refused with abathur's
own errors, alike on SQLite and PostgreSQL, and nothing is stored.

Each case was found by review: before, SQLite stored or ignored what
PostgreSQL refused with a driver error (or the reverse), or a Python error
escaped (OverflowError, UnicodeEncodeError, NotImplementedError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from abathur.domain.namespaces import MAX_KEY_BYTES, MAX_NAMESPACE_BYTES
from abathur.errors import NotFoundError, ValidationError
from abathur.infrastructure.database import Database

WIDE = "\U0001f600"  # four bytes in UTF-8
Call = Callable[[Database, str], Awaitable[Any]]
REFUSED: list[tuple[str, type[Exception], Call]] = [
    ("namespace of 4-byte characters past the limit", ValidationError,
     lambda db, t: db.memory.add_memory("user:" + WIDE * 300, "k", {}, "semantic", "a", t)),
    ("key of 4-byte characters past the limit", ValidationError,
     lambda db, t: db.memory.add_memory("user:a", WIDE * 300, {}, "semantic", "a", t)),
    ("namespace with a lone surrogate", ValidationError,
     lambda db, t: db.memory.add_memory("user:\ud800", "k", {}, "semantic", "a", t)),
    ("key with a lone surrogate", ValidationError,
     lambda db, t: db.memory.add_memory("user:a", "\ud800", {}, "semantic", "a", t)),
    ("version past INTEGER", ValidationError,
     lambda db, t: db.memory.get_memory("user:a", "k", version=2**31)),
    ("restore of a version past INTEGER", ValidationError,
     lambda db, t: db.memory.restore_memory("user:a", "k", 2**63, "a", t)),
    ("expiry before the year 1", ValidationError,
     lambda db, t: db.memory.expire_episodic(timedelta(days=999_999_999))),
    ("expiry with a task id not a string", ValidationError,
     lambda db, t: db.memory.expire_episodic(timedelta(days=1), task_id=5)),  # type: ignore[arg-type]
    ("seeding with an empty task id", ValidationError,
     lambda db, t: db.memory.seed_defaults(task_id="")),
    ("checkpoint iteration not an integer", ValidationError,
     lambda db, t: db.tasks.save_checkpoint(t, 1.5, {})),  # type: ignore[arg-type]
    ("checkpoint of a missing session", NotFoundError,
     lambda db, t: db.tasks.save_checkpoint(t, 1, {}, session_id="nope")),
    ("checkpoint of a missing task", NotFoundError,
     lambda db, t: db.tasks.save_checkpoint("nope", 1, {})),
    ("audit row naming a missing agent", NotFoundError,
     lambda db, t: db.tasks.record_audit(t, "x", agent_id="nope")),
    ("audit row naming a missing memory entry", NotFoundError,
     lambda db, t: db.tasks.record_audit(t, "x", memory_entry_id=999_999)),
    ("negative audit limit", ValidationError, lambda db, t: db.tasks.audit_tail(limit=-1)),
    ("zero audit limit for a task", ValidationError,
     lambda db, t: db.tasks.audit_for_task(t, limit=0)),
    ("task id not a string", ValidationError, lambda db, t: db.tasks.get_task(123)),  # type: ignore[arg-type]
]  # fmt: skip


async def _counts(db: Database) -> dict[str, int]:
    async with db.transaction(write=False) as session:
        return {
            table: int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("memory_entries", "audit", "checkpoints", "tasks")
        }


@pytest.mark.parametrize(("name", "error", "call"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_refused_alike_on_both_backends(
    db: Database, task_id: str, name: str, error: type[Exception], call: Call
) -> None:
    await db.memory.add_memory("user:a", "k", {"v": 1}, "episodic", "a", task_id)
    before = await _counts(db)
    with pytest.raises(error):
        await call(db, task_id)
    assert await _counts(db) == before


async def test_the_longest_namespace_and_key_are_stored(db: Database, task_id: str) -> None:
    """At the limits exactly, with 4-byte characters, both backends store and
    find the entry (PostgreSQL's unique index entry has room for both)."""
    namespace = "user:" + WIDE * ((MAX_NAMESPACE_BYTES - 5) // 4)
    key = WIDE * (MAX_KEY_BYTES // 4)
    await db.memory.add_memory(namespace, key, {"v": 1}, "semantic", "a", task_id)
    got = await db.memory.get_memory(namespace, key)
    assert got is not None and got["key"] == key


@pytest.mark.parametrize("pattern", ["../b/*.md", "/etc/*.md", "a/../../*.md", ""])
async def test_a_sync_pattern_may_not_leave_its_directory(
    db: Database, tmp_path: Path, pattern: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.md").write_text("# x")
    with pytest.raises(ValidationError, match="pattern"):
        await db.documents.sync_directory(tmp_path / "a", pattern)
    assert await db.documents.list_documents(tmp_path) == []


@pytest.mark.parametrize("pattern", [".", "./", "./.", ".//"])
async def test_a_sync_pattern_that_names_no_file_is_refused(
    db: Database, tmp_path: Path, pattern: str
) -> None:
    """Before: pathlib's glob of a pattern with no part left once ``.`` is
    dropped raised IndexError (``.``) or AttributeError (``./``) out of
    ``sync_directory`` on Python 3.11."""
    (tmp_path / "x.md").write_text("# x")
    with pytest.raises(ValidationError, match="pattern"):
        await db.documents.sync_directory(tmp_path, pattern)
    assert await db.documents.list_documents(tmp_path) == []


async def test_concurrent_syncs_of_one_directory_all_succeed(db: Database, tmp_path: Path) -> None:
    """On PostgreSQL syncs run side by side and insert the same new files; the
    loser of each race runs its batch again instead of failing."""
    for i in range(300):
        (tmp_path / f"f{i:04}.md").write_text(f"# {i}")
    results = await asyncio.gather(
        *(db.documents.sync_directory(tmp_path, batch_size=50) for _ in range(4))
    )
    assert sum(r.added for r in results) == 300
    assert all(r.added + r.changed + r.unchanged == 300 for r in results)
    assert len(await db.documents.list_documents(tmp_path)) == 300
