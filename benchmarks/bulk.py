"""Bulk load (issue 16's 50,000 memories per second on SQLite): ``put_memories``
against the same rows written into the same schema without abathur.

Part of ``make bench`` (``benchmarks/run.py`` calls ``sqlite_bulk`` and, with
``ABATHUR_BENCH_POSTGRES_URL``, ``postgres_bulk``; the figures and the target
line are in its report); ``python -m benchmarks.bulk [--items N] [--batch B]
[--fill F] [--rounds R]`` runs this part alone and prints memories per second
(wall clock, and per CPU second of this process, all its threads, which a busy
machine disturbs less), and last the machine it ran on (processor, load
average: the VM's host changes between sessions, and figures compare only on
the same one), for:

- ``put_memories``: N new keys in 100 namespaces, in batches of B, on a file
  database (WAL, synchronous=NORMAL), one audit row per memory; the call as a
  caller makes it, its statistics refresh (``analyze=True``) included;
- bare ``sqlite3``: the rows ``put_memories`` writes (a version and an audit
  row per memory, ids given, versions in index order) by two ``executemany``
  per batch in one transaction per batch, with SQLite's default page cache
  and with the 64 MiB one ``put_memories`` uses, then with every secondary
  index of the two tables dropped: what the schema itself costs;
- the fill scenario (``--fill F``, 0 for none): ``put_memories`` of F new
  keys in one call into an empty store (on SQLite it rebuilds the two
  tables' non-unique indexes: ``repositories.memory.indexes_rebuilt``),
  against bare ``sqlite3`` writing the same rows in one transaction with
  those indexes dropped and created again as it does, and with every index
  maintained row by row;
- on PostgreSQL (with ``ABATHUR_BENCH_POSTGRES_URL``), ``put_memories`` and
  hand-written asyncpg writing the same rows (ids drawn from the tables'
  sequences, then ``copy_records_to_table`` of the versions and of the audit
  rows, one transaction per batch), each on a fresh schema.

The baselines' rows (JSON serialised) are built before their clock starts:
they are the limit of the inserts alone. The SQLite batch loads run R rounds
(3 unless told; ``make bench --quick``: 1), taking turns, and each figure is
the median of its rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from abathur.infrastructure.database import Database
from abathur.repositories.memory import BULK_CACHE_KIB
from benchmarks import postgres
from benchmarks.report import machine

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
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return items / (time.perf_counter() - wall), items / (time.process_time() - cpu)


def bare(
    schema: Path,
    path: Path,
    items: int,
    batch: int,
    *,
    cache: bool,
    indexes: bool,
    rebuild: bool = False,
) -> tuple[float, float]:
    """The same rows by bare sqlite3 (see the module); ``rebuild``: in each
    batch's transaction, the two tables' non-unique indexes dropped before
    the inserts and created again (from their own SQL) after them."""
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
    rebuilt: list[tuple[str, str]] = []
    if rebuild:
        rebuilt = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('memory_entries', 'audit') AND sql NOT LIKE 'CREATE UNIQUE %'"
        ).fetchall()

    def run() -> None:
        for start in range(0, items, batch):
            rows = sorted(versions[start : start + batch], key=lambda r: (r[1], r[2], r[5]))
            conn.execute("BEGIN IMMEDIATE")
            for name, _sql in rebuilt:
                conn.execute(f'DROP INDEX "{name}"')
            conn.executemany(
                f"INSERT INTO memory_entries ({MEMORY_COLUMNS}) VALUES ({marks})", rows
            )
            conn.executemany(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({', '.join('?' * 9)})",
                audits[start : start + batch],
            )
            for _name, sql in rebuilt:
                conn.execute(sql)
            conn.execute("COMMIT")

    try:
        return timed(run, items)
    finally:
        conn.close()


SIZES = (50_000, 10_000)  # memories, per batch
QUICK_SIZES = (2_000, 1_000)
# Rounds of the SQLite batch loads, taking turns, each figure their median:
# with one round, put_memories always first, it alone paid for whatever the
# machine did in its seconds (docs/design_decisions.md, "hD: the bulk figure
# in make bench").
ROUNDS = 3
# The fill scenario: memories in one put_memories call into an empty store.
FILL = 200_000
QUICK_FILL = 3_000
GOAL = 50_000  # issue 16: put_memories, memories per second on SQLite
PG_MEMORY_COLUMNS = (
    "id", "namespace", "key", "value", "memory_type", "version", "is_deleted", "metadata",
    "created_by", "updated_by", "created_at", "updated_at", "is_current",
)  # fmt: skip
PG_AUDIT_COLUMNS = (
    "timestamp", "task_id", "action_type", "action_data", "result", "memory_operation_type",
    "memory_namespace", "memory_entry_id",
)  # fmt: skip


def figure(op: str, impl: str, rates: tuple[float, float]) -> dict[str, Any]:
    """One row of the JSON: memories per second of wall clock and per CPU second."""
    return {"op": op, "impl": impl, "per_s": round(rates[0]), "per_cpu_s": round(rates[1])}


async def sqlite_bulk(
    workdir: Path, items: int, batch: int, fill: int = 0, rounds: int = 1
) -> dict[str, Any]:
    """``put_memories`` and the three bare ``sqlite3`` loads (see the module),
    each on its own file in ``workdir``, ``rounds`` times, taking turns (round
    r starts with the r-th load), so that whatever else the machine does
    weighs on them alike; each figure is the median of its rounds. With
    ``fill``, the fill scenario under ``"fill"`` (``bulk-fill-*`` files, one
    round)."""
    schema = workdir / "bulk-schema.db"
    db = Database(f"sqlite:///{schema}")
    await db.initialize()
    task_id = (await db.tasks.create_task("bulk")).id
    await db.close()

    async def ours() -> tuple[float, float]:
        target = workdir / "bulk-abathur.db"
        target.write_bytes(schema.read_bytes())
        db = Database(f"sqlite:///{target}")
        try:
            await db.initialize()
            return await put_rate(db, task_id, items, batch)
        finally:
            await db.close()

    def theirs(n: int, cache: bool, indexes: bool) -> Callable[[], Awaitable[tuple[float, float]]]:
        async def load() -> tuple[float, float]:
            path = workdir / f"bulk-bare-{n}.db"
            return bare(schema, path, items, batch, cache=cache, indexes=indexes)

        return load

    loads = [("put_memories", "abathur", ours)] + [
        ("the same rows", impl, theirs(n, cache, indexes))
        for n, (impl, cache, indexes) in enumerate(
            (
                ("sqlite3, default cache", False, True),
                (f"sqlite3, {BULK_CACHE_KIB // 1024} MiB cache", True, True),
                ("sqlite3, no secondary indexes", True, False),
            ),
            1,
        )
    ]
    rates: dict[str, list[tuple[float, float]]] = {impl: [] for _, impl, _ in loads}
    for turn in range(rounds):
        first = turn % len(loads)
        for _op, impl, load in loads[first:] + loads[:first]:
            rates[impl].append(await load())
    figures = [figure(op, impl, medians(rates[impl])) for op, impl, _ in loads]
    result: dict[str, Any] = {"items": items, "batch": batch, "rounds": rounds, "figures": figures}
    if fill:
        result["fill"] = await sqlite_fill(workdir, schema, task_id, fill)
    return result


def medians(rates: list[tuple[float, float]]) -> tuple[float, float]:
    """The median wall and the median CPU rate of some rounds."""
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


async def sqlite_fill(workdir: Path, schema: Path, task_id: str, items: int) -> dict[str, Any]:
    """The fill scenario (see the module): one call of ``items`` into an
    empty store, then the bare loads of the same rows in one transaction."""
    target = workdir / "bulk-fill-abathur.db"
    shutil.copyfile(schema, target)
    db = Database(f"sqlite:///{target}")
    try:
        await db.initialize()
        rates = await put_rate(db, task_id, items, items)
        figures = [figure("put_memories, one call", "abathur", rates)]
    finally:
        await db.close()
    for impl, rebuild in (("sqlite3, indexes rebuilt", True), ("sqlite3, every index", False)):
        path = workdir / f"bulk-fill-bare-{len(figures)}.db"
        rates = bare(schema, path, items, items, cache=True, indexes=True, rebuild=rebuild)
        figures.append(figure("the same rows", impl, rates))
    return {"items": items, "batch": items, "figures": figures}


async def put_rate(db: Database, task_id: str, items: int, batch: int) -> tuple[float, float]:
    """``put_memories`` of ``items`` new keys in batches of ``batch``."""
    batches = [
        [item(i, task_id) for i in range(start, min(start + batch, items))]
        for start in range(0, items, batch)
    ]
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for chunk in batches:
        await db.memory.put_memories(chunk)
    return items / (time.perf_counter() - wall), items / (time.process_time() - cpu)


async def postgres_bulk(url: str, items: int, batch: int) -> dict[str, Any]:
    """``put_memories`` and hand-written asyncpg (see the module), each on a
    fresh schema of the server at ``url``."""
    async with AsyncExitStack() as stack:
        schemas = {
            impl: await postgres.create_schema(url, stack) for impl in ("abathur", "asyncpg")
        }
        tasks = {}
        for impl, schema in schemas.items():
            async with postgres.open_database(url, schema) as db:
                tasks[impl] = (await db.tasks.create_task("bulk")).id
        async with postgres.open_database(url, schemas["abathur"]) as db:
            rates = await put_rate(db, tasks["abathur"], items, batch)
        figures = [figure("put_memories", "abathur", rates)]
        rates = await asyncpg_load(url, schemas["asyncpg"], tasks["asyncpg"], items, batch)
        figures.append(figure("the same rows", "asyncpg, COPY", rates))
    return {"items": items, "batch": batch, "figures": figures}


async def asyncpg_load(
    url: str, schema: str, task_id: str, items: int, batch: int
) -> tuple[float, float]:
    """The rows ``put_memories`` writes, by plain asyncpg: per batch, in one
    transaction, the versions' ids from the table's sequence, then one COPY of
    the versions and one of their audit rows (ids from the column's default)."""
    conn = await asyncpg.connect(postgres.dsn(url), server_settings={"search_path": schema})
    try:
        stamp = datetime.fromisoformat(STAMP).replace(tzinfo=UTC)
        versions = [
            (f"user:u{i % 100}:facts", f"k{i}",
             json.dumps({"text": f"fact number {i}", "n": i}, separators=(",", ":")),
             "semantic", 1, False, "{}", "loader", "loader", stamp, stamp, True)
            for i in range(items)
        ]  # fmt: skip
        audits = [
            (stamp, task_id, "memory_create",
             json.dumps({"key": f"k{i}", "version": 1, "created_by": "loader",
                         "memory_type": "semantic"}, separators=(",", ":")),
             "success", "create", f"user:u{i % 100}:facts")
            for i in range(items)
        ]  # fmt: skip
        sequence = await conn.fetchval("SELECT pg_get_serial_sequence('memory_entries', 'id')")
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, items, batch):
            chunk = range(start, min(start + batch, items))
            async with conn.transaction():
                ids = [
                    row_id
                    for (row_id,) in await conn.fetch(
                        "SELECT nextval($1::regclass) FROM generate_series(1, $2)",
                        sequence,
                        len(chunk),
                    )
                ]
                await conn.copy_records_to_table(
                    "memory_entries",
                    records=[(row_id, *versions[i]) for row_id, i in zip(ids, chunk, strict=True)],
                    columns=PG_MEMORY_COLUMNS,
                    schema_name=schema,
                )
                await conn.copy_records_to_table(
                    "audit",
                    records=[(*audits[i], row_id) for row_id, i in zip(ids, chunk, strict=True)],
                    columns=PG_AUDIT_COLUMNS,
                    schema_name=schema,
                )
        return items / (time.perf_counter() - wall), items / (time.process_time() - cpu)
    finally:
        await conn.close()


# ------------------------------------------------------------------ report


def _rows(bulk: dict[str, Any]) -> list[str]:
    lines = [
        "| operation | implementation | memories/s (wall) | per CPU second |",
        "|---|---|---:|---:|",
    ]
    for f in bulk["figures"]:
        lines.append(f"| {f['op']} | {f['impl']} | {f['per_s']:,} | {f['per_cpu_s']:,} |")
    return lines


def render(bulk: dict[str, Any] | None) -> list[str]:
    """The SQLite bulk section of ``make bench``'s report."""
    lines = ["## Bulk load: put_memories (issue 16)", ""]
    if not bulk:
        return [*lines, "Not measured in this run."]
    return [*lines, *_render_batches(bulk), *_render_fill(bulk.get("fill"))]


def _render_batches(bulk: dict[str, Any]) -> list[str]:
    return [
        f"`put_memories` of {bulk['items']:,} new keys (100 namespaces) in batches of "
        f"{bulk['batch']:,}, one",
        "version and one audit row each, on a file database (its `ANALYZE` of a table the",
        "batch doubled included), against bare `sqlite3` writing the same rows into the same",
        "schema (`benchmarks/bulk.py`: ids given, versions in index order, two `executemany`",
        "per batch in one transaction, the rows built before the clock starts), with",
        "SQLite's default page cache, with the 64 MiB one `put_memories` uses, and with every",
        "secondary index of the two tables dropped. Memories per second of wall clock, and",
        "per CPU second of this process (all its threads), which a busy machine disturbs less.",
        *_render_rounds(bulk.get("rounds", 1)),
        "",
        *_rows(bulk),
    ]


def _render_rounds(rounds: int) -> list[str]:
    if rounds < 2:
        return []
    return [f"Each figure is the median of {rounds} rounds, the four loads taking turns first."]


def _render_fill(fill: dict[str, Any] | None) -> list[str]:
    if not fill:
        return []
    return [
        "",
        f"The fill scenario: `put_memories` of {fill['items']:,} new keys in one call into an",
        "empty store (which doubles both tables, so it drops their non-unique indexes and",
        "creates them again before its commit; its `ANALYZE` of the two tables after it",
        "included), against bare `sqlite3` writing the same rows in one transaction with",
        "those indexes dropped and created again, and with every index maintained row by",
        "row (64 MiB cache, rows built before the clock starts, no `ANALYZE`).",
        "",
        *_rows(fill),
    ]


def render_postgres(bulk: dict[str, Any] | None) -> list[str]:
    """The PostgreSQL bulk subsection."""
    if not bulk:
        return []
    return [
        "### Bulk load: put_memories",
        "",
        f"`put_memories` of {bulk['items']:,} new keys in batches of {bulk['batch']:,} (its",
        "`VACUUM (ANALYZE)` of a table a batch grew by 10% included), against hand-written",
        "asyncpg writing the same rows (per batch in one transaction: the versions' ids from",
        "the sequence, one `COPY` of the versions and one of the audit rows; rows built",
        "before the clock starts), each on a fresh schema. Per CPU second: this process's",
        "only, the server's work not counted.",
        "",
        *_rows(bulk),
    ]


def targets(bulk: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 16's bulk goal on SQLite, with what bare sqlite3 reaches beside it."""
    if not bulk:
        return []
    ours, *bare_rows = bulk["figures"]
    beside = ", ".join(f"{f['per_s']:,}/s ({f['impl'].removeprefix('sqlite3, ')})"
                       for f in bare_rows)  # fmt: skip
    found = [
        {
            "target": f"issue 16: put_memories at least {GOAL:,} memories/s on SQLite",
            "measured": f"{ours['per_s']:,}/s wall, {ours['per_cpu_s']:,}/s per CPU second "
            f"({bulk['items']:,} new keys, batches of {bulk['batch']:,}); bare sqlite3 into "
            f"the same schema: {beside}",
            "met": ours["per_s"] >= GOAL,
        }
    ]
    fill = bulk.get("fill")
    if fill:
        ours, *bare_rows = fill["figures"]
        beside = ", ".join(f"{f['per_s']:,}/s ({f['impl'].removeprefix('sqlite3, ')})"
                           for f in bare_rows)  # fmt: skip
        found.append(
            {
                "target": f"issue 16, the fill scenario: put_memories at least {GOAL:,} "
                "memories/s on SQLite into an empty store",
                "measured": f"{ours['per_s']:,}/s wall, {ours['per_cpu_s']:,}/s per CPU "
                f"second ({fill['items']:,} new keys in one call); bare sqlite3, the same "
                f"rows in one transaction: {beside}",
                "met": ours["per_s"] >= GOAL,
            }
        )
    return found


def _print(title: str, bulk: dict[str, Any]) -> None:
    print(f"{title}: {bulk['items']:,} new memories, batches of {bulk['batch']:,}")
    for f in bulk["figures"]:
        label = f"{f['op']}, {f['impl']}"
        print(f"  {label:45s} {f['per_s']:>9,}/s wall  {f['per_cpu_s']:>9,}/s per CPU second")


async def main_async(items: int, batch: int, fill: int = 0, rounds: int = 1) -> None:
    with tempfile.TemporaryDirectory(prefix="abathur-bulk-") as tmp:
        result = await sqlite_bulk(Path(tmp), items, batch, fill, rounds)
        _print("SQLite", result)
        if fill:
            _print("SQLite, the fill scenario", result["fill"])
    url = os.environ.get("ABATHUR_BENCH_POSTGRES_URL")
    if url:
        _print("PostgreSQL", await postgres_bulk(url, items, batch))
    host = machine()
    print(
        f"machine: {host['cpu']}, {host['cores']} cores, load average "
        f"{' '.join(map(str, host['load_average']))}, Python {host['python']}, "
        f"SQLite {host['sqlite']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=SIZES[0])
    parser.add_argument("--batch", type=int, default=SIZES[1])
    parser.add_argument("--fill", type=int, default=FILL, help="0: no fill scenario")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="rounds of the batch loads (their median)"
    )
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.items, args.batch, args.fill, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
