"""``make bench``: memory search from 10 thousand to 1 million memories.

One store per backend grows in steps (10,000 -> 100,000 -> 1,000,000 current
memories; ``--quick``: 1,000 -> 5,000): SQLite (a file, ``Database``'s default
settings: WAL) and PostgreSQL when ``ABATHUR_BENCH_POSTGRES_URL`` names a
server (a fresh schema, dropped afterwards). At each size the newest 100
current live memories are searched (``search_memories(prefix, limit=100)``)
in a subtree of 100 keys and in the whole tree, each also with a memory type
and with a value filter matching about half the rows, the whole tree also
with ``offset=100``, and a subtree that grows with the store (one user of
1,000: 10, 100 then 1,000 keys; no target, shown for what a sparse subtree
costs). LangGraph's own ``AsyncSqliteStore`` holds the same items and runs
the same searches (it has no memory type) on SQLite.

Calls are interleaved across every variant (and the peer) of one size,
after a warm-up; a variant stops at ``--samples`` calls or, once it has 10,
after ``--budget`` seconds of calls (the peer's slow searches at 1M). Every
figure is computed from this run's samples.

The stores are filled with bulk SQL (one ``INSERT ... SELECT`` over a series
per step, the table's secondary indexes dropped and rebuilt around it, then
ANALYZE; PostgreSQL also VACUUM, as its autovacuum does after a bulk insert),
setting ``is_current`` on every row (each key has one version); no audit rows
(a read benchmark). LangGraph's store is filled by its own batch put
(``abatch`` of ``PutOp``). Fill times are reported.

Writes ``docs/performance_scale.json`` (every figure), ``docs/performance_scale.png``
(p50 against the number of memories) and ``docs/performance_scale.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abathur.infrastructure.database import Database
from benchmarks.report import Figure, machine, maybe_version, print_targets, write_results

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 5_000)
LIMIT = 100
SMALL = "user:small:notes"  # 100 keys, spread over the first step's rows
USERS = 1000  # the other rows: user:u{i % USERS}:notes or :prefs
GROWING = "user:u7"
FILTER = {"status": "open"}
MEMORY_TYPE = "semantic"  # two rows in three
T0 = 1_704_067_200  # 2024-01-01 00:00:00 UTC; row i is written at T0 + i seconds
MIN_SAMPLES = 10
GROWTH_GOAL = 2.0  # issue 16: p50 growth from the first size to the last within 2x
LANGGRAPH_BATCH = 5000


@dataclass(frozen=True)
class Variant:
    name: str
    prefix: str
    memory_type: str | None = None
    filter: dict[str, Any] | None = None
    offset: int = 0
    target: bool = True  # p50 growth within GROWTH_GOAL
    peer: bool = True  # LangGraph's store runs it too (it has no memory type)

    def expected(self, size: int, first: int) -> int | None:
        """How many rows the search returns, when it is known exactly."""
        if self.prefix == "user" and self.filter is None:
            return LIMIT
        if self.prefix == SMALL:
            return len([i for i in small_rows(first) if self.matches(i)])
        return None

    def matches(self, i: int) -> bool:
        if self.memory_type is not None and memory_type(i) != self.memory_type:
            return False
        return self.filter is None or status(i) == self.filter["status"]


VARIANTS = (
    Variant("subtree of 100 keys", SMALL),
    Variant("subtree of 100 keys, memory_type", SMALL, memory_type=MEMORY_TYPE, peer=False),
    Variant("subtree of 100 keys, filter", SMALL, filter=FILTER),
    Variant("whole tree", "user"),
    Variant("whole tree, memory_type", "user", memory_type=MEMORY_TYPE, peer=False),
    Variant("whole tree, filter", "user", filter=FILTER),
    Variant("whole tree, offset 100", "user", offset=100),
    Variant("one user's subtree (size / 1,000 keys)", GROWING, target=False),
)


# ------------------------------------------------------------------ the rows


def small_every(first: int) -> int:
    return first // 100


def small_rows(first: int) -> range:
    return range(0, first, small_every(first))


def namespace(i: int, first: int) -> str:
    if i < first and i % small_every(first) == 0:
        return SMALL
    return f"user:u{i % USERS}:{'prefs' if i % 7 == 0 else 'notes'}"


def memory_type(i: int) -> str:
    return "episodic" if i % 3 == 0 else "semantic"


def status(i: int) -> str:
    return "open" if (i // 7) % 2 == 0 else "closed"


def value(i: int) -> dict[str, Any]:
    return {"i": i, "status": status(i), "text": f"note {i} about topic {i % 50}"}


# The same rows in SQL (the functions above, for i in [start, stop)).
_ROW_SQL = """
    CASE WHEN i < {first} AND i % {every} = 0 THEN '{small}'
         ELSE 'user:u' || (i % {users}) || CASE WHEN i % 7 = 0 THEN ':prefs' ELSE ':notes' END
    END,
    'k' || i,
    {obj}('i', i, 'status', CASE WHEN (i / 7) % 2 = 0 THEN 'open' ELSE 'closed' END,
          'text', 'note ' || i || ' about topic ' || (i % 50)),
    CASE WHEN i % 3 = 0 THEN 'episodic' ELSE 'semantic' END,
    1, {false}, {true}, '{{}}', 'bench', 'bench', {stamp}, {stamp}
"""
_COLUMNS = (
    "namespace, key, value, memory_type, version, is_deleted, is_current, metadata, "
    "created_by, updated_by, created_at, updated_at"
)


def _row_sql(postgres: bool, first: int) -> str:
    return _ROW_SQL.format(
        first=first,
        every=small_every(first),
        small=SMALL,
        users=USERS,
        obj="jsonb_build_object" if postgres else "json_object",
        false="false" if postgres else "0",
        true="true" if postgres else "1",
        # UTCDateTime's SQLite text: 'YYYY-MM-DD HH:MM:SS.ffffff'
        stamp=f"to_timestamp({T0} + i)"
        if postgres
        else f"datetime({T0} + i, 'unixepoch') || '.000000'",
    )


def fill_sqlite(path: Path, start: int, stop: int, first: int) -> None:
    """Rows [start, stop) into an abathur SQLite file (migrated, not open elsewhere)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for the index builds
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'memory_entries' AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("BEGIN IMMEDIATE")
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?) "
            f"INSERT INTO memory_entries ({_COLUMNS}) SELECT {_row_sql(False, first)} FROM s",
            (start, stop),
        )
        for _name, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def fill_postgres(url: str, schema: str, start: int, stop: int, first: int) -> None:
    """Rows [start, stop) into an abathur PostgreSQL schema (migrated)."""
    import asyncpg

    from benchmarks.postgres import dsn

    conn = await asyncpg.connect(dsn(url), server_settings={"search_path": schema})
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        async with conn.transaction():
            indexes = await conn.fetch(
                "SELECT c.relname, pg_get_indexdef(c.oid) AS sql FROM pg_index x "
                "JOIN pg_class c ON c.oid = x.indexrelid "
                "WHERE x.indrelid = 'memory_entries'::regclass "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
            )
            for row in indexes:
                await conn.execute(f'DROP INDEX "{row["relname"]}"')
            await conn.execute(
                f"INSERT INTO memory_entries ({_COLUMNS}) "
                f"SELECT {_row_sql(True, first)} FROM generate_series($1::bigint, $2::bigint) AS i",
                start,
                stop - 1,
            )
            for row in indexes:
                await conn.execute(row["sql"])
        await conn.execute("VACUUM ANALYZE memory_entries")
    finally:
        await conn.close()


def langgraph_items(
    start: int, stop: int, first: int
) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    for i in range(start, stop):
        yield tuple(namespace(i, first).split(":")), f"k{i}", value(i)


async def fill_langgraph(store: Any, start: int, stop: int, first: int) -> None:
    from langgraph.store.base import PutOp

    batch: list[Any] = []
    for ns, key, doc in langgraph_items(start, stop, first):
        batch.append(PutOp(ns, key, doc))
        if len(batch) >= LANGGRAPH_BATCH:
            await store.abatch(batch)
            batch = []
    if batch:
        await store.abatch(batch)


# ------------------------------------------------------------------ timing


Call = Callable[[], Awaitable[Any]]


async def sample(
    calls: dict[str, Call], samples: int, budget: float, warmup: int
) -> dict[str, list[float]]:
    """Each call's latencies (microseconds), interleaved round robin after
    ``warmup`` calls each; a call stops at ``samples`` or, once it has
    MIN_SAMPLES, after ``budget`` seconds."""
    for _ in range(warmup):
        for call in calls.values():
            await call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    active = list(calls)
    while active:
        for name in list(active):
            started = time.perf_counter()
            await calls[name]()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed * 1e6)
            spent[name] += elapsed
            n = len(times[name])
            if n >= samples or (n >= MIN_SAMPLES and spent[name] >= budget):
                active.remove(name)
    return times


def abathur_call(db: Database, v: Variant) -> Call:
    return lambda: db.memory.search_memories(
        v.prefix, v.memory_type, LIMIT, filter=v.filter, offset=v.offset
    )


def langgraph_call(store: Any, v: Variant) -> Call:
    prefix = tuple(v.prefix.split(":"))
    return lambda: store.asearch(prefix, filter=v.filter, limit=LIMIT, offset=v.offset)


@dataclass
class Run:
    sizes: tuple[int, ...]
    samples: int
    budget: float
    warmup: int
    workdir: Path
    figures: list[Figure] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.sizes[0]

    def record(self, backend: str, impl: str, size: int, times: dict[str, list[float]],
               returned: dict[str, int]) -> None:  # fmt: skip
        for name, samples in times.items():
            extra = {"backend": backend, "rows": size, "returned": returned[name]}
            self.figures.append(Figure(name, impl, samples, extra=extra))

    async def check(self, calls: dict[str, Call], size: int, impl: str) -> dict[str, int]:
        """Run each search once; what it returns must be right where it is known."""
        returned: dict[str, int] = {}
        for v in VARIANTS:
            if v.name not in calls:
                continue
            found = await calls[v.name]()
            returned[v.name] = len(found)
            expected = v.expected(size, self.first)
            assert expected is None or len(found) == expected, (impl, v.name, len(found))
            if v.prefix == "user" and v.filter is None and v.memory_type is None:
                keys = [m["key"] if isinstance(m, dict) else m.key for m in found]
                newest = [
                    f"k{i}" for i in range(size - 1 - v.offset, size - 1 - v.offset - LIMIT, -1)
                ]
                if impl == "abathur":  # LangGraph's stamps are whole seconds: ties
                    assert keys == newest, (impl, v.name, keys[:3])
        return returned

    def fill(self, backend: str, impl: str, start: int, stop: int, seconds: float) -> None:
        self.fills.append({
            "backend": backend, "impl": impl, "from": start, "to": stop,
            "seconds": round(seconds, 2), "rows_per_s": round((stop - start) / seconds),
        })  # fmt: skip
        print(f"fill {backend} {impl} {start:,} -> {stop:,}: {seconds:.1f} s", flush=True)

    async def sqlite(self) -> None:
        path = self.workdir / "scale.db"
        async with Database(path):
            pass  # migrated
        async with AsyncExitStack() as stack:
            peer: Any = None
            try:
                from langgraph.store.sqlite.aio import AsyncSqliteStore
            except ImportError as exc:  # the bench extra installs langgraph-checkpoint-sqlite
                self.notes.append(f"LangGraph's AsyncSqliteStore not measured: {exc}")
            else:
                peer = await stack.enter_async_context(
                    AsyncSqliteStore.from_conn_string(str(self.workdir / "langgraph.db"))
                )
                await peer.setup()
            start = 0
            for size in self.sizes:
                began = time.perf_counter()
                await asyncio.to_thread(fill_sqlite, path, start, size, self.first)
                self.fill("sqlite", "abathur", start, size, time.perf_counter() - began)
                if peer is not None:
                    began = time.perf_counter()
                    await fill_langgraph(peer, start, size, self.first)
                    self.fill("sqlite", "langgraph", start, size, time.perf_counter() - began)
                start = size
                async with Database(path) as db:
                    ours = {v.name: abathur_call(db, v) for v in VARIANTS}
                    theirs = (
                        {v.name: langgraph_call(peer, v) for v in VARIANTS if v.peer}
                        if peer is not None
                        else {}
                    )
                    returned = await self.check(ours, size, "abathur")
                    peer_returned = await self.check(theirs, size, "langgraph")
                    calls = {**{("abathur", n): c for n, c in ours.items()},
                             **{("langgraph", n): c for n, c in theirs.items()}}  # fmt: skip
                    times = await self.sample(calls)
                for impl, got in (("abathur", returned), ("langgraph", peer_returned)):
                    mine = {n: t for (i, n), t in times.items() if i == impl}
                    self.record("sqlite", impl, size, mine, got)
                self.progress("sqlite", size)

    async def postgres(self, url: str) -> None:
        from benchmarks.postgres import create_schema, open_database

        async with AsyncExitStack() as stack:
            schema = await create_schema(url, stack)
            async with open_database(url, schema):
                pass  # migrated
            start = 0
            for size in self.sizes:
                began = time.perf_counter()
                await fill_postgres(url, schema, start, size, self.first)
                self.fill("postgresql", "abathur", start, size, time.perf_counter() - began)
                start = size
                async with open_database(url, schema) as db:
                    ours = {v.name: abathur_call(db, v) for v in VARIANTS}
                    returned = await self.check(ours, size, "abathur")
                    times = await self.sample({("abathur", n): c for n, c in ours.items()})
                mine = {n: t for (_i, n), t in times.items()}
                self.record("postgresql", "abathur", size, mine, returned)
                self.progress("postgresql", size)

    async def sample(self, calls: dict[Any, Call]) -> dict[Any, list[float]]:
        return await sample(calls, self.samples, self.budget, self.warmup)

    def progress(self, backend: str, size: int) -> None:
        for f in self.figures:
            if f.extra["backend"] == backend and f.extra["rows"] == size:
                p50, p99 = f.quantile(0.5) / 1000, f.quantile(0.99) / 1000
                print(
                    f"{backend} {size:>9,} {f.impl:9} {f.op:42} p50 {p50:8.2f} ms "
                    f"p99 {p99:8.2f} ms n={len(f.samples_us)}",
                    flush=True,
                )


# ------------------------------------------------------------------ results


def _p50(
    figures: list[dict[str, Any]], backend: str, impl: str, op: str, rows: int
) -> float | None:
    for f in figures:
        if (f["backend"], f["impl"], f["op"], f["rows"]) == (backend, impl, op, rows):
            return float(f["p50_us"])
    return None


def targets(figures: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    first, last = sizes[0], sizes[-1]
    backends = sorted({f["backend"] for f in figures}, key=["sqlite", "postgresql"].index)
    for backend in backends:
        for v in VARIANTS:
            a = _p50(figures, backend, "abathur", v.name, first)
            b = _p50(figures, backend, "abathur", v.name, last)
            if not v.target or a is None or b is None:
                continue
            growth = b / a
            out.append({
                "target": f"{backend}: {v.name}: p50 growth {first:,} -> {last:,} rows "
                          f"within {GROWTH_GOAL:g}x",
                "measured": f"{growth:.2f}x ({a / 1000:.2f} ms -> {b / 1000:.2f} ms)",
                "met": growth <= GROWTH_GOAL,
            })  # fmt: skip
        for size in sizes:
            for v in VARIANTS:
                ours = _p50(figures, backend, "abathur", v.name, size)
                theirs = _p50(figures, backend, "langgraph", v.name, size)
                if ours is None or theirs is None:
                    continue
                out.append({
                    "target": f"{backend}: {v.name}, {size:,} rows: faster than LangGraph's store",
                    "measured": f"{ours / 1000:.2f} ms vs {theirs / 1000:.2f} ms "
                                f"({theirs / ours:.1f}x faster)",
                    "met": ours < theirs,
                })  # fmt: skip
    return out


STYLES = {"subtree of 100 keys": "o", "whole tree": "s", "one user's": "^"}


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figures = result["figures"]
    backends = [b for b in ("sqlite", "postgresql") if any(f["backend"] == b for f in figures)]
    fig, axes = plt.subplots(1, len(backends), figsize=(7 * len(backends), 5.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, backend in zip(axes[0], backends, strict=True):
        for n, v in enumerate(VARIANTS):
            for impl, line in (("abathur", "-"), ("langgraph", "--")):
                pts = sorted(
                    (f["rows"], f["p50_us"] / 1000)
                    for f in figures
                    if (f["backend"], f["impl"], f["op"]) == (backend, impl, v.name)
                )
                if not pts:
                    continue
                marker = next((m for k, m in STYLES.items() if v.name.startswith(k)), "o")
                label = v.name if impl == "abathur" else f"LangGraph: {v.name}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], line, marker=marker,
                        color=colors[n % len(colors)], label=label,
                        alpha=1.0 if impl == "abathur" else 0.6)  # fmt: skip
        title = "SQLite (abathur solid, LangGraph AsyncSqliteStore dashed)"
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="current memories in the store",
            ylabel="p50 latency (ms)",
            title=title if backend == "sqlite" else "PostgreSQL (abathur)",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"search_memories(prefix, limit={LIMIT}): p50 against store size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _ms(us: float) -> str:
    return f"{us / 1000:,.2f}"


def render(result: dict[str, Any], png: str | None) -> str:
    figures, sizes = result["figures"], result["sizes"]
    m = result["machine"]
    lines = [
        "# Memory search at scale",
        "",
        f"Generated by `python -m benchmarks.scale` (`make bench`) on {m['date']}: {m['cpu']}, "
        f"{m['cores']} cores (load average at the end {m['load_average']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}, SQLAlchemy {m['sqlalchemy']}, asyncpg {m['asyncpg']}, "
        f"langgraph-checkpoint-sqlite {result['langgraph_sqlite']}"
        + (f", PostgreSQL {result['postgres_version']}" if result.get("postgres_version") else "")
        + ". Every figure below is computed from this run's samples "
        "(`performance_scale.json`).",
        "",
        "What is measured: `search_memories(prefix, limit=100)`, the newest 100 current live "
        "memories of a subtree, as the store grows "
        + " -> ".join(f"{s:,}" for s in sizes)
        + " current memories (one version each). The store holds a subtree of 100 keys "
        f"(`{SMALL}`, written among the first {sizes[0]:,} rows), 2,000 namespaces "
        f"`user:u{{i % {USERS}}}:notes|prefs` for the rest, two memory types (`semantic` two rows "
        "in three, `episodic`) and a `status` field (`open` in about half the rows). The "
        "variants: that subtree and the whole tree `user`, each plain, with "
        f"`memory_type={MEMORY_TYPE!r}` and with `filter={FILTER}`; the whole tree with "
        "`offset=100`; and one user's subtree `user:u7`, which grows with the store "
        "(size / 1,000 keys), shown without a target for what a sparse, growing subtree costs.",
        "",
        f"Method: one store per backend, filled in steps by bulk SQL (see below). At each size "
        f"the calls of every variant (and of LangGraph's store) are interleaved, round robin, "
        f"after {result['warmup']} warm-up calls each; a variant stops at {result['samples']} "
        f"calls or, once it has {MIN_SAMPLES}, after {result['budget']:g} s of calls (`n` in "
        "the tables; a p99 of few samples is their maximum). Latencies in milliseconds.",
        "",
    ]
    if png:
        lines += [f"![p50 against store size]({png})", ""]
    lines += ["## Targets", ""]
    lines += [f"- {'met' if t['met'] else '**MISSED**'}: {t['target']}: {t['measured']}"
              for t in result["targets"]]  # fmt: skip
    lines.append("")
    for backend, title in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        rows = [f for f in figures if f["backend"] == backend]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        for impl, name in (("abathur", "abathur"), ("langgraph", "LangGraph AsyncSqliteStore")):
            mine = [f for f in rows if f["impl"] == impl]
            if not mine:
                continue
            head = "| variant | " + " | ".join(f"{s:,}: p50 / p99 (n)" for s in sizes)
            lines += [f"### {name}", "", head + f" | growth {sizes[0]:,} -> {sizes[-1]:,} |",
                      "|---|" + "---|" * (len(sizes) + 1)]  # fmt: skip
            for v in VARIANTS:
                cells = []
                by_size = {f["rows"]: f for f in mine if f["op"] == v.name}
                if not by_size:
                    continue
                for s in sizes:
                    f = by_size.get(s)
                    cells.append("" if f is None else
                                 f"{_ms(f['p50_us'])} / {_ms(f['p99_us'])} ({f['n']})")  # fmt: skip
                a, b = by_size.get(sizes[0]), by_size.get(sizes[-1])
                growth = f"{b['p50_us'] / a['p50_us']:.2f}x" if a and b else ""
                lines.append(f"| {v.name} | " + " | ".join(cells) + f" | {growth} |")
            lines.append("")
    lines += ["## Fill", "",
              "| backend | store | rows | seconds | rows/s |", "|---|---|---|---|---|"]  # fmt: skip
    for f in result["fills"]:
        lines.append(f"| {f['backend']} | {f['impl']} | {f['from']:,} -> {f['to']:,} | "
                     f"{f['seconds']:,.1f} | {f['rows_per_s']:,} |")  # fmt: skip
    lines += [
        "",
        "abathur's stores are filled with one `INSERT ... SELECT` over a series per step "
        "(SQLite: a recursive CTE; PostgreSQL: `generate_series`), `is_current` set on every "
        "row (each key has one version), the table's secondary indexes dropped before and "
        "rebuilt after it in the same transaction, then `ANALYZE` (PostgreSQL: "
        "`VACUUM ANALYZE`, what autovacuum does after a bulk insert; it also sets the "
        "visibility map the index-only counts use). No audit rows: this is a read "
        "benchmark, and the bulk write path (`put_memories`) is measured elsewhere. "
        f"LangGraph's store is filled by its own batch put (`abatch` of {LANGGRAPH_BATCH:,} "
        "`PutOp`s).",
        "",
    ]
    for note in result["notes"]:
        lines += [f"- {note}"]
    lines.append("")
    return "\n".join(lines)


async def postgres_version(url: str) -> str | None:
    import asyncpg

    from benchmarks.postgres import dsn

    conn = await asyncpg.connect(dsn(url))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else SIZES
    url = os.environ.get("ABATHUR_BENCH_POSTGRES_URL")
    with tempfile.TemporaryDirectory(prefix="abathur-scale-") as tmp:
        run = Run(sizes, args.samples, args.budget, 2 if args.quick else 5, Path(tmp))
        if "sqlite" in args.backends:
            await run.sqlite()
        pg_version = None
        if url and "postgresql" in args.backends:
            pg_version = await postgres_version(url)
            await run.postgres(url)
        elif "postgresql" in args.backends:
            run.notes.append("PostgreSQL not measured: ABATHUR_BENCH_POSTGRES_URL is not set.")
    if maybe_version("langgraph-checkpoint-postgres") is None:
        run.notes.append(
            "LangGraph's PostgreSQL store (langgraph-checkpoint-postgres) is not installed: "
            "there is no peer on PostgreSQL."
        )
    figures = [f.summary() for f in run.figures]
    return {
        "machine": machine(),
        "sizes": list(sizes),
        "samples": args.samples,
        "budget": args.budget,
        "warmup": run.warmup,
        "langgraph_sqlite": maybe_version("langgraph-checkpoint-sqlite"),
        "postgres_version": pg_version,
        "figures": figures,
        "fills": run.fills,
        "targets": targets(figures, list(sizes)),
        "notes": run.notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few calls")
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        dest="samples",
        help="calls per variant and size (default 200, quick 10)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of calls after which a variant stops (default 15, quick 1)",
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write the results")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 10 if args.quick else 200
    if args.budget is None:
        args.budget = 1.0 if args.quick else 15.0
    args.backends = set(args.backends.split(","))
    result = asyncio.run(main_async(args))
    report = write_results(args.out, "performance_scale", "performance_scale", result, render,
                           lambda path: plot(result, path))  # fmt: skip
    print_targets(result["targets"])
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
