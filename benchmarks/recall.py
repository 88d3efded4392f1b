"""``make bench``, semantic recall (issue 12): query searches and writes with an embedder.

For subtrees of 1,000 / 10,000 / 100,000 memories with 384-dim embeddings,
on SQLite (a file) and, with ``ABATHUR_BENCH_POSTGRES_URL``, PostgreSQL:

- ``query search (warm)``: ``search_memories(root, limit=10, query=...)``
  with the service's vector cache filled (the first, cold search is reported
  alone, ``cold_ms``);
- ``add_memory``: without an embedder, and with ``HashingEmbedder`` minus the
  time ``HashingEmbedder.embed_value`` takes for the same value measured
  alone (the issue's "embedding time itself excluded").

Vectors of the prefilled memories are seeded random normals (the arithmetic
does not depend on what they mean); the query embedder returns one too.
Writes ``docs/performance_recall.json``, ``docs/performance_recall.md`` and,
with matplotlib, ``docs/performance_recall.png`` (p50 against subtree size).
``--quick`` runs small sizes and few iterations (the smoke test uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, text

from abathur.embeddings import Embedder, HashingEmbedder
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService
from abathur.repositories import statistics
from abathur.schema.models import MemoryEmbedding, MemoryEntry
from benchmarks.report import Figure, machine, print_targets, quantile, write_results

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIMS = 384
MODEL = "bench-random"
SUBTREE = "user:bench"
TASK = "bench-task"
VALUE = {"fact": "the user prefers short answers in code review", "confidence": 0.9}


def summary(op: str, backend: str, samples_us: list[float], **extra: Any) -> dict[str, Any]:
    """``Figure.summary`` with the backend in place of the implementation."""
    figure = Figure(op, backend, samples_us, extra=extra).summary()
    del figure["wall_s"]
    return {"backend": figure.pop("impl"), **figure}


async def timed(fn: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def random_embedder(seed: int) -> Embedder:
    rng = np.random.default_rng(seed)

    def embed(texts: list[str]) -> list[list[float]]:
        return [list(map(float, rng.standard_normal(DIMS))) for _ in texts]

    return Embedder(embed, DIMS, model=MODEL)


# ------------------------------------------------------------------ data


def _rows(size: int, start_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``size`` memories in the subtree (ten sub-namespaces) and their embeddings."""
    rng = np.random.default_rng(size)
    vectors = rng.standard_normal((size, DIMS)).astype("<f4")
    entries, embeddings = [], []
    for i in range(size):
        row_id = start_id + i
        entries.append(
            {
                "id": row_id,
                "namespace": f"{SUBTREE}:n{i % 10}",
                "key": f"k{i}",
                "value": {**VALUE, "i": i},
                "memory_type": "semantic",
                "version": 1,
                "is_deleted": False,
                "is_current": True,
                "metadata_": {},
                "created_by": "bench",
                "updated_by": "bench",
            }
        )
        embeddings.append(
            {
                "memory_entry_id": row_id,
                "model": MODEL,
                "dims": DIMS,
                "field": "$",
                "vector": vectors[i].tobytes(),
            }
        )
    return entries, embeddings


async def prefill(db: Database, size: int) -> None:
    """The subtree's memories (other subtrees hold as many again) and their vectors."""
    await db.tasks.create_task("bench", id=TASK)
    entries, embeddings = _rows(size, 1)
    # As many memories elsewhere, so the subtree is half the table.
    others = [
        {**e, "id": e["id"] + size, "namespace": f"user:other:n{e['id'] % 10}"} for e in entries
    ]
    batch = 2000
    for rows, model in ((entries + others, MemoryEntry), (embeddings, MemoryEmbedding)):
        for start in range(0, len(rows), batch):
            async with db.transaction() as session:
                await session.execute(insert(model), rows[start : start + batch])
    if db.dialect == "postgresql":
        async with db.transaction() as session:
            await session.execute(
                text("SELECT setval(pg_get_serial_sequence('memory_entries', 'id'), :n)"),
                {"n": 2 * size},
            )
    # The statistics a put_memories load of these rows leaves, by the same
    # statement (``refresh_statistics``; PostgreSQL: VACUUM (ANALYZE), which
    # also sets the visibility map, as autovacuum would later).
    await db.outside_transaction(
        lambda conn: statistics.analyze(conn, ["memory_entries", "memory_embeddings"])
    )
    async with db.transaction(write=False) as session:
        highest = await session.scalar(
            select(MemoryEmbedding.memory_entry_id).order_by(MemoryEmbedding.memory_entry_id.desc())
        )
        assert highest == size


# ------------------------------------------------------------------ cases


async def query_search(db: Database, backend: str, size: int, iterations: int) -> dict[str, Any]:
    await prefill(db, size)
    memory = MemoryService(db, embedder=random_embedder(7))
    start = time.perf_counter_ns()
    found = await memory.search_memories(SUBTREE, limit=10, query="code review")
    cold_ms = (time.perf_counter_ns() - start) / 1e6
    assert len(found) == 10
    # The largest subtrees get fewer iterations (each costs 10x the one before).
    count = iterations if size <= 10_000 else max(10, iterations // 5)
    samples = await timed(
        lambda: memory.search_memories(SUBTREE, limit=10, query="code review"), count
    )
    return summary("query search (warm)", backend, samples, subtree=size, cold_ms=round(cold_ms, 1))


async def writes(db: Database, backend: str, iterations: int) -> list[dict[str, Any]]:
    await db.tasks.create_task("bench", id=TASK)
    hashing = HashingEmbedder(DIMS)
    plain = MemoryService(db)
    embedding = MemoryService(db, embedder=hashing)
    counter = iter(range(10**9))

    def add(service: MemoryService) -> Callable[[], Awaitable[Any]]:
        return lambda: service.add_memory(
            "user:w", f"k{next(counter)}", VALUE, "semantic", "bench", TASK
        )

    # Interleave the two kinds of write so that both see the same table sizes.
    without, with_embedder = [], []
    for _ in range(iterations):
        without += await timed(add(plain), 1)
        with_embedder += await timed(add(embedding), 1)
    embed_only = await timed(lambda: hashing.embed_value(VALUE), iterations)
    embed_p50 = quantile(embed_only, 0.5)
    excluded = [max(s - embed_p50, 0.0) for s in with_embedder]
    base = quantile(without, 0.5)
    return [
        summary("add_memory, no embedder", backend, without),
        summary("HashingEmbedder.embed_value alone", backend, embed_only),
        summary(
            "add_memory, HashingEmbedder, embedding time excluded",
            backend,
            excluded,
            ratio_to_no_embedder=round(quantile(excluded, 0.5) / base, 2),
        ),
    ]


# ------------------------------------------------------------------ backends


async def open_db(
    backend: str, workdir: Path, stack: AsyncExitStack, pg_url: str | None
) -> Database:
    if backend == "sqlite":
        db = Database(workdir / f"recall-{uuid.uuid4().hex[:8]}.db")
    else:
        assert pg_url
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = Database(pg_url)
        async with admin.transaction() as session:
            await session.execute(text(f'CREATE SCHEMA "{schema}"'))

        async def drop() -> None:
            async with admin.transaction() as session:
                await session.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.close()

        stack.push_async_callback(drop)
        db = Database(pg_url, connect_args={"server_settings": {"search_path": schema}})
    await db.initialize()
    stack.push_async_callback(db.close)
    return db


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = (200, 1000) if args.quick else (1000, 10000, 100000)
    pg_url = os.environ.get("ABATHUR_BENCH_POSTGRES_URL")
    backends = ["sqlite", *(["postgresql"] if pg_url else [])]
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="abathur-recall-") as tmp:
        for backend in backends:
            for size in sizes:
                async with AsyncExitStack() as stack:
                    db = await open_db(backend, Path(tmp), stack, pg_url)
                    figures.append(await query_search(db, backend, size, args.iterations))
                    print(f"{backend} query search over {size}: {figures[-1]}", file=sys.stderr)
            async with AsyncExitStack() as stack:
                db = await open_db(backend, Path(tmp), stack, pg_url)
                figures += await writes(db, backend, args.iterations)
    return {
        "machine": {**machine(), "numpy": np.__version__},
        "iterations": args.iterations,
        "dims": DIMS,
        "figures": figures,
        "targets": targets(figures, sizes),
    }


def targets(figures: list[dict[str, Any]], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for backend in sorted({f["backend"] for f in figures}):
        search = {
            f["subtree"]: f
            for f in figures
            if f["backend"] == backend and f["op"] == "query search (warm)"
        }
        if 10000 in search:
            p50_ms = search[10000]["p50_us"] / 1000
            out.append(
                {
                    "target": f"{backend}: query search over 10,000 memories, "
                    "p50 under 10 ms (warm)",
                    "measured": f"{p50_ms:.1f} ms",
                    "met": p50_ms < 10,
                }
            )
        ordered = sorted(search)
        if len(ordered) >= 2:
            # Growth no worse than linear: per-memory cost does not rise with size.
            first, last = search[ordered[0]], search[ordered[-1]]
            per_small = first["p50_us"] / ordered[0]
            per_large = last["p50_us"] / ordered[-1]
            out.append(
                {
                    "target": f"{backend}: query search grows no worse than linearly",
                    "measured": (
                        f"{per_small:.2f} us/memory at {ordered[0]:,}, "
                        f"{per_large:.2f} us/memory at {ordered[-1]:,}"
                    ),
                    "met": per_large <= per_small * 1.1,
                }
            )
        ratio = next(
            (
                f["ratio_to_no_embedder"]
                for f in figures
                if f["backend"] == backend and "ratio_to_no_embedder" in f
            ),
            None,
        )
        if ratio is not None:
            out.append(
                {
                    "target": f"{backend}: add_memory with HashingEmbedder (embedding excluded) "
                    "at most 1.3x of without",
                    "measured": f"{ratio:.2f}x",
                    "met": ratio <= 1.3,
                }
            )
    return out


# ------------------------------------------------------------------ output


def plot(figures: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for backend, style in (("sqlite", "o-"), ("postgresql", "s--")):
        points = sorted(
            (f["subtree"], f["p50_us"] / 1000)
            for f in figures
            if f["backend"] == backend and "subtree" in f
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=backend)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="memories in the subtree (384-dim embeddings)",
        ylabel="p50 latency (ms)",
        title="query search, vector cache warm",
    )
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(result: dict[str, Any], png: str | None) -> str:
    m = result["machine"]
    lines = [
        "# Performance: semantic recall (issue 12)",
        "",
        "Generated by `python -m benchmarks.recall` (part of `make bench`); every figure",
        "is from this run. Latencies in microseconds unless marked.",
        "",
        f"Machine: Python {m['python']}, {m['platform']}, {m['cores']} CPUs "
        f"(load average at the end {', '.join(f'{x:.1f}' for x in m['load_average'])}), "
        f"SQLite {m['sqlite']}, numpy {m['numpy']}. {result['dims']} dims, "
        f"{result['iterations']} iterations per case.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
            for t in result["targets"]
        ],
        "",
        "## Query search",
        "",
        '`search_memories("user:bench", limit=10, query=...)`; the subtree is half of',
        "`memory_entries` (the other half lies in another subtree); cold = the first",
        "search of a new service, which reads every vector of the subtree.",
        "",
        "| backend | memories in subtree | p50 | p99 | cold (ms) |",
        "|---|---|---|---|---|",
    ]
    for f in result["figures"]:
        if "subtree" in f:
            lines.append(
                f"| {f['backend']} | {f['subtree']:,} | {f['p50_us']:,.0f} | "
                f"{f['p99_us']:,.0f} | {f['cold_ms']:,.1f} |"
            )
    lines += ["", "## Writes", "", "| backend | operation | p50 | p99 |", "|---|---|---|---|"]
    for f in result["figures"]:
        if "subtree" not in f:
            lines.append(
                f"| {f['backend']} | {f['op']} | {f['p50_us']:,.0f} | {f['p99_us']:,.0f} |"
            )
    if png:
        lines += ["", f"![query search p50 against subtree size]({png})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations")
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write the results")
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 10 if args.quick else 100
    result = asyncio.run(run(args))
    write_results(
        args.out, "performance_recall", "performance_recall", result, render,
        lambda path: plot(result["figures"], path),
    )  # fmt: skip
    print_targets(result["targets"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
