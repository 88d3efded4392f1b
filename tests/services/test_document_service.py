"""DocumentIndexService: directory sync against a temporary directory, on both backends.

Tests run as root, where ``chmod 000`` does not stop a read; an unreadable
file is simulated by a dangling symlink and by a directory whose name matches
the pattern, both of which make the read fail with an OSError.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from abathur.domain.documents import DocumentRecord, SyncResult
from abathur.errors import ConflictError, NotFoundError
from abathur.infrastructure.database import Database
from abathur.infrastructure.document_scan import describe, parse_front_matter
from abathur.infrastructure.document_service import DocumentIndexService
from abathur.repositories.documents import DocumentIndexRepository


@pytest.fixture
def docs(db: Database) -> DocumentIndexService:
    return DocumentIndexService(db)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "guide").mkdir(parents=True)
    (root / "intro.md").write_text("# Introduction\n\nHello.\n")
    (root / "guide" / "setup.md").write_text(
        "---\ntitle: 'Setting up'\ntype: guide\n---\n# Not this heading\n"
    )
    (root / "plain.md").write_text("no heading here\n")
    (root / "notes.txt").write_text("# not markdown\n")
    return root.resolve()


async def by_path(docs: DocumentIndexService, root: Path) -> dict[str, DocumentRecord]:
    return {Path(d.file_path).relative_to(root).as_posix(): d
            for d in await docs.list_documents(root)}  # fmt: skip


async def test_new_files_are_pending_with_hash_title_and_type(
    docs: DocumentIndexService, tree: Path
) -> None:
    result = await docs.sync_directory(tree)
    assert (result.added, result.changed, result.unchanged, result.missing) == (3, 0, 0, 0)
    assert result.problems == []
    rows = await by_path(docs, tree)
    assert set(rows) == {"intro.md", "guide/setup.md", "plain.md"}
    intro = rows["intro.md"]
    assert intro.file_path == (tree / "intro.md").as_posix()
    assert intro.content_hash == hashlib.sha256((tree / "intro.md").read_bytes()).hexdigest()
    assert intro.title == "Introduction"
    assert intro.document_type is None
    assert intro.sync_status == "pending"
    assert (rows["guide/setup.md"].title, rows["guide/setup.md"].document_type) == (
        "Setting up",
        "guide",
    )
    assert rows["plain.md"].title == "plain"


async def test_pattern_selects_files(docs: DocumentIndexService, tree: Path) -> None:
    result = await docs.sync_directory(tree, pattern="*.txt")
    assert result.added_files == [(tree / "notes.txt").as_posix()]


async def test_unchanged_files_are_not_written(docs: DocumentIndexService, tree: Path) -> None:
    await docs.sync_directory(tree)
    before = await by_path(docs, tree)
    result = await docs.sync_directory(tree)
    assert (result.added, result.changed, result.unchanged, result.missing) == (0, 0, 3, 0)
    assert await by_path(docs, tree) == before  # updated_at included


async def test_changed_file_becomes_stale_with_new_hash_and_title(
    docs: DocumentIndexService, tree: Path
) -> None:
    await docs.sync_directory(tree)
    before = (await by_path(docs, tree))["intro.md"]
    (tree / "intro.md").write_text("# Welcome\n\nChanged.\n")
    result = await docs.sync_directory(tree)
    assert (result.added, result.changed, result.unchanged) == (0, 1, 2)
    assert result.changed_files == [before.file_path]
    after = (await by_path(docs, tree))["intro.md"]
    assert after.id == before.id
    assert after.sync_status == "stale"
    assert after.title == "Welcome"
    assert after.content_hash != before.content_hash
    assert after.updated_at >= before.updated_at
    assert after.created_at == before.created_at


async def test_vanished_file_is_marked_missing_never_deleted(
    docs: DocumentIndexService, tree: Path
) -> None:
    await docs.sync_directory(tree)
    (tree / "plain.md").unlink()
    result = await docs.sync_directory(tree)
    assert result.missing == 1
    assert result.missing_files == [(tree / "plain.md").as_posix()]
    row = (await by_path(docs, tree))["plain.md"]
    assert row.sync_status == "stale"
    assert row.metadata == {"missing": True}
    assert row.is_missing
    assert row.file_path not in {d.file_path for d in await docs.pending_documents(10)}

    again = await docs.sync_directory(tree)  # still reported, row not rewritten
    assert again.missing_files == result.missing_files
    assert (await by_path(docs, tree))["plain.md"] == row

    (tree / "plain.md").write_text("no heading here\n")
    back = await docs.sync_directory(tree)
    assert (back.changed, back.missing) == (1, 0)
    row = (await by_path(docs, tree))["plain.md"]
    assert (row.sync_status, row.metadata) == ("stale", {})


async def test_files_outside_the_pattern_or_directory_are_not_missing(
    docs: DocumentIndexService, tree: Path, tmp_path: Path
) -> None:
    await docs.sync_directory(tree)
    other = tmp_path / "docs2"  # shares the name prefix "docs"
    other.mkdir()
    (other / "x.md").write_text("# X\n")
    assert (await docs.sync_directory(other)).missing == 0
    result = await docs.sync_directory(tree, pattern="*.md")  # guide/setup.md not matched
    assert (result.unchanged, result.missing) == (2, 0)
    assert len(await docs.list_documents(other)) == 1


async def test_unreadable_and_non_utf8_files_are_reported_not_fatal(
    docs: DocumentIndexService, tree: Path
) -> None:
    (tree / "dangling.md").symlink_to(tree / "nowhere")
    (tree / "folder.md").mkdir()
    (tree / "latin1.md").write_bytes("# Caf\xe9\n".encode("latin-1"))
    result = await docs.sync_directory(tree)
    assert result.added == 3
    reasons = {Path(p.file_path).name: p.reason for p in result.problems}
    assert set(reasons) == {"dangling.md", "folder.md", "latin1.md"}
    assert reasons["latin1.md"].startswith("not valid UTF-8")
    assert reasons["folder.md"].startswith("unreadable")
    assert reasons["dangling.md"].startswith("unreadable")
    assert set(await by_path(docs, tree)) == {"intro.md", "guide/setup.md", "plain.md"}


async def _sync_unless_it_blocks(
    docs: DocumentIndexService, root: Path, fifo: Path | None = None, **kw: Any
) -> SyncResult:
    """``sync_directory``, failing instead of hanging the suite if it blocks
    on ``fifo``: the blocked reader is then released by a writer that opens
    and closes the FIFO."""
    try:
        return await asyncio.wait_for(docs.sync_directory(root, **kw), timeout=60)
    except TimeoutError:
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("sync_directory blocked on a special file")


async def test_a_fifo_matching_the_pattern_is_a_problem_not_a_hang(
    docs: DocumentIndexService, tree: Path
) -> None:
    fifo = tree / "pipe.md"
    os.mkfifo(fifo)
    result = await _sync_unless_it_blocks(docs, tree, fifo)
    assert result.added == 3
    assert [(Path(p.file_path).name, p.reason) for p in result.problems] == [
        ("pipe.md", "unreadable: not a regular file (a FIFO)")
    ]
    assert "pipe.md" not in await by_path(docs, tree)


async def test_a_symlink_to_a_device_is_never_read(docs: DocumentIndexService, tree: Path) -> None:
    """Before, a link to /dev/zero read until MemoryError."""
    (tree / "zero.md").symlink_to("/dev/zero")
    result = await docs.sync_directory(tree)
    reasons = {Path(p.file_path).name: p.reason for p in result.problems}
    assert reasons["zero.md"].startswith("skipped: symlink to /dev/zero, outside the synced")
    # Asked to follow links outside, it still reads regular files only.
    followed = await docs.sync_directory(tree, follow_external_symlinks=True)
    reasons = {Path(p.file_path).name: p.reason for p in followed.problems}
    assert reasons == {"zero.md": "unreadable: not a regular file (a character device)"}
    assert set(await by_path(docs, tree)) == {"intro.md", "guide/setup.md", "plain.md"}


async def test_symlinks_outside_the_directory_are_followed_only_when_asked(
    docs: DocumentIndexService, tree: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.md").write_text("# Private\n")
    (tree / "leak.md").symlink_to(outside / "key.md")
    (tree / "linked-dir").symlink_to(outside, target_is_directory=True)
    (tree / "inside.md").symlink_to(tree / "intro.md")  # inside: followed
    result = await docs.sync_directory(tree, "**/*.md")
    assert {Path(p.file_path).name for p in result.problems} == {"leak.md"}
    linked = await docs.sync_directory(tree, "linked-dir/*.md")
    assert [(Path(p.file_path).parent.name, p.reason.split(",")[0]) for p in linked.problems] == [
        ("linked-dir", f"skipped: symlink to {(outside / 'key.md').as_posix()}")
    ]
    assert "leak.md" not in await by_path(docs, tree)
    assert (await by_path(docs, tree))["inside.md"].title == "Introduction"

    followed = await docs.sync_directory(tree, follow_external_symlinks=True)
    assert followed.problems == [] and followed.added == 1
    assert (await by_path(docs, tree))["leak.md"].title == "Private"


async def test_files_over_the_size_limit_are_skipped(
    docs: DocumentIndexService, tree: Path
) -> None:
    (tree / "big.md").write_text("# Big\n" + "x" * 100)
    result = await docs.sync_directory(tree, max_file_bytes=64)
    assert [(Path(p.file_path).name, p.reason) for p in result.problems] == [
        ("big.md", "skipped: 106 bytes, larger than the limit of 64")
    ]
    assert (await docs.sync_directory(tree)).added == 1  # the default limit is 16 MiB


async def test_progress_is_reported_per_batch(docs: DocumentIndexService, tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"{i}.md").write_text(f"# {i}\n")
    calls: list[tuple[int, int]] = []
    result = await docs.sync_directory(
        tmp_path, progress=lambda done, total: calls.append((done, total)), batch_size=3
    )
    assert result.added == 7
    assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]


async def test_missing_directory_is_an_error(docs: DocumentIndexService, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        await docs.sync_directory(tmp_path / "nope")


async def test_pending_then_mark_synced(docs: DocumentIndexService, tree: Path) -> None:
    await docs.sync_directory(tree)
    pending = await docs.pending_documents(limit=2)
    assert len(pending) == 2
    assert all(d.sync_status == "pending" for d in pending)
    first = pending[0]
    synced = await docs.mark_synced(first.id, "test-model", b"\x00\x01")
    assert synced.sync_status == "synced"
    assert synced.embedding_model == "test-model"
    assert synced.last_synced_at is not None
    assert synced.updated_at == first.updated_at
    remaining = await docs.pending_documents(limit=10)
    assert first.id not in {d.id for d in remaining}
    assert len(remaining) == 2

    with pytest.raises(ConflictError):
        await docs.mark_synced(remaining[0].id, "m", b"x", content_hash="0" * 64)
    with pytest.raises(NotFoundError):
        await docs.mark_synced(10**9, "m", b"x")


async def test_pending_documents_uses_the_sync_status_index(db: Database) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from abathur.repositories.documents import NEEDS_SYNC

    dialect = sqlite.dialect() if db.is_sqlite else postgresql.dialect()
    where = str(NEEDS_SYNC.compile(dialect=dialect))
    plan = " ".join(await db.explain_query_plan(f"SELECT id FROM document_index WHERE {where}"))
    if db.is_sqlite:
        assert "idx_document_sync_status" in plan
    else:  # an empty table: the planner may prefer a scan; the literal form is what counts
        assert "'pending'" in where and "'stale'" in where


def test_front_matter_and_heading_parsing() -> None:
    assert parse_front_matter('---\ntitle: "A"\ndocument_type: spec\n---\nbody') == (
        {"title": "A", "document_type": "spec"},
        "body",
    )
    assert parse_front_matter("---\ntitle: no closing fence\n") == (
        {},
        "---\ntitle: no closing fence\n",
    )
    assert describe(Path("x.md"), "```\n# in code\n```\n# Real\n") == ("Real", None)
    assert describe(Path("x.md"), "## Second level only\n") == ("x", None)
    assert describe(Path("x.md"), "---\ntype: note\n---\n# T\n") == ("T", "note")


async def test_rows_are_looked_up_by_more_paths_than_one_statement_binds(
    db: Database, docs: DocumentIndexService, tree: Path
) -> None:
    """Before: PostgreSQL (asyncpg) refused a lookup of more than 32,767 paths
    with DatabaseError "the number of query arguments cannot exceed 32767":
    a sync with ``batch_size`` above that, or one that finds that many files
    gone at once (``_mark_missing``), failed there and worked on SQLite."""
    await docs.sync_directory(tree)
    intro = (tree / "intro.md").as_posix()
    paths = [f"{tree.as_posix()}/gone{i}.md" for i in range(40_000)] + [intro]
    found = await db.run(lambda s: DocumentIndexRepository(s).by_paths(paths), write=False)
    assert list(found) == [intro]
