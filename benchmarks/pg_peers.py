"""The framework peers of ``make bench`` on PostgreSQL (issues 13 and 16):
abathur's ADK session service against ADK's own ``DatabaseSessionService``,
and ``AbathurStore`` (and abathur's core memory calls) against LangGraph's
own ``AsyncPostgresStore``, on one server.

Each implementation gets a fresh schema of its own (``postgres.create_schema``;
ADK and LangGraph create their tables in it through the connection's
``search_path``), the same starting rows, and the operations run interleaved
call by call (``Bench.interleave``), as the SQLite peers do. The workloads are
those of the SQLite peers (``Bench.adk``, ``Bench.langgraph``) plus issue 16's:
a put of a new key, and a search of the newest 100 of 2,000 items of a subtree,
through the adapter and through the core (``put_memory`` and
``search_memories``, which write the same version and audit row).

Skipped, with the reason in the report, when google-adk, or
langgraph-checkpoint-postgres and psycopg, are not installed (the ``bench``
and ``dev`` extras install them; ``make test-lowest`` does not).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from benchmarks import peers
from benchmarks.postgres import create_schema, dsn, open_database

if TYPE_CHECKING:
    from benchmarks.run import Bench

LANGGRAPH_GOAL = 1.5  # issue 13: within 1.5x of LangGraph's own store
ADK_GOAL = 5.0  # issue 13: at least 5x faster than ADK's own service
PEER_NAMES = {
    "adk": ("ADK DatabaseSessionService", ADK_GOAL),
    "langgraph": ("LangGraph AsyncPostgresStore", 1 / LANGGRAPH_GOAL),
}


def psycopg_dsn(url: str, schema: str) -> str:
    """The libpq connection string of an SQLAlchemy URL, its search_path set to ``schema``."""
    options = urllib.parse.quote(f"-c search_path={schema}")
    return f"{dsn(url)}?options={options}"


async def adk(bench: Bench, url: str) -> tuple[list[Any], str | None]:
    """ADK's session service on PostgreSQL: create, append_event (a 240-character
    message and a state delta), get_session of 100 such events."""
    try:
        event, DatabaseSessionService, AbathurSessionService = peers.classes()
    except ImportError as exc:  # the bench and dev extras install google-adk
        return [], f"ADK not measured: {exc}"
    async with AsyncExitStack() as stack:
        schemas = {impl: await create_schema(url, stack) for impl in ("abathur", "adk")}
        db = await stack.enter_async_context(open_database(url, schemas["abathur"]))
        services: dict[str, Any] = {
            "abathur": AbathurSessionService(db),
            "adk": DatabaseSessionService(
                url, connect_args={"server_settings": {"search_path": schemas["adk"]}}
            ),
        }
        for svc in services.values():
            stack.push_async_callback(svc.close)
        figures = await peers.measure(bench, services, event)
    return figures, None


async def langgraph(bench: Bench, url: str) -> tuple[list[Any], str | None]:
    """LangGraph's store on PostgreSQL: put (a new key; an update of one of 50
    keys: abathur keeps every version and an audit row, LangGraph's store
    overwrites), get of one of 1,000 items, a search of a namespace of 100
    (newest 10) without and with a filter, and a search of the newest 100 of a
    subtree of 2,000; the puts and the large search also through the core."""
    try:
        from langgraph.store.base import PutOp
        from langgraph.store.postgres.aio import AsyncPostgresStore

        from abathur.integrations.langgraph import AbathurStore, abathur_namespace
    except ImportError as exc:  # the bench and dev extras install langgraph-checkpoint-postgres
        return [], f"LangGraph on PostgreSQL not measured: {exc}"
    seed, subtree = (100, 200) if bench.quick else (1000, 2000)
    hits = 20 if bench.quick else 100
    async with AsyncExitStack() as stack:
        schemas = {impl: await create_schema(url, stack) for impl in ("abathur", "langgraph")}
        db = await stack.enter_async_context(open_database(url, schemas["abathur"]))
        ours = AbathurStore(db)
        await ours.asetup()
        stack.push_async_callback(ours.aclose)
        peer = await stack.enter_async_context(
            AsyncPostgresStore.from_conn_string(psycopg_dsn(url, schemas["langgraph"]))
        )
        await peer.setup()
        stores: dict[str, Any] = {"abathur": ours, "langgraph": peer}

        items = [
            (("bench", f"g{j % 10}"), f"k{j}", peers.langgraph_value(j)) for j in range(seed)
        ] + [
            (("big", f"n{j % 10}"), f"k{j}", {"i": j, "text": "x" * 100}) for j in range(subtree)
        ] + [
            (("bench", "put"), f"p{j}", {"i": j, "text": "x" * 100}) for j in range(50)
        ]  # fmt: skip
        # One bulk load each (abathur: put_memories, a version and an audit
        # row per item, as a put writes), in the order given.
        await db.memory.put_memories(
            [
                {
                    "namespace": abathur_namespace(ns),
                    "key": key,
                    "value": value,
                    "memory_type": ours.memory_type,
                    "by": ours.actor,
                    "task_id": ours.task_id,
                }
                for ns, key, value in items
            ]
        )
        await peer.abatch([PutOp(ns, key, value) for ns, key, value in items])
        for schema in schemas.values():
            await _analyze(url, schema)

        memory = db.memory
        put_root = abathur_namespace(("bench", "put"))
        new_root = abathur_namespace(("bench", "new"))
        big_root = abathur_namespace(("big",))

        def put_new(impl: str) -> Callable[[int], Awaitable[Any]]:
            store = stores[impl]
            return lambda i: store.aput(("bench", "new"), f"n{i}", {"i": i, "text": "x" * 100})

        def big(impl: str) -> Callable[[int], Awaitable[Any]]:
            store = stores[impl]
            return lambda i: store.asearch(("big",), limit=hits)

        # The core: the same version and audit row as the adapter's put, and
        # the same search, without the adapter's conversions.
        def core_put(impl: str) -> Callable[[int], Awaitable[Any]]:
            if impl == "langgraph":
                return lambda i: peer.aput(
                    ("bench", "put"), f"p{i % 50}", {"i": i, "text": "x" * 100}
                )
            return lambda i: memory.put_memory(
                put_root, f"p{i % 50}", {"i": i, "text": "x" * 100}, ours.memory_type,
                by=ours.actor, task_id=ours.task_id,
            )  # fmt: skip

        def core_put_new(impl: str) -> Callable[[int], Awaitable[Any]]:
            if impl == "langgraph":
                return lambda i: peer.aput(("bench", "new"), f"c{i}", {"i": i, "text": "x" * 100})
            return lambda i: memory.put_memory(
                new_root, f"c{i}", {"i": i, "text": "x" * 100}, ours.memory_type,
                by=ours.actor, task_id=ours.task_id,
            )  # fmt: skip

        def core_big(impl: str) -> Callable[[int], Awaitable[Any]]:
            if impl == "langgraph":
                return big(impl)
            return lambda i: memory.search_memories(big_root, limit=hits)

        figures = await peers.interleaved(
            bench,
            stores,
            [
                ("LangGraph put (new key)", put_new),
                *peers.langgraph_ops(stores, seed),
                (f"LangGraph search ({hits} of {subtree})", big),
                ("core put_memory (new key) vs LangGraph put", core_put_new),
                ("core put_memory (update) vs LangGraph put", core_put),
                (f"core search_memories ({hits} of {subtree}) vs LangGraph search", core_big),
            ],
        )
        for impl, store in stores.items():  # both hold the same items
            found = await store.asearch(("bench", "g0"), filter={"tag": "even"}, limit=100)
            assert len(found) == seed // 20, (impl, len(found))
            found = await store.asearch(("big",), limit=hits)
            assert len(found) == hits, (impl, len(found))
    return figures, None


async def _analyze(url: str, schema: str) -> None:
    """Statistics after the bulk load, for both alike (issue 16: before ANALYZE
    every implementation got bad plans)."""
    import asyncpg

    conn = await asyncpg.connect(dsn(url), server_settings={"search_path": schema})
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def run(bench: Bench, url: str) -> dict[str, Any]:
    """Both peers; each part that cannot be measured says why in ``notes``."""
    figures: list[Any] = []
    notes: list[str] = []
    for part in (adk, langgraph):
        found, note = await part(bench, url)
        figures += found
        if note:
            notes.append(note)
    summaries = [f.summary() for f in figures]
    return {"ratios": ratios(summaries), "notes": notes}


def ratios(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per operation: abathur's and the peer's figures, how many times faster
    abathur's p50 is, and whether the issue's goal is met."""
    by_op: dict[str, dict[str, dict[str, Any]]] = {}
    for f in figures:
        by_op.setdefault(f["op"], {})[f["impl"]] = f
    rows = []
    for op, impls in by_op.items():
        (other,) = [impl for impl in impls if impl != "abathur"]
        name, goal_x = PEER_NAMES[other]
        raw = impls[other]["p50_us"] / impls["abathur"]["p50_us"]
        rows.append(
            {"op": op, "abathur": impls["abathur"], "peer": impls[other], "peer_name": name,
             "goal_x": goal_x, "x_faster": round(raw, 2), "met": raw >= goal_x}
        )  # fmt: skip
    return rows


def goal(r: dict[str, Any]) -> str:
    if r["goal_x"] >= 1:
        return f"abathur at least {r['goal_x']:g}x faster than {r['peer_name']}"
    return f"abathur within {1 / r['goal_x']:g}x of {r['peer_name']}"


def targets(peers: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "target": f"PostgreSQL {r['op']}: {goal(r)} (p50)",
            "measured": f"{r['abathur']['p50_us']:,.0f} us vs {r['peer']['p50_us']:,.0f} us "
            f"= {r['x_faster']}x",
            "met": r["met"],
        }
        for r in peers["ratios"]
    ]


def render(peers: dict[str, Any] | None) -> list[str]:
    lines = ["### Peers on PostgreSQL: Google ADK and LangGraph", ""]
    if peers is None:
        return [*lines, "Not measured in this run."]
    if peers["ratios"]:
        lines += [
            "`AbathurSessionService` against ADK's own `DatabaseSessionService`, and",
            "`AbathurStore` against LangGraph's own `AsyncPostgresStore` (psycopg, one",
            "connection), each on a fresh schema of the server, the same rows loaded in bulk",
            "and `ANALYZE`d, interleaved call by call, each first in turn",
            "(`benchmarks/pg_peers.py`). abathur keeps",
            "every version and an audit row of each put; LangGraph's store overwrites the row.",
            "The `core` rows run abathur's `put_memory` / `search_memories` (the same writes",
            "and reads as the adapter's) against the same LangGraph call.",
            "",
            "| operation | peer | abathur p50 | p99 | peer p50 | p99 | abathur faster by | goal |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in peers["ratios"]:
            a, b = r["abathur"], r["peer"]
            lines.append(
                f"| {r['op']} | {r['peer_name']} | {a['p50_us']:,.0f} | {a['p99_us']:,.0f} | "
                f"{b['p50_us']:,.0f} | {b['p99_us']:,.0f} | {r['x_faster']}x | "
                f"{goal(r)}: {'met' if r['met'] else '**missed**'} |"
            )
    for note in peers["notes"]:
        lines += ["", note]
    return lines
