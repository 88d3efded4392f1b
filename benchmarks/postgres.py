"""``make bench`` on PostgreSQL (``ABATHUR_BENCH_POSTGRES_URL``): abathur against
hand-written asyncpg (``pg_baselines.RawPostgres``), round trips per operation,
and the scale-out run (4 OS processes, each with its own ``Database``).

Each implementation gets a fresh schema on the same server, migrated by
abathur and prefilled with the same rows; the operations run interleaved call
by call (``Bench.interleave``). After the timed calls, a few more calls of
each operation run with the connections' round trips counted
(``round_trips.py``), and the statements of abathur's last call are kept.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from abathur.db.url import to_url
from abathur.infrastructure.database import Database
from benchmarks.pg_baselines import RawPostgres, _json_codecs
from benchmarks.report import Figure, quantile
from benchmarks.round_trips import RoundTrips, count_on, watch

if TYPE_CHECKING:
    from benchmarks.run import Bench

TASK_ID = "bench-task"
EVENT = {"type": "assistant_message", "author": "agent", "text": "x" * 240}
MEMORY_VALUE = {"fact": "the user prefers short answers", "confidence": 0.9, "tags": ["style"]}
SPREAD = 10  # sessions appended to, round robin
SEARCH_ROOT = "user:search"
SEARCH_SIZE = 2000
SEARCH_HITS = 100
PUT_KEYS = 50
GOAL = 1.5  # issue 16: every operation within 1.5x of hand-written asyncpg
COUNTED_CALLS = 3
PROCESSES = 4


def dsn(url: str) -> str:
    """The plain asyncpg DSN of an SQLAlchemy URL."""
    return to_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_schema(url: str, stack: AsyncExitStack) -> str:
    """A fresh schema, dropped when ``stack`` closes."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn(url))
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn(url))
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()

    stack.push_async_callback(drop)
    return schema


def open_database(url: str, schema: str) -> Database:
    return Database(url, connect_args={"server_settings": {"search_path": schema}})


async def prefill(url: str, schema: str) -> None:
    """The same starting rows in every implementation's schema (migrated first)."""
    async with open_database(url, schema):
        pass
    conn = await asyncpg.connect(dsn(url), server_settings={"search_path": schema})
    try:
        await _json_codecs(conn)
        stamp = datetime.now(UTC)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO tasks (id, prompt, agent_type, priority, status, input_data, "
                "submitted_at, last_updated_at) VALUES ($1, 'bench', 'general', 5, 'running', "
                "'{}', $2, $2)",
                TASK_ID,
                stamp,
            )
            sessions = {f"a{j}": 10 for j in range(SPREAD)} | {"g": 100}
            await conn.executemany(
                "INSERT INTO sessions (id, app_name, user_id, status, state, metadata, "
                "created_at, last_update_time) VALUES ($1, 'bench', 'u', 'active', '{}', '{}', "
                "$2, $2)",
                [(sid, stamp) for sid in sessions],
            )
            await conn.executemany(
                "INSERT INTO session_events (session_id, seq, event, created_at) "
                "VALUES ($1, $2, $3, $4)",
                [
                    (sid, seq, {**EVENT, "n": seq}, stamp)
                    for sid, length in sessions.items()
                    for seq in range(1, length + 1)
                ],
            )
            rows = [
                (f"{SEARCH_ROOT}:n{i % 10}", f"k{i}", {**MEMORY_VALUE, "i": i},
                 stamp + timedelta(microseconds=i))
                for i in range(SEARCH_SIZE)
            ] + [
                ("user:bench:put", f"p{i}", {**MEMORY_VALUE, "i": i}, stamp)
                for i in range(PUT_KEYS)
            ]  # fmt: skip
            await conn.executemany(
                "INSERT INTO memory_entries (namespace, key, value, memory_type, version, "
                "is_deleted, is_current, metadata, created_by, updated_by, created_at, "
                "updated_at) VALUES ($1, $2, $3, 'semantic', 1, false, true, '{}', 'bench', "
                "'bench', $4, $4)",
                rows,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


Calls = dict[str, Callable[[int], Awaitable[Any]]]  # implementation -> call of iteration i


def cases(db: Database, raw: RawPostgres) -> list[tuple[str, Calls]]:
    """Each operation as a call of iteration ``i``, for both implementations."""
    s, m = db.sessions, db.memory

    def both(
        ours: Callable[[int], Awaitable[Any]], theirs: Callable[[int], Awaitable[Any]]
    ) -> Calls:
        return {"abathur": ours, "asyncpg": theirs}

    def event(i: int) -> dict[str, Any]:
        return {**EVENT, "i": i}

    return [
        ("session create", both(
            lambda i: s.create_session(f"c{i}", "bench", "u"),
            lambda i: raw.create_session(f"c{i}", "bench", "u"))),
        ("append_event", both(
            lambda i: s.append_event(f"a{i % SPREAD}", event(i), state_delta={"session:k": i}),
            lambda i: raw.append_event(f"a{i % SPREAD}", event(i), {"session:k": i}))),
        ("get_session (100 events)", both(
            lambda i: s.get_session("g"),
            lambda i: raw.get_session("g"))),
        ("memory add (new key)", both(
            lambda i: m.add_memory("user:bench", f"n{i}", MEMORY_VALUE, "semantic", "bench",
                                   TASK_ID),
            lambda i: raw.add_memory("user:bench", f"n{i}", MEMORY_VALUE, "semantic", "bench",
                                     TASK_ID))),
        ("memory update (live key)", both(
            lambda i: m.update_memory("user:bench", f"n{i % 10}", {**MEMORY_VALUE, "i": i},
                                      "bench", TASK_ID),
            lambda i: raw.update_memory("user:bench", f"n{i % 10}", {**MEMORY_VALUE, "i": i},
                                        "bench", TASK_ID))),
        ("memory put (live key)", both(
            lambda i: m.put_memory("user:bench:put", f"p{i % PUT_KEYS}", {**MEMORY_VALUE, "i": i},
                                   "semantic", by="bench", task_id=TASK_ID),
            lambda i: raw.put_memory("user:bench:put", f"p{i % PUT_KEYS}",
                                     {**MEMORY_VALUE, "i": i}, "semantic", "bench", TASK_ID))),
        ("memory get latest", both(
            lambda i: m.get_memory("user:bench", "n3"),
            lambda i: raw.get_memory("user:bench", "n3"))),
        (f"prefix search, {SEARCH_HITS} of {SEARCH_SIZE}", both(
            lambda i: m.search_memories(SEARCH_ROOT, limit=SEARCH_HITS),
            lambda i: raw.search(SEARCH_ROOT, SEARCH_HITS))),
    ]  # fmt: skip


async def check_counter(raw: RawPostgres) -> dict[str, int]:
    """The counter on known cases: a one-statement read (statement cached)
    is 1; a transaction of two statements is BEGIN + 2 + COMMIT = 4."""
    counter = RoundTrips()
    count_on(raw.conn, counter)
    await raw.conn.fetchval("SELECT 1")
    await raw.conn.fetchval("SELECT 2")
    before = counter.count
    await raw.conn.fetchval("SELECT 1")
    one = counter.count - before
    before = counter.count
    async with raw.conn.transaction():
        await raw.conn.fetchval("SELECT 1")
        await raw.conn.fetchval("SELECT 2")
    two = counter.count - before
    assert (one, two) == (1, 4), (one, two)
    return {"one statement read": one, "transaction of two statements": two}


async def compare(bench: Bench, url: str) -> dict[str, Any]:
    """abathur against RawPostgres, interleaved; then round trips per call."""
    n = bench.n
    async with AsyncExitStack() as stack:
        schemas = {impl: await create_schema(url, stack) for impl in ("abathur", "asyncpg")}
        for schema in schemas.values():
            await prefill(url, schema)
        db = await stack.enter_async_context(open_database(url, schemas["abathur"]))
        raw = await RawPostgres.open(dsn(url), schemas["asyncpg"])
        stack.push_async_callback(raw.close)
        ops = cases(db, raw)
        getters = dict(ops)["get_session (100 events)"]
        got = {impl: await call(0) for impl, call in getters.items()}
        assert all(len(g["events"]) == 100 for g in got.values()), got
        start = len(bench.figures)
        await bench.interleave(
            [(op, list(calls.items()), {}) for op, calls in ops], [(i,) for i in range(n)]
        )
        figures = bench.figures[start:]
        del bench.figures[start:]
        found = {impl: await calls(n) for impl, calls in dict(ops)[ops[-1][0]].items()}
        assert all(len(f) == SEARCH_HITS for f in found.values()), found

        counters = {"abathur": RoundTrips(), "asyncpg": RoundTrips()}
        watch(db.engine, counters["abathur"])
        # and the connections the Storage keeps idle in autocommit (PostgreSQL
        # one-statement units), which the pool never checks out again
        for idle in db._idle_autocommit:
            count_on(idle.sync_connection.connection.driver_connection, counters["abathur"])  # type: ignore[union-attr]
        count_on(raw.conn, counters["asyncpg"])
        check = await check_counter(raw)
        count_on(raw.conn, counters["asyncpg"])
        trips: dict[tuple[str, str], list[int]] = {}
        statements: dict[str, dict[str, list[str]]] = {}
        for op, calls in ops:
            for impl, call in calls.items():
                counter = counters[impl]
                for i in range(n + 1, n + 1 + COUNTED_CALLS):
                    counter.log.clear()
                    counter.logging = True
                    before = counter.count
                    await call(i)
                    trips.setdefault((op, impl), []).append(counter.count - before)
                statements.setdefault(op, {})[impl] = list(counter.log)
                counter.logging = False
        for f in figures:
            counted = trips[(f.op, f.impl)]
            f.extra = {**f.extra, "round_trips": statistics.median(counted)}
        concurrent = await concurrent_appends(bench, db)
    summaries = [f.summary() for f in figures]
    return {
        "figures": summaries,
        "ratios": ratios(summaries),
        "round_trip_check": check,
        "statements": statements,
        "concurrent": concurrent,
    }


async def concurrent_appends(bench: Bench, db: Database) -> dict[str, Any]:
    """50 sessions x 20 appends at once through one Database (its pool)."""
    s = db.sessions
    for j in range(50):
        await s.create_session(f"conc{j}", "bench", "u")
    samples: list[float] = []

    async def writer(sid: str) -> None:
        for i in range(20):
            start = time.perf_counter_ns()
            await s.append_event(sid, {**EVENT, "i": i}, {"session:x": i})
            samples.append((time.perf_counter_ns() - start) / 1000)

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(writer(f"conc{j}") for j in range(50)))
    wall = time.perf_counter() - start
    stored = [
        len(found["events"]) if (found := await s.get_session(f"conc{j}")) else 0 for j in range(50)
    ]
    figure = Figure(
        "50 sessions x 20 concurrent appends",
        "abathur",
        samples,
        wall_s=wall,
        extra={"lost_events": 50 * 20 - sum(stored)},
    )
    return figure.summary()


def ratios(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_op: dict[str, dict[str, dict[str, Any]]] = {}
    for f in figures:
        by_op.setdefault(f["op"], {})[f["impl"]] = f
    rows = []
    for op, impls in by_op.items():
        ours, raw = impls["abathur"], impls["asyncpg"]
        ratio = round(ours["p50_us"] / raw["p50_us"], 2)
        rows.append({"op": op, "abathur": ours, "asyncpg": raw, "x_asyncpg": ratio,
                     "met": ratio <= GOAL})  # fmt: skip
    return rows


# ------------------------------------------------------------------ scale-out


def _scale_worker(url: str, schema: str, phase: str, index: int, seconds: float,
                  start_at: float) -> dict[str, Any]:  # fmt: skip
    """One OS process of the scale-out run (its own interpreter and Database)."""
    return asyncio.run(_scale_work(url, schema, phase, index, seconds, start_at))


async def _scale_work(
    url: str, schema: str, phase: str, index: int, seconds: float, start_at: float
) -> dict[str, Any]:
    samples: list[float] = []
    done = {"sessions": 0, "events": 0, "puts": 0}
    per_key: dict[str, int] = {}
    async with open_database(url, schema) as db:
        await db.sessions.get_session("warm-up")  # a connection, before the clock starts
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop:
            begin = time.perf_counter_ns()
            if phase == "sessions":
                sid = f"p{index}-s{i // 10}"
                if i % 10 == 0:
                    await db.sessions.create_session(sid, "bench", "u")
                    done["sessions"] += 1
                else:
                    await db.sessions.append_event(sid, {**EVENT, "i": i}, {"session:k": i})
                    done["events"] += 1
            else:
                # distinct: each process its own keys; shared: every process the same 10.
                key = f"p{index}-k{i % 10}" if phase == "memory, distinct keys" else f"k{i % 10}"
                await db.memory.put_memory(
                    "user:scale", key, {"i": i, "by": index}, "semantic",
                    by=f"p{index}", task_id=TASK_ID,
                )  # fmt: skip
                done["puts"] += 1
                per_key[key] = per_key.get(key, 0) + 1
            samples.append((time.perf_counter_ns() - begin) / 1000)
            i += 1
    return {"process": index, "ops": len(samples), "samples_us": samples, **done,
            "per_key": per_key}  # fmt: skip


async def scale_out(url: str, seconds: float, start_delay: float = 3.0) -> list[dict[str, Any]]:
    """``PROCESSES`` OS processes write to one server for ``seconds`` per phase:
    sessions (create, then 9 appends each), put_memory of keys of each
    process's own, put_memory of 10 keys every process writes. Afterwards the
    rows are counted: every session, event, version and audit row a process
    was told was written is there, and versions and seqs have no gaps."""
    context = multiprocessing.get_context("spawn")
    out = []
    phases = ("sessions", "memory, distinct keys", "memory, shared keys")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        for phase in phases:
            async with AsyncExitStack() as stack:
                schema = await create_schema(url, stack)
                await prefill(url, schema)
                loop = asyncio.get_running_loop()
                start_at = time.time() + start_delay  # after every process has started
                runs = await asyncio.gather(*(
                    loop.run_in_executor(pool, _scale_worker, url, schema, phase, p, seconds,
                                         start_at)
                    for p in range(PROCESSES)
                ))  # fmt: skip
                stored = await _stored(url, schema)
            out.append(_scale_summary(phase, seconds, runs, stored))
    return out


async def _stored(url: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn(url), server_settings={"search_path": schema})
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM sessions WHERE id LIKE 'p%') AS sessions, "
            "(SELECT count(*) FROM session_events WHERE session_id LIKE 'p%') AS events, "
            "(SELECT count(*) FROM (SELECT session_id FROM session_events "
            " WHERE session_id LIKE 'p%' GROUP BY session_id "
            " HAVING max(seq) <> count(*) OR min(seq) <> 1) AS g) AS seq_gaps, "
            "(SELECT count(*) FROM memory_entries WHERE namespace = 'user:scale') AS versions, "
            "(SELECT count(*) FROM (SELECT key FROM memory_entries WHERE namespace = 'user:scale' "
            " GROUP BY key HAVING max(version) <> count(*) OR min(version) <> 1) AS g) "
            " AS version_gaps, "
            "(SELECT count(*) FROM audit WHERE memory_namespace = 'user:scale') AS audit_rows"
        )
        return dict(row)
    finally:
        await conn.close()


def _scale_summary(
    phase: str, seconds: float, runs: list[dict[str, Any]], stored: dict[str, int]
) -> dict[str, Any]:
    every = [s for r in runs for s in r["samples_us"]]
    if phase == "sessions":
        expected = {"sessions": sum(r["sessions"] for r in runs),
                    "events": sum(r["events"] for r in runs)}  # fmt: skip
        lost = sum(expected[k] - stored[k] for k in expected)
        gaps = stored["seq_gaps"]
    else:
        puts = sum(r["puts"] for r in runs)
        expected = {"versions": puts, "audit_rows": puts}
        lost = sum(expected[k] - stored[k] for k in expected)
        gaps = stored["version_gaps"]
    return {
        "phase": phase,
        "processes": len(runs),
        "seconds": seconds,
        "per_process": [
            {
                "process": r["process"],
                "ops": r["ops"],
                "ops_per_s": round(r["ops"] / seconds, 1),
                "p50_us": round(quantile(r["samples_us"], 0.5), 1) if r["samples_us"] else None,
                "p99_us": round(quantile(r["samples_us"], 0.99), 1) if r["samples_us"] else None,
            }
            for r in runs
        ],
        "ops": len(every),
        "ops_per_s": round(len(every) / seconds, 1),
        "p50_us": round(quantile(every, 0.5), 1) if every else None,
        "p99_us": round(quantile(every, 0.99), 1) if every else None,
        "expected": expected,
        "stored": stored,
        "lost": lost,
        "gaps": gaps,
    }


async def run(bench: Bench, url: str, seconds: float) -> dict[str, Any]:
    result = await compare(bench, url)
    result["scale_out"] = await scale_out(url, seconds, 1.5 if bench.quick else 3.0)
    result["server"] = to_url(url).render_as_string(hide_password=True)
    return result


# ------------------------------------------------------------------ report


def targets(pg: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        {
            "target": f"PostgreSQL {r['op']}: p50 within {GOAL:g}x of hand-written asyncpg",
            "measured": f"{r['abathur']['p50_us']:,.0f} us vs {r['asyncpg']['p50_us']:,.0f} us "
            f"= {r['x_asyncpg']}x ({r['abathur']['round_trips']:g} vs "
            f"{r['asyncpg']['round_trips']:g} round trips)",
            "met": r["met"],
        }
        for r in pg["ratios"]
    ]
    for s in pg["scale_out"]:
        out.append(
            {
                "target": f"PostgreSQL scale-out, {s['processes']} processes, {s['phase']}: "
                "nothing lost, no gaps",
                "measured": f"{s['ops_per_s']:,.0f} ops/s, p99 {s['p99_us'] / 1000:.1f} ms, "
                f"lost {s['lost']}, gaps {s['gaps']}",
                "met": s["lost"] == 0 and s["gaps"] == 0,
            }
        )
    return out


def render(pg: dict[str, Any]) -> list[str]:
    check = pg["round_trip_check"]
    lines = [
        "## PostgreSQL",
        "",
        f"Server: `{pg['server']}`. abathur and hand-written asyncpg",
        "(`benchmarks/pg_baselines.py`: the same statements, on one connection) each on a",
        "fresh schema of that server with the same rows, interleaved call by call, each",
        "first in turn. Round",
        "trips per call (median of",
        f"{COUNTED_CALLS} calls after the timed ones): every request an asyncpg connection",
        "sends and waits for, counted at its protocol (`benchmarks/round_trips.py`): each",
        "statement executed, each statement prepared (none once the caches are warm), and",
        "`BEGIN`/`COMMIT`. The counter checks itself first: a one-statement read counts",
        f"{check['one statement read']}, a transaction of two statements "
        f"{check['transaction of two statements']}.",
        "",
        "| operation | abathur p50 | p99 | round trips | asyncpg p50 | p99 | round trips "
        f"| x asyncpg | within {GOAL:g}x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in pg["ratios"]:
        a, b = r["abathur"], r["asyncpg"]
        lines.append(
            f"| {r['op']} | {a['p50_us']:,.0f} | {a['p99_us']:,.0f} | {a['round_trips']:g} | "
            f"{b['p50_us']:,.0f} | {b['p99_us']:,.0f} | {b['round_trips']:g} | "
            f"{r['x_asyncpg']} | {'yes' if r['met'] else '**no**'} |"
        )
    c = pg["concurrent"]
    lines += [
        "",
        f"{c['op']} through one `Database`: wall {c['wall_s'] * 1000:,.1f} ms, "
        f"p50 {c['p50_us']:,.0f} us, p99 {c['p99_us']:,.0f} us, lost {c['lost_events']}.",
        "",
        "### Scale-out",
        "",
        f"{PROCESSES} OS processes, each with its own `Database`, write to the server at once",
        "for the time given, one phase after the other, each phase on a fresh schema:",
        "sessions (each created, then appended to 9 times), `put_memory` of keys of each",
        "process's own, and `put_memory` of 10 keys every process writes. Then the rows are",
        "counted: lost = what the processes were told was written minus what is stored;",
        "gaps = sessions whose seqs, or keys whose versions, are not 1..n.",
        "",
        "| phase | process | ops | ops/s | p50 us | p99 us |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in pg["scale_out"]:
        for p in s["per_process"]:
            lines.append(
                f"| {s['phase']} | {p['process']} | {p['ops']:,} | {p['ops_per_s']:,.0f} | "
                f"{p['p50_us'] or 0:,.0f} | {p['p99_us'] or 0:,.0f} |"
            )
        lines.append(
            f"| {s['phase']} | **all** | {s['ops']:,} | {s['ops_per_s']:,.0f} | "
            f"{s['p50_us'] or 0:,.0f} | {s['p99_us'] or 0:,.0f} |"
        )
    lines += ["", "| phase | expected | stored | lost | gaps |", "|---|---|---|---:|---:|"]
    for s in pg["scale_out"]:
        stored = {k: s["stored"][k] for k in s["expected"]}
        lines.append(f"| {s['phase']} | {s['expected']} | {stored} | {s['lost']} | {s['gaps']} |")
    lines += [
        "",
        "### Round trips of each call, statement by statement",
        "",
        "What abathur's last counted call of each operation sent (the asyncpg baseline's",
        "in the JSON), one line a round trip:",
        "",
    ]
    for op, by_impl in pg["statements"].items():
        lines.append(f"- {op} ({len(by_impl['abathur'])}):")
        for sent in by_impl["abathur"]:
            lines.append(f"  - `{sent if len(sent) < 160 else sent[:157] + '...'}`")
    return lines
