"""Bulk load on SQLite: ``put_memories`` against bare ``sqlite3`` writing the
same rows into the same schema (issue 16's 50,000 memories per second).

``python -m benchmarks.bulk [--items N] [--batch B]`` prints memories per
second (wall clock, and per CPU second of this process, which a busy machine
disturbs less) for:

- ``put_memories``: N new keys in 100 namespaces, in batches of B, on a file
  database (WAL, synchronous=NORMAL), one audit row per memory;
- bare ``sqlite3``: the rows ``put_memories`` writes (a version and an audit
  row per memory, ids given, versions in index order) by two ``executemany``
  per batch in one transaction per batch, with SQLite's default page cache
  and with the 64 MiB one ``put_memories`` uses, then with every secondary
  index of the two tables dropped: what the schema itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abathur.infrastructure.database import Database
from abathur.repositories.memory import BULK_CACHE_KIB

STAMP = "2026-01-31 12:00:00.000000"
MEMORY_COLUMNS = (
    "id, namespace, key, value, memory_type, version, is_deleted, metadata, "
    "created_by, updated_by, created_at, updated_at, is_current"
)
AUDIT_COLUMNS = (
    "id, timestamp, task_id, action_type, action_data, result, memory_operation_type, "
    "memory_namespace, memory_entry_id"
)


def item(i: int, task_id: str) -> dict[str, Any]:
    return {
        "namespace": f"user:u{i % 100}:facts",
        "key": f"k{i}",
        "value": {"text": f"fact number {i}", "n": i},
        "memory_type": "semantic",
        "by": "loader",
        "task_id": task_id,
    }


def timed(run: Callable[[], Any], items: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return items / (time.perf_counter() - wall), items / (time.process_time() - cpu)


async def abathur(path: Path, items: int, batch: int) -> tuple[float, float]:
    db = Database(f"sqlite:///{path}")
    await db.initialize()
    try:
        task_id = (await db.tasks.create_task("bulk")).id
        batches = [
            [item(i, task_id) for i in range(start, min(start + batch, items))]
            for start in range(0, items, batch)
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        for chunk in batches:
            await db.memory.put_memories(chunk)
        return items / (time.perf_counter() - wall), items / (time.process_time() - cpu)
    finally:
        await db.close()


def bare(
    schema: Path, path: Path, items: int, batch: int, *, cache: bool, indexes: bool
) -> tuple[float, float]:
    """The same rows by bare sqlite3 (see the module)."""
    path.write_bytes(schema.read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if cache:
        conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    (task_id,) = conn.execute("SELECT id FROM tasks").fetchone()
    if not indexes:
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('memory_entries', 'audit')"
        ).fetchall():
            conn.execute(f'DROP INDEX "{name}"')
    versions = [
        (i + 1, f"user:u{i % 100}:facts", f"k{i}",
         json.dumps({"text": f"fact number {i}", "n": i}, separators=(",", ":")),
         "semantic", 1, 0, "{}", "loader", "loader", STAMP, STAMP, 1)
        for i in range(items)
    ]  # fmt: skip
    audits = [
        (i + 1, STAMP, task_id, "memory_create",
         json.dumps({"key": f"k{i}", "version": 1, "created_by": "loader",
                     "memory_type": "semantic"}, separators=(",", ":")),
         "success", "create", f"user:u{i % 100}:facts", i + 1)
        for i in range(items)
    ]  # fmt: skip
    marks = ", ".join("?" * 13)

    def run() -> None:
        for start in range(0, items, batch):
            rows = sorted(versions[start : start + batch], key=lambda r: (r[1], r[2], r[5]))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT INTO memory_entries ({MEMORY_COLUMNS}) VALUES ({marks})", rows
            )
            conn.executemany(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({', '.join('?' * 9)})",
                audits[start : start + batch],
            )
            conn.execute("COMMIT")

    try:
        return timed(run, items)
    finally:
        conn.close()


async def main_async(items: int, batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="abathur-bulk-") as tmp:
        work = Path(tmp)
        schema = work / "schema.db"
        db = Database(f"sqlite:///{schema}")
        await db.initialize()
        await db.tasks.create_task("bulk")
        await db.close()
        rows = [("put_memories", await abathur(work / "abathur.db", items, batch))]
        for label, cache, indexes in (
            ("bare sqlite3, default cache", False, True),
            (f"bare sqlite3, {BULK_CACHE_KIB // 1024} MiB cache", True, True),
            ("bare sqlite3, no secondary indexes", True, False),
        ):
            target = work / f"bare-{len(rows)}.db"
            rows.append((label, bare(schema, target, items, batch, cache=cache, indexes=indexes)))
        print(f"{items:,} new memories, batches of {batch:,}")
        for label, (wall, cpu) in rows:
            print(f"{label:40s} {wall:>9,.0f}/s wall  {cpu:>9,.0f}/s per CPU second")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.items, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
