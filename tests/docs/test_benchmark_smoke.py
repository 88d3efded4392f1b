"""`make bench` keeps working: a few iterations of every case, no timing asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from benchmarks import bulk, pg_peers
from benchmarks import postgres as pg
from benchmarks.pg_baselines import RawPostgres
from benchmarks.round_trips import RoundTrips, watch
from benchmarks.run import EVENT, IMPLS, Bench, Contestants, main, migrated_file, prefill


def test_quick_benchmark_writes_results_report_and_loses_nothing(tmp_path: Path) -> None:
    assert main(["--quick", "--iterations", "5", "--out", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "performance_milestone2.json").read_text())
    ops: dict[str, set[str]] = {}
    for figure in result["figures"]:
        ops.setdefault(figure["op"], set()).add(figure["impl"])
        assert figure["p50_us"] > 0 and figure["p99_us"] >= figure["p50_us"]
        assert figure.get("lost_events", 0) == 0
    # Issue 11's retrieval cases have no hand-written baseline: abathur alone.
    retrieval = [op for op in ops if op.startswith("retrieval: ")]
    assert len(retrieval) == 10 and all(ops[op] == {"abathur"} for op in retrieval), ops
    single = [op for op in ops if "concurrent" not in op and op not in retrieval]
    assert all(ops[op] == set(IMPLS) for op in single), ops
    assert result["explain"] and all(not e["full_scan"] for e in result["explain"])
    named = {t["target"] for t in result["targets"]}
    assert "200 concurrent sessions x appends: p99 under 50 ms, nothing lost" in named
    assert len([t for t in named if t.startswith("issue 11: ")]) == 5, named
    report = (tmp_path / "performance_validation_milestone2.md").read_text()
    assert "## Targets" in report and "## Index usage" in report
    # The ADK and LangGraph peers (the dev and bench extras install google-adk and
    # langgraph-checkpoint-sqlite).
    assert {r["op"] for r in result["peers"]} == {
        "ADK create_session",
        "ADK append_event",
        "ADK get_session (100 events)",
        "LangGraph put (update)",
        "LangGraph get",
        "LangGraph search (10 of 100)",
        "LangGraph search (filter, 10 of 100)",
    }
    assert all(r["abathur"]["p50_us"] > 0 and r["peer"]["p50_us"] > 0 for r in result["peers"])
    assert "## Peers: Google ADK and LangGraph" in report
    # Issue 16's bulk load at the quick sizes: put_memories and the three bare loads.
    assert (result["bulk"]["items"], result["bulk"]["batch"]) == bulk.QUICK_SIZES
    assert [(f["op"], f["impl"]) for f in result["bulk"]["figures"]] == [
        ("put_memories", "abathur"),
        ("the same rows", "sqlite3, default cache"),
        ("the same rows", "sqlite3, 64 MiB cache"),
        ("the same rows", "sqlite3, no secondary indexes"),
    ]
    assert all(f["per_s"] > 0 and f["per_cpu_s"] > 0 for f in result["bulk"]["figures"])
    fill = result["bulk"]["fill"]
    assert (fill["items"], fill["batch"]) == (bulk.QUICK_FILL, bulk.QUICK_FILL)
    assert [(f["op"], f["impl"]) for f in fill["figures"]] == [
        ("put_memories, one call", "abathur"),
        ("the same rows", "sqlite3, indexes rebuilt"),
        ("the same rows", "sqlite3, every index"),
    ]
    assert all(f["per_s"] > 0 and f["per_cpu_s"] > 0 for f in fill["figures"])
    (goal,) = [t for t in result["targets"] if t["target"].startswith("issue 16: put_memories")]
    assert "bare sqlite3 into the same schema" in goal["measured"], goal
    (goal,) = [t for t in result["targets"] if t["target"].startswith("issue 16, the fill")]
    assert "in one call); bare sqlite3, the same rows" in goal["measured"], goal
    assert "The fill scenario: `put_memories`" in report
    assert "## Bulk load: put_memories (issue 16)" in report


def _bulk_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The versions and audit rows a bulk load left, without their times, JSON parsed."""
    conn = sqlite3.connect(path)
    try:
        versions = [
            (*r[:3], json.loads(r[3]), *r[4:7], json.loads(r[7]), *r[8:])
            for r in conn.execute(
                "SELECT id, namespace, key, value, memory_type, version, is_deleted, metadata, "
                "created_by, updated_by, is_current FROM memory_entries ORDER BY id"
            )
        ]
        audits = [
            (*r[:3], json.loads(r[3]), *r[4:])
            for r in conn.execute(
                "SELECT id, task_id, action_type, action_data, result, memory_operation_type, "
                "memory_namespace, memory_entry_id FROM audit ORDER BY id"
            )
        ]
    finally:
        conn.close()
    return versions, audits


async def test_interleave_lets_each_contender_go_first_in_turn(tmp_path: Path) -> None:
    # A fixed order gave the first contender alone the cold caches of the
    # call after another operation (docs/design_decisions.md).
    bench = Bench(tmp_path, 6, quick=True)
    order: list[str] = []

    def contender(name: str) -> Any:
        return lambda i: order.append(f"{name}{i}")

    await bench.interleave(
        [("op", [("a", contender("a")), ("b", contender("b")), ("c", contender("c"))], {})],
        [(i,) for i in range(6)],
    )
    firsts = [order[3 * i] for i in range(6)]
    assert firsts == ["a0", "b1", "c2", "a3", "b4", "c5"]
    assert sorted(order) == sorted(f"{n}{i}" for n in "abc" for i in range(6))
    assert {f.impl for f in bench.figures} == {"a", "b", "c"}


async def test_bulk_baselines_write_the_rows_put_memories_writes(tmp_path: Path) -> None:
    """The bulk load compares like with like: bare sqlite3 (every variant)
    leaves the versions and audit rows put_memories leaves, ids included."""
    result = await bulk.sqlite_bulk(tmp_path, 25, 10)
    assert len(result["figures"]) == 4
    bare = {n: _bulk_rows(tmp_path / f"bulk-bare-{n}.db") for n in (1, 2, 3)}
    ours = _bulk_rows(tmp_path / "bulk-abathur.db")
    assert len(ours[0]) == len(ours[1]) == 25
    assert all(rows == ours for rows in bare.values()), bare.keys()


async def test_bulk_loads_take_turns_and_report_their_medians(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch loads run round after round, each round starting with the
    next load, and each figure is the median of its rounds (wall and CPU)."""
    order: list[str] = []

    async def put_rate(*_: Any) -> tuple[float, float]:
        order.append("ours")
        return (100.0 * len(order), 10.0)

    def bare(_schema: Path, path: Path, *_: Any, **__: Any) -> tuple[float, float]:
        order.append(path.stem)
        return (1.0 * len(order), 20.0)

    monkeypatch.setattr(bulk, "put_rate", put_rate)
    monkeypatch.setattr(bulk, "bare", bare)
    result = await bulk.sqlite_bulk(tmp_path, 25, 10, rounds=3)
    b1, b2, b3 = "bulk-bare-1", "bulk-bare-2", "bulk-bare-3"
    assert order == ["ours", b1, b2, b3, b1, b2, b3, "ours", b2, b3, "ours", b1]
    assert result["rounds"] == 3
    ours, *_ = result["figures"]
    assert (ours["per_s"], ours["per_cpu_s"]) == (800, 10)  # rounds at 100, 800, 1,100


async def test_bulk_fill_baselines_write_the_rows_and_schema_put_memories_writes(
    tmp_path: Path,
) -> None:
    """The fill scenario too: each bare load (indexes rebuilt, every index)
    leaves the rows put_memories' one call leaves, and the same schema (the
    indexes it dropped are there again, as SQLite keeps their SQL; its
    ANALYZE's statistics table aside)."""
    result = await bulk.sqlite_bulk(tmp_path, 25, 10, 1_200)
    assert [f["impl"] for f in result["fill"]["figures"]][1:] == [
        "sqlite3, indexes rebuilt",
        "sqlite3, every index",
    ]
    ours = _bulk_rows(tmp_path / "bulk-fill-abathur.db")
    assert len(ours[0]) == len(ours[1]) == 1_200
    schema = _schema(tmp_path / "bulk-fill-abathur.db")
    assert len([name for name, _ in schema if name.startswith("idx_")]) >= 13
    for n in (1, 2):
        path = tmp_path / f"bulk-fill-bare-{n}.db"
        assert _bulk_rows(path) == ours, n
        assert _schema(path) == schema, n


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_stat%' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def _stored(path: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The session's state and its events without their generated id and time."""
    conn = sqlite3.connect(path)
    try:
        (state,) = conn.execute("SELECT state FROM sessions WHERE id = 's'").fetchone()
        events = [
            {k: v for k, v in json.loads(e).items() if k not in ("event_id", "timestamp")}
            for (e,) in conn.execute(
                "SELECT event FROM session_events WHERE session_id = 's' ORDER BY seq"
            )
        ]
    finally:
        conn.close()
    return json.loads(state), events


async def test_baselines_do_the_same_work_as_abathur(tmp_path: Path) -> None:
    """The ratios compare like with like: the hand-written baselines leave the
    same state and events as abathur (nested values replaced whole, nulls kept)."""
    base = tmp_path / "base.db"
    await migrated_file(base)
    prefill(base, sessions={"s": 0})
    async with Contestants(base, tmp_path, "same") as c:
        assert c.db and c.aio and c.sync
        for i in range(4):
            event = {**EVENT, "i": i}
            delta = {f"session:k{i % 2}": {"i": i, "none": None}, "n": i, "gone": None}
            await c.db.sessions.append_event("s", event, state_delta=delta)
            await c.aio.append_event("s", event, delta)
            c.sync.append_event("s", event, delta)
    expected = (
        {"session:k0": {"i": 2, "none": None}, "session:k1": {"i": 3, "none": None}, "n": 3,
         "gone": None},
        [{**EVENT, "i": i} for i in range(4)],
    )  # fmt: skip
    assert {impl: _stored(path) for impl, path in c.paths.items()} == dict.fromkeys(IMPLS, expected)


SHARED_ROWS = (("bench", "", "app:theme", '"dark"'), ("bench", "u", "user:name", '"ann"'))
MERGED = {"app:theme": "dark", "user:name": "ann"}


async def test_baselines_return_the_merged_state_as_abathur(tmp_path: Path) -> None:
    """Like abathur's, the baselines' create returns the new session's merged
    state and their get_session merges the shared app:/user: keys (issue 13):
    the same work. Before session 12 they read no shared state at all."""
    base = tmp_path / "base.db"
    await migrated_file(base)
    prefill(base, sessions={})
    conn = sqlite3.connect(base)
    with conn:
        conn.executemany(
            "INSERT INTO shared_state (app_name, user_id, key, value, updated_at) "
            "VALUES (?, ?, ?, ?, '2026-01-01 00:00:00.000000')",
            SHARED_ROWS,
        )
    conn.close()
    async with Contestants(base, tmp_path, "merged") as c:
        assert c.db and c.aio and c.sync
        created = {
            "abathur": (await c.db.sessions.create_session("n", "bench", "u"))["state"],
            "aiosqlite": await c.aio.create_session("n", "bench", "u"),
            "sqlite3": c.sync.create_session("n", "bench", "u"),
        }
        got = await c.db.sessions.get_session("n")
        assert got is not None
        read = {
            "abathur": got["state"],
            "aiosqlite": (await c.aio.get_session("n"))["state"],
            "sqlite3": c.sync.get_session("n")["state"],
        }
    assert created == read == dict.fromkeys(IMPLS, MERGED)


# ------------------------------------------------------------------ PostgreSQL

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")


def test_only_postgres_without_a_server_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABATHUR_BENCH_POSTGRES_URL", raising=False)
    with pytest.raises(SystemExit, match="ABATHUR_BENCH_POSTGRES_URL"):
        main(["--only", "postgres", "--quick", "--out", str(tmp_path)])


@needs_postgres
async def test_round_trip_counter_counts_known_cases() -> None:
    """A cached one-statement read is one round trip; a transaction of two
    statements is BEGIN + 2 + COMMIT; the same through abathur's engine."""
    assert PG_URL
    async with AsyncExitStack() as stack:
        schema = await pg.create_schema(PG_URL, stack)
        raw = await RawPostgres.open(pg.dsn(PG_URL), schema)
        stack.push_async_callback(raw.close)
        assert await pg.check_counter(raw) == {
            "one statement read": 1,
            "transaction of two statements": 4,
        }
        db = await stack.enter_async_context(pg.open_database(PG_URL, schema))
        counter = RoundTrips(logging=True)
        watch(db.engine, counter)
        for _ in range(2):  # the second time with the statements prepared
            counter.log.clear()
            async with db.transaction() as session:
                await session.execute(text("SELECT 1"))
                await session.execute(text("SELECT 2"))
        assert [line.split(":")[0] for line in counter.log] == [
            "query", "bind_execute", "bind_execute", "query",
        ], counter.log  # fmt: skip
        for _ in range(2):  # a one-statement read runs in autocommit: no BEGIN, no COMMIT
            counter.log.clear()
            assert await db.memory.get_memory("user:x", "k") is None
        assert [line.split(":")[0] for line in counter.log] == ["bind_execute"], counter.log


async def _rows(url: str, schema: str) -> dict[str, Any]:
    """What the operations left, without generated ids and times."""
    conn = await asyncpg.connect(pg.dsn(url), server_settings={"search_path": schema})
    try:
        state = await conn.fetchval("SELECT state::text FROM sessions WHERE id = 'a0'")
        events = [
            {k: v for k, v in json.loads(e).items() if k not in ("event_id", "timestamp")}
            for (e,) in await conn.fetch(
                "SELECT event::text FROM session_events WHERE session_id = 'a0' ORDER BY seq"
            )
        ]
        memories = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT namespace, key, value::text, memory_type, version, is_deleted, "
                "metadata::text, created_by, updated_by FROM memory_entries "
                "WHERE namespace LIKE 'user:bench%' ORDER BY namespace, key, version"
            )
        ]
        audit = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT task_id, action_type, action_data::text, result, memory_operation_type, "
                "memory_namespace FROM audit ORDER BY id"
            )
        ]
        sessions = await conn.fetch("SELECT id, status, state::text FROM sessions ORDER BY id")
    finally:
        await conn.close()
    return {
        "state": json.loads(state),
        "events": events,
        "memories": memories,
        "audit": audit,
        "sessions": [tuple(r) for r in sessions],
    }


@needs_postgres
async def test_asyncpg_baseline_does_the_same_work_as_abathur() -> None:
    """abathur and RawPostgres, given the same calls, leave the same rows:
    sessions, events and state, versions, and audit rows."""
    assert PG_URL
    async with AsyncExitStack() as stack:
        schemas = {impl: await pg.create_schema(PG_URL, stack) for impl in ("abathur", "asyncpg")}
        for schema in schemas.values():
            await pg.prefill(PG_URL, schema)
        db = await stack.enter_async_context(pg.open_database(PG_URL, schemas["abathur"]))
        raw = await RawPostgres.open(pg.dsn(PG_URL), schemas["asyncpg"])
        stack.push_async_callback(raw.close)
        ops = pg.cases(db, raw)
        read: dict[str, dict[str, Any]] = {}
        for i in range(12):
            for op, calls in ops:
                for impl, call in calls.items():
                    read.setdefault(op, {})[impl] = await call(i)
        assert (
            read["get_session (100 events)"]["abathur"]["events"]
            == (read["get_session (100 events)"]["asyncpg"]["events"])
        )
        found = read[ops[-1][0]]
        assert [m["key"] for m in found["abathur"]] == [m["key"] for m in found["asyncpg"]]
        assert len(found["abathur"]) == pg.SEARCH_HITS
        latest = read["memory get latest"]
        assert {k: latest["abathur"][k] for k in ("namespace", "key", "value", "version")} == {
            k: latest["asyncpg"][k] for k in ("namespace", "key", "value", "version")
        }
        left = {impl: await _rows(PG_URL, schema) for impl, schema in schemas.items()}
    assert left["abathur"] == left["asyncpg"]
    assert left["abathur"]["audit"] and left["abathur"]["memories"]


@needs_postgres
async def test_asyncpg_baseline_returns_the_merged_state_as_abathur() -> None:
    """As on SQLite: RawPostgres' create returns the merged state and its
    get_session merges the shared keys, as abathur's do."""
    assert PG_URL
    async with AsyncExitStack() as stack:
        schemas = {impl: await pg.create_schema(PG_URL, stack) for impl in ("abathur", "asyncpg")}
        for schema in schemas.values():
            async with pg.open_database(PG_URL, schema):  # migrated
                pass
            conn = await asyncpg.connect(pg.dsn(PG_URL), server_settings={"search_path": schema})
            try:
                await conn.executemany(
                    "INSERT INTO shared_state (app_name, user_id, key, value, updated_at) "
                    "VALUES ($1, $2, $3, $4::jsonb, now())",
                    SHARED_ROWS,
                )
            finally:
                await conn.close()
        db = await stack.enter_async_context(pg.open_database(PG_URL, schemas["abathur"]))
        raw = await RawPostgres.open(pg.dsn(PG_URL), schemas["asyncpg"])
        stack.push_async_callback(raw.close)
        created = {
            "abathur": (await db.sessions.create_session("n", "bench", "u"))["state"],
            "asyncpg": await raw.create_session("n", "bench", "u"),
        }
        got, raw_got = await db.sessions.get_session("n"), await raw.get_session("n")
        assert got is not None and raw_got is not None
    assert created == {"abathur": got["state"], "asyncpg": raw_got["state"]}
    assert created == dict.fromkeys(("abathur", "asyncpg"), MERGED)


@needs_postgres
def test_only_postgres_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PG_URL
    monkeypatch.setenv("ABATHUR_BENCH_POSTGRES_URL", PG_URL)
    args = ["--only", "postgres", "--quick", "--iterations", "5", "--scale-seconds", "0.5"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "performance_postgres.json").read_text())
    pg_result = result["postgres"]
    assert len(pg_result["ratios"]) == 8
    for row in pg_result["ratios"]:
        assert row["abathur"]["round_trips"] >= 1 and row["asyncpg"]["round_trips"] >= 1
        assert row["x_asyncpg"] > 0
    assert pg_result["round_trip_check"] == {
        "one statement read": 1,
        "transaction of two statements": 4,
    }
    phases = [s["phase"] for s in pg_result["scale_out"]]
    assert phases == ["sessions", "memory, distinct keys", "memory, shared keys"]
    for s in pg_result["scale_out"]:
        assert len(s["per_process"]) == 4 and s["ops"] > 0
        assert s["lost"] == 0 and s["gaps"] == 0, s
    assert pg_result["concurrent"]["lost_events"] == 0
    # The framework peers on PostgreSQL (the dev and bench extras install google-adk,
    # langgraph-checkpoint-postgres and psycopg; make test-lowest does not).
    peers = pg_result["peers"]
    expected = set()
    if importlib.util.find_spec("google.adk") is not None:
        expected |= {"ADK create_session", "ADK append_event", "ADK get_session (100 events)"}
    if importlib.util.find_spec("psycopg") is not None:
        expected |= {
            "LangGraph put (new key)",
            "LangGraph put (update)",
            "LangGraph get",
            "LangGraph search (10 of 100)",
            "LangGraph search (filter, 10 of 100)",
            "LangGraph search (20 of 200)",
            "core put_memory (new key) vs LangGraph put",
            "core put_memory (update) vs LangGraph put",
            "core search_memories (20 of 200) vs LangGraph search",
        }
    assert {r["op"] for r in peers["ratios"]} == expected
    assert all(r["abathur"]["p50_us"] > 0 and r["peer"]["p50_us"] > 0 for r in peers["ratios"])
    assert len(peers["notes"]) == 2 - bool(expected & {"ADK append_event"}) - bool(
        expected & {"LangGraph get"}
    )
    report = (tmp_path / "performance_validation_postgres.md").read_text()
    assert "## PostgreSQL" in report and "### Scale-out" in report and "round trips" in report
    assert "### Peers on PostgreSQL" in report
    assert (pg_result["bulk"]["items"], pg_result["bulk"]["batch"]) == bulk.QUICK_SIZES
    assert [(f["op"], f["impl"]) for f in pg_result["bulk"]["figures"]] == [
        ("put_memories", "abathur"),
        ("the same rows", "asyncpg, COPY"),
    ]
    assert all(f["per_s"] > 0 for f in pg_result["bulk"]["figures"])
    assert "### Bulk load: put_memories" in report
    assert not (tmp_path / "performance_validation_milestone2.md").exists()


async def test_postgres_peers_say_why_they_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without psycopg and langgraph-checkpoint-postgres (make test-lowest) the
    LangGraph peer is skipped with the reason, before any connection."""
    monkeypatch.setitem(sys.modules, "langgraph.store.postgres.aio", None)
    bench = Bench(tmp_path, 5, quick=True)
    figures, note = await pg_peers.langgraph(bench, "postgresql+asyncpg://nobody@127.0.0.1:1/x")
    assert figures == [] and note and note.startswith("LangGraph on PostgreSQL not measured")


@needs_postgres
async def test_asyncpg_bulk_baseline_writes_the_rows_put_memories_writes() -> None:
    """On PostgreSQL too: the asyncpg COPY baseline leaves the versions and
    audit rows put_memories leaves (ids included), each in its own schema."""
    assert PG_URL
    async with AsyncExitStack() as stack:
        schemas = {impl: await pg.create_schema(PG_URL, stack) for impl in ("abathur", "asyncpg")}
        tasks = {}
        for impl, schema in schemas.items():
            async with pg.open_database(PG_URL, schema) as db:
                tasks[impl] = (await db.tasks.create_task("bulk")).id
        async with pg.open_database(PG_URL, schemas["abathur"]) as db:
            await bulk.put_rate(db, tasks["abathur"], 25, 10)
        await bulk.asyncpg_load(PG_URL, schemas["asyncpg"], tasks["asyncpg"], 25, 10)
        left = {}
        for impl, schema in schemas.items():
            conn = await asyncpg.connect(pg.dsn(PG_URL), server_settings={"search_path": schema})
            try:
                versions = await conn.fetch(
                    "SELECT id, namespace, key, value::jsonb, memory_type, version, is_deleted, "
                    "metadata::jsonb, created_by, updated_by, is_current FROM memory_entries "
                    "ORDER BY id"
                )
                audits = await conn.fetch(
                    "SELECT id, task_id = $1, action_type, action_data::jsonb, result, "
                    "memory_operation_type, memory_namespace, memory_entry_id FROM audit "
                    "ORDER BY id",
                    tasks[impl],
                )
            finally:
                await conn.close()
            left[impl] = ([tuple(r) for r in versions], [tuple(r) for r in audits])
    assert len(left["abathur"][0]) == len(left["abathur"][1]) == 25
    assert left["abathur"] == left["asyncpg"]
