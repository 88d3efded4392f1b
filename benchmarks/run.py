"""``make bench``: abathur's services against plain sqlite3 and plain aiosqlite.

One run, one machine, the same file-backed SQLite settings (WAL,
synchronous=NORMAL) for all three. Every figure in the report is computed
here from this run's samples: p50 and p99 latency in microseconds and the
ratio of abathur's p50 to each baseline's p50.

Writes ``docs/performance_milestone2.json`` (every figure),
``docs/performance_milestone2.png`` (latency against session length and
table size) and ``docs/performance_validation_milestone2.md`` (the report).
``--quick`` runs a few iterations of everything (the smoke test uses it).
The bulk load (issue 16: ``put_memories`` against the same rows by bare
sqlite3) is ``benchmarks/bulk.py``'s. With ``ABATHUR_BENCH_POSTGRES_URL`` the
report has a PostgreSQL section (``benchmarks/postgres.py``, and the bulk load
against asyncpg); ``--only postgres`` runs that section alone and writes
``performance_postgres.json`` and ``performance_validation_postgres.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import inspect
import io
import os
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import event

from abathur.db.sqlite import worker as worker_module
from abathur.db.sqlite.worker import run_in_worker
from abathur.infrastructure.database import Database
from benchmarks import bulk, peers, pg_peers, postgres
from benchmarks.baselines import AsyncBaseline, SyncBaseline, dumps, now
from benchmarks.report import Figure, machine, print_targets, write_results

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMPLS = ("abathur", "aiosqlite", "sqlite3")
TASK_ID = "bench-task"
SEARCH_ROOT = "user:bench"
WARMUP = 20  # calls of each case not counted
SPREAD = 10  # sessions per length, so a run barely lengthens any one of them
EVENT = {"type": "assistant_message", "author": "agent", "text": "x" * 240}
MEMORY_VALUE = {"fact": "the user prefers short answers", "confidence": 0.9, "tags": ["style"]}


Contenders = list[tuple[str, Callable[..., Any]]]  # (implementation, call)
Case = tuple[str, Contenders, dict[str, Any]]  # (operation, contenders, extra figures)


# ------------------------------------------------------------------ timing


def warm(samples: list[float]) -> list[float]:
    """Drop the first calls of a case (caches, statement compilation): the warm-up."""
    return samples[min(WARMUP, len(samples) // 4) :]


async def time_async(
    fn: Callable[..., Awaitable[Any]], calls: Iterable[tuple[Any, ...]]
) -> list[float]:
    samples = []
    for args in calls:
        start = time.perf_counter_ns()
        await fn(*args)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return warm(samples)


def time_sync(fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> list[float]:
    samples = []
    for args in calls:
        start = time.perf_counter_ns()
        fn(*args)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return warm(samples)


# ------------------------------------------------------------------ data


def prefill(
    path: Path,
    sessions: dict[str, int],
    memories: int = 0,
    in_root: int = 0,
    history_keys: int = 0,
    history_versions: int = 10,
    namespaces: int = 97,
) -> None:
    """Identical starting data for every implementation, written with plain sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    stamp = now()
    conn.execute("BEGIN")
    conn.execute(
        "INSERT OR IGNORE INTO tasks (id, prompt, agent_type, priority, status, input_data, "
        "submitted_at, last_updated_at) VALUES (?, 'bench', 'general', 5, 'running', '{}', ?, ?)",
        (TASK_ID, stamp, stamp),
    )
    for session_id, length in sessions.items():
        conn.execute(
            "INSERT INTO sessions (id, app_name, user_id, status, state, metadata, created_at, "
            "last_update_time) VALUES (?, 'bench', 'u', 'active', '{}', '{}', ?, ?)",
            (session_id, stamp, stamp),
        )
        conn.executemany(
            "INSERT INTO session_events (session_id, seq, event, created_at) VALUES (?, ?, ?, ?)",
            ((session_id, seq, dumps({**EVENT, "n": seq}), stamp) for seq in range(1, length + 1)),
        )
    rows: list[tuple[Any, ...]] = []
    for i in range(memories):
        ns = SEARCH_ROOT if i < in_root else f"user:other{i % namespaces}:notes"
        rows.append((ns, f"k{i}", dumps({**MEMORY_VALUE, "i": i}), 1, 1))
    for k in range(history_keys):
        rows.extend(
            ("user:bench:history", f"h{k}", dumps({"v": v}), v, int(v == history_versions))
            for v in range(1, history_versions + 1)
        )
    conn.executemany(
        "INSERT INTO memory_entries (namespace, key, value, memory_type, version, is_current, "
        "is_deleted, metadata, created_by, updated_by, created_at, updated_at) "
        "VALUES (?, ?, ?, 'semantic', ?, ?, 0, '{}', 'bench', 'bench', ?, ?)",
        ((*r, stamp, stamp) for r in rows),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def migrated_file(path: Path) -> None:
    async with Database(path):
        pass


class Contestants:
    """The three implementations, each on its own copy of the same database file."""

    def __init__(self, base: Path, workdir: Path, tag: str):
        self.paths = {impl: workdir / f"{tag}-{impl}.db" for impl in IMPLS}
        for path in self.paths.values():
            shutil.copyfile(base, path)
        self.db: Database | None = None
        self.aio: AsyncBaseline | None = None
        self.sync: SyncBaseline | None = None

    async def __aenter__(self) -> Contestants:
        self.db = Database(self.paths["abathur"])
        await self.db.initialize()
        self.aio = await AsyncBaseline.open(str(self.paths["aiosqlite"]))
        self.sync = SyncBaseline(str(self.paths["sqlite3"]))
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.db and self.aio and self.sync
        await self.db.close()
        await self.aio.close()
        self.sync.close()


# ------------------------------------------------------------------ the cases


class Bench:
    def __init__(self, workdir: Path, iterations: int, quick: bool):
        self.workdir = workdir
        self.n = iterations
        self.quick = quick
        self.figures: list[Figure] = []
        self.peers: list[Figure] = []  # framework peers (their own implementations)
        self.peers_note: str | None = None
        self.statements: dict[str, Any] = {}
        self.lengths = (10, 100, 1000) if quick else (10, 1000, 10000)
        self.table_sizes = (200, 1000) if quick else (2000, 100000)
        self.search_hits = 20 if quick else 100

    def record(self, op: str, impl: str, samples: list[float], **kw: Any) -> None:
        self.figures.append(Figure(op, impl, samples, **kw))

    async def base_file(self, name: str, **fill: Any) -> Path:
        """A prefilled database file: a copy of one file migrated once per run
        (migrating each takes longer than most cases' timed calls)."""
        template = self.workdir / "migrated.template.db"
        if not template.exists():
            await migrated_file(template)
        path = self.workdir / f"{name}.base.db"
        shutil.copyfile(template, path)
        prefill(path, **fill)
        return path

    def watch(self, db: Database) -> None:
        """Record every statement abathur sends, for the EXPLAIN evidence.

        Each statement text is looked at once (``seen``, a set lookup of a
        string whose hash is cached): the listener runs inside abathur's timed
        calls alone, so its cost there is kept to that lookup (stripping and
        upper-casing each statement again cost ~4 us per session create)."""
        seen: set[str] = set()

        @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
        def _record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
            if many or statement in seen:
                return
            seen.add(statement)
            if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                self.statements.setdefault(statement, params)

    async def compare(
        self,
        op: str,
        contenders: Contenders,
        calls: list[tuple[Any, ...]],
        **extra: Any,
    ) -> None:
        """Time every contender on the same calls (see ``interleave``)."""
        await self.interleave([(op, contenders, extra)], calls)

    async def interleave(
        self,
        cases: list[Case],
        calls: list[tuple[Any, ...]],
    ) -> None:
        """Time every contender of every case (operation) on the same calls,
        interleaved call by call, so that whatever else the machine does weighs
        on all of them alike: the implementations of one operation, and the
        variants of one operation that a target compares (session lengths).

        Each contender goes first in turn (call i starts with contender
        i mod n): the first call after another operation runs on colder
        caches (the client's code and data, the server's), and a fixed order
        gave that cost to the first contender alone (1.7-1.9x against
        hand-written asyncpg for a session create that is 1.2-1.4x in either
        order taken evenly; docs/design_decisions.md)."""
        samples: dict[tuple[str, str], list[float]] = {
            (op, impl): [] for op, contenders, _ in cases for impl, _ in contenders
        }
        gc.collect()
        for i, args in enumerate(calls):
            for op, contenders, _ in cases:
                turn = i % len(contenders)
                for impl, fn in contenders[turn:] + contenders[:turn]:
                    start = time.perf_counter_ns()
                    result = fn(*args)
                    if inspect.isawaitable(result):
                        await result
                    samples[(op, impl)].append((time.perf_counter_ns() - start) / 1000)
        for op, contenders, extra in cases:
            for impl, _ in contenders:
                self.record(op, impl, warm(samples[(op, impl)]), extra=extra)

    async def sessions(self) -> None:
        n = self.n
        base = await self.base_file("sessions", sessions={})
        async with Contestants(base, self.workdir, "create") as c:
            assert c.db and c.aio and c.sync
            self.watch(c.db)
            await self.compare(
                "session create",
                [
                    ("abathur", c.db.sessions.create_session),
                    ("aiosqlite", c.aio.create_session),
                    ("sqlite3", c.sync.create_session),
                ],
                [(f"s{i}", "bench", "u") for i in range(n)],
            )

        # The session lengths run interleaved, like the implementations: the
        # target compares abathur at 10,000 events with abathur at 10.
        async with contextlib.AsyncExitStack() as stack:
            cases: list[Case] = []
            for length in self.lengths:
                base = await self.base_file(
                    f"append{length}", sessions={f"s{j}": length for j in range(SPREAD)}
                )
                c = await stack.enter_async_context(
                    Contestants(base, self.workdir, f"append{length}")
                )
                assert c.db and c.aio and c.sync
                self.watch(c.db)
                contenders: Contenders = [
                    ("abathur", _appender(c.db)),
                    ("aiosqlite", c.aio.append_event),
                    ("sqlite3", c.sync.append_event),
                ]
                cases.append((f"append_event @ {length} events", contenders, {"length": length}))
            await self.interleave(
                cases,
                [(f"s{i % SPREAD}", {**EVENT, "i": i}, {"session:last": i}) for i in range(n)],
            )

        base = await self.base_file("get", sessions={"g": 100})
        async with Contestants(base, self.workdir, "get") as c:
            assert c.db and c.aio and c.sync
            self.watch(c.db)
            got = await c.db.sessions.get_session("g")
            assert got is not None and len(got["events"]) == 100
            await self.compare(
                "get_session (100 events)",
                [
                    ("abathur", c.db.sessions.get_session),
                    ("aiosqlite", c.aio.get_session),
                    ("sqlite3", c.sync.get_session),
                ],
                [("g",)] * n,
            )

            op = "50 concurrent get_session"
            for impl, getter in (
                ("abathur", c.db.sessions.get_session),
                ("aiosqlite", c.aio.get_session),
            ):
                samples: list[float] = []
                gc.collect()
                start = time.perf_counter()
                await asyncio.gather(*(self._timed(getter, samples, "g") for _ in range(50)))
                self.record(op, impl, samples, wall_s=time.perf_counter() - start)

    async def adk(self) -> None:
        """Google ADK's session service: AbathurSessionService against ADK's own
        DatabaseSessionService (sqlite+aiosqlite, a file), interleaved call by
        call, each on its own file: create, append_event (an event with a
        240-character message and a state delta) and get_session of a session
        of 100 such events."""
        try:
            event, DatabaseSessionService, AbathurSessionService = peers.classes()
        except ImportError as exc:  # the bench extra installs google-adk
            self.peers_note = f"not measured: {exc}"
            return
        services: dict[str, Any] = {
            "abathur": AbathurSessionService(self.workdir / "adk-abathur.db"),
            "adk": DatabaseSessionService(f"sqlite+aiosqlite:///{self.workdir / 'adk-adk.db'}"),
        }
        try:
            self.peers += await peers.measure(self, services, event)
        finally:
            for svc in services.values():
                await svc.close()

    async def langgraph(self) -> None:
        """LangGraph's store: AbathurStore against LangGraph's own AsyncSqliteStore
        (a file each), interleaved call by call: put (updates of 50 keys: abathur
        keeps every version and an audit row, LangGraph's store overwrites), get
        of one of 1,000 items, and a search of a namespace of 100 (newest 10),
        without and with a filter."""
        try:
            from langgraph.store.sqlite.aio import AsyncSqliteStore

            from abathur.integrations.langgraph import AbathurStore
        except ImportError as exc:  # the bench extra installs langgraph-checkpoint-sqlite
            self.peers_note = f"LangGraph not measured: {exc}"
            return
        seed = 1000
        ours = AbathurStore(self.workdir / "lg-abathur.db")
        await ours.asetup()
        try:
            async with AsyncSqliteStore.from_conn_string(
                str(self.workdir / "lg-langgraph.db")
            ) as peer:
                await peer.setup()
                stores: dict[str, Any] = {"abathur": ours, "langgraph": peer}
                for store in stores.values():
                    for j in range(seed):
                        await store.aput(("bench", f"g{j % 10}"), f"k{j}", peers.langgraph_value(j))
                self.peers += await peers.interleaved(
                    self, stores, peers.langgraph_ops(stores, seed)
                )
                for impl, store in stores.items():  # both hold the same items
                    found = await store.asearch(("bench", "g0"), filter={"tag": "even"}, limit=100)
                    assert len(found) == 50, impl
        finally:
            await ours.aclose()

    async def _timed(
        self, fn: Callable[..., Awaitable[Any]], samples: list[float], *args: Any
    ) -> None:
        start = time.perf_counter_ns()
        await fn(*args)
        samples.append((time.perf_counter_ns() - start) / 1000)

    async def concurrency(self) -> None:
        appends = 5 if self.quick else 20
        for count in (50, 200):
            ids = [f"c{j}" for j in range(count)]
            base = await self.base_file(f"conc{count}", sessions=dict.fromkeys(ids, 0))
            async with Contestants(base, self.workdir, f"conc{count}") as c:
                assert c.db and c.aio and c.sync
                op = f"{count} sessions x {appends} concurrent appends"

                async def writer(
                    append: Callable[..., Awaitable[Any]],
                    sid: str,
                    samples: list[float],
                    starts: list[float],
                ) -> None:
                    for i in range(appends):
                        start = time.perf_counter_ns()
                        await append(sid, {**EVENT, "i": i}, {f"session:k{i}": i})
                        samples.append((time.perf_counter_ns() - start) / 1000)
                        starts.append(start / 1e6)

                contenders: list[tuple[str, Callable[..., Awaitable[Any]]]] = [
                    ("abathur", _appender(c.db)),
                    ("aiosqlite", c.aio.append_event),
                ]
                for impl, append in contenders:
                    samples: list[float] = []
                    starts: list[float] = []
                    gc.collect()
                    start = time.perf_counter()
                    await asyncio.gather(*(writer(append, sid, samples, starts) for sid in ids))
                    wall = time.perf_counter() - start
                    lost = count * appends - _count_events(c.paths[impl])
                    extra = {
                        "lost_events": lost,
                        "slowest_1pct_window_ms": _window(samples, starts),
                    }
                    self.record(op, impl, samples, wall_s=wall, extra=extra)
                samples = []
                gc.collect()
                start = time.perf_counter()
                for sid in ids:  # a synchronous caller has no concurrency to offer
                    for i in range(appends):
                        t = time.perf_counter_ns()
                        c.sync.append_event(sid, {**EVENT, "i": i}, {f"session:k{i}": i})
                        samples.append((time.perf_counter_ns() - t) / 1000)
                wall = time.perf_counter() - start
                lost = count * appends - _count_events(c.paths["sqlite3"])
                self.record(op, "sqlite3", samples, wall_s=wall, extra={"lost_events": lost})

    async def readers_beside_writers(self) -> None:
        """Appends while readers read whole sessions without pause: the write
        throughput abathur keeps, and the largest WAL it lets grow meanwhile
        (issue 15: a checkpoint must restart the WAL despite the readers)."""
        writers = readers = 4
        appends = 50 if self.quick else 2000
        ids = [f"rw{j}" for j in range(writers)]
        base = await self.base_file("rw", sessions=dict.fromkeys(ids, 200))
        path = self.workdir / "rw.abathur.db"
        shutil.copyfile(base, path)
        wal = Path(f"{path}-wal")
        op = f"{writers} writers x {appends} appends beside {readers} concurrent readers"
        largest = 0
        done = False
        async with Database(path) as db:

            async def writer(sid: str, samples: list[float]) -> None:
                nonlocal largest
                for i in range(appends):
                    start = time.perf_counter_ns()
                    await db.sessions.append_event(sid, {**EVENT, "i": i}, {"session:k": i})
                    samples.append((time.perf_counter_ns() - start) / 1000)
                    largest = max(largest, _file_size(wal))

            async def reader(sid: str) -> None:
                while not done:
                    await db.sessions.get_session(sid)

            samples: list[float] = []
            gc.collect()
            running = [asyncio.ensure_future(reader(sid)) for sid in ids[:readers]]
            start = time.perf_counter()
            try:
                await asyncio.gather(*(writer(sid, samples) for sid in ids))
            finally:
                wall = time.perf_counter() - start
                done = True
                await asyncio.gather(*running)
        lost = writers * (200 + appends) - _count_events(path)
        extra = {"lost_events": lost, "largest_wal_mb": round(largest / 2**20, 1)}
        self.record(op, "abathur", samples, wall_s=wall, extra=extra)

    async def memory(self) -> None:
        n = self.n
        base = await self.base_file("memory", sessions={}, history_keys=10)
        async with Contestants(base, self.workdir, "memory") as c:
            assert c.db and c.aio and c.sync
            self.watch(c.db)
            mem, aio, sync = c.db.memory, c.aio, c.sync
            await self.compare(
                "memory add (version 1 + audit)",
                [
                    ("abathur", lambda k: mem.add_memory(SEARCH_ROOT, k, MEMORY_VALUE, "semantic",
                                                         "bench", TASK_ID)),
                    ("aiosqlite", lambda k: aio.add_memory(SEARCH_ROOT, k, MEMORY_VALUE, "bench",
                                                           TASK_ID)),
                    ("sqlite3", lambda k: sync.add_memory(SEARCH_ROOT, k, MEMORY_VALUE, "bench",
                                                          TASK_ID)),
                ],
                [(f"a{i}",) for i in range(n)],
            )  # fmt: skip
            await self.compare(
                "memory update (new version + audit)",
                [
                    (
                        "abathur",
                        lambda k, v: mem.update_memory(SEARCH_ROOT, k, v, "bench", TASK_ID),
                    ),
                    (
                        "aiosqlite",
                        lambda k, v: aio.update_memory(SEARCH_ROOT, k, v, "bench", TASK_ID),
                    ),
                    (
                        "sqlite3",
                        lambda k, v: sync.update_memory(SEARCH_ROOT, k, v, "bench", TASK_ID),
                    ),
                ],
                [(f"a{i % 10}", {**MEMORY_VALUE, "i": i}) for i in range(n)],
            )
            readers: list[tuple[str, Contenders, tuple[Any, ...]]] = [
                ("memory get latest",
                 [("abathur", mem.get_memory), ("aiosqlite", aio.get_memory),
                  ("sqlite3", sync.get_memory)], (SEARCH_ROOT, "a3")),
                ("memory get version",
                 [("abathur", mem.get_memory), ("aiosqlite", aio.get_memory),
                  ("sqlite3", sync.get_memory)], (SEARCH_ROOT, "a3", 1)),
                ("memory history (10 versions)",
                 [("abathur", mem.get_memory_history), ("aiosqlite", aio.history),
                  ("sqlite3", sync.history)], ("user:bench:history", "h1")),
            ]  # fmt: skip
            for op, readers_of_op, args in readers:
                await self.compare(op, readers_of_op, [args] * n)
            history = await mem.get_memory_history("user:bench:history", "h1")
            assert [h["version"] for h in history] == list(range(1, 11))

        # Interleaved like the session lengths: the target compares the sizes.
        async with contextlib.AsyncExitStack() as stack:
            cases: list[Case] = []
            hits = self.search_hits
            for size in self.table_sizes:
                base = await self.base_file(
                    f"search{size}", sessions={}, memories=size, in_root=hits
                )
                c = await stack.enter_async_context(
                    Contestants(base, self.workdir, f"search{size}")
                )
                assert c.db and c.aio and c.sync
                self.watch(c.db)
                found = await c.db.memory.search_memories(SEARCH_ROOT, limit=hits)
                assert len(found) == hits, len(found)
                contenders: Contenders = [
                    ("abathur", partial(c.db.memory.search_memories, SEARCH_ROOT, limit=hits)),
                    ("aiosqlite", partial(c.aio.search, SEARCH_ROOT, hits)),
                    ("sqlite3", partial(c.sync.search, SEARCH_ROOT, hits)),
                ]
                cases.append(
                    (f"search {hits} of {size} memories", contenders, {"table_size": size})
                )
            await self.interleave(cases, [()] * n)

    async def retrieval(self) -> None:
        """Issue 11, abathur alone (no baseline does these): put_memory against
        add_memory, a filtered search against the unfiltered one, list_namespaces
        over 10,000 namespaces, get_memory of a key with a TTL against one
        without; all at 100,000 memories (``--quick``: fewer), interleaved."""
        n = self.n
        size = self.table_sizes[-1]
        subtree = 200 if self.quick else 2000
        spaces = 500 if self.quick else 10000
        hits = self.search_hits
        base = await self.base_file(
            "retrieval", sessions={}, memories=size, in_root=subtree, namespaces=spaces
        )
        path = self.workdir / "retrieval.db"
        shutil.copyfile(base, path)
        async with Database(path) as db:
            self.watch(db)
            mem = db.memory
            put = partial(mem.put_memory, by="bench", task_id=TASK_ID)
            await self.interleave(
                [
                    ("retrieval: add_memory (new key)", [("abathur", lambda k: mem.add_memory(
                        "user:retrieval:add", k, MEMORY_VALUE, "semantic", "bench", TASK_ID))], {}),
                    ("retrieval: put_memory (new key)", [("abathur", lambda k: put(
                        "user:retrieval:put", k, MEMORY_VALUE, "semantic"))], {}),
                ],
                [(f"n{i}",) for i in range(n)],
            )  # fmt: skip
            await self.interleave(
                [
                    ("retrieval: update_memory (live key)", [("abathur", lambda k, v: (
                        mem.update_memory("user:retrieval:add", k, v, "bench", TASK_ID)))], {}),
                    ("retrieval: put_memory (live key)", [("abathur", lambda k, v: put(
                        "user:retrieval:put", k, v, "semantic"))], {}),
                ],
                [(f"n{i % 10}", {**MEMORY_VALUE, "i": i}) for i in range(n)],
            )  # fmt: skip
            # The subtree's values carry i = 0 .. subtree-1: the filter keeps `hits` of them.
            where = {"i": {"$lt": hits}, "confidence": {"$gte": 0.5}}
            found = await mem.search_memories(SEARCH_ROOT, limit=1000, filter=where)
            assert len(found) == hits, len(found)
            await self.interleave(
                [
                    (f"retrieval: search {hits} of a {subtree}-key subtree, unfiltered",
                     [("abathur", partial(mem.search_memories, SEARCH_ROOT, limit=hits))], {}),
                    (f"retrieval: search {hits} of a {subtree}-key subtree, filtered",
                     [("abathur", partial(mem.search_memories, SEARCH_ROOT, limit=hits,
                                          filter=where))], {}),
                ],
                [()] * n,
            )  # fmt: skip
            listed = await mem.list_namespaces(limit=1000)
            assert len(listed) >= min(spaces, 1000), len(listed)
            await self.interleave(
                [
                    (f"retrieval: list_namespaces over {spaces} namespaces (first 100)",
                     [("abathur", mem.list_namespaces)], {}),
                    (f"retrieval: list_namespaces over {spaces} namespaces (max_depth=2)",
                     [("abathur", partial(mem.list_namespaces, "user", max_depth=2))], {}),
                ],
                [()] * max(n // 4, 5),
            )  # fmt: skip
            await put("user:retrieval:get", "ttl", MEMORY_VALUE, "semantic", ttl=timedelta(days=1))
            await put("user:retrieval:get", "plain", MEMORY_VALUE, "semantic")
            await self.interleave(
                [
                    ("retrieval: get_memory (no TTL)",
                     [("abathur", partial(mem.get_memory, "user:retrieval:get", "plain"))], {}),
                    ("retrieval: get_memory (with TTL)",
                     [("abathur", partial(mem.get_memory, "user:retrieval:get", "ttl"))], {}),
                ],
                [()] * n,
            )  # fmt: skip

    async def explain(self) -> list[dict[str, Any]]:
        """EXPLAIN QUERY PLAN of every distinct statement abathur sent during the run."""
        base = await self.base_file(
            "explain", sessions={"g": 10}, memories=500, in_root=50, history_keys=2
        )
        evidence = []
        async with Database(base) as db:
            for statement, params in sorted(self.statements.items()):
                plan = await db.explain_query_plan(statement, list(params or ()))
                evidence.append(
                    {
                        "statement": " ".join(statement.split()),
                        "plan": plan,
                        "full_scan": [
                            p for p in plan if p.startswith("SCAN ") and "INDEX" not in p
                        ],
                    }
                )
        return evidence

    async def profile(self) -> dict[str, Any]:
        """Where abathur's append_event spends its time: cProfile of the event
        loop's thread and, separately, of the SQLite worker thread, where each
        unit of work runs (``worker.run_in_worker``)."""
        base = await self.base_file("profile", sessions={"p": 100})
        loop_profiler, worker_profiler = cProfile.Profile(), cProfile.Profile()
        original = run_in_worker

        async def profiled(driver: Any, fn: Callable[..., Any], *args: Any) -> Any:
            def unit(*a: Any) -> Any:
                worker_profiler.enable()
                try:
                    return fn(*a)
                finally:
                    worker_profiler.disable()

            return await original(driver, unit, *args)

        async with Database(base) as db:
            for i in range(20):
                await db.sessions.append_event("p", {**EVENT, "i": i}, state_delta={"session:k": i})
            count = 50 if self.quick else 500
            setattr(worker_module, "run_in_worker", profiled)  # noqa: B010
            try:
                loop_profiler.enable()
                for i in range(count):
                    await db.sessions.append_event(
                        "p", {**EVENT, "i": i}, state_delta={"session:k": i}
                    )
                loop_profiler.disable()
            finally:
                setattr(worker_module, "run_in_worker", original)  # noqa: B010
        return {
            "calls": count,
            "event_loop_thread": _per_call(loop_profiler, count),
            "worker_thread": _per_call(worker_profiler, count),
        }


def _window(samples: list[float], starts: list[float]) -> float:
    """How far apart (ms) the slowest 1% of calls started: a few ms means they
    all waited on the same stall (one round of a checkpoint or a GC pause)."""
    slowest = sorted(zip(samples, starts, strict=True))[-max(1, len(samples) // 100) :]
    return round(max(s for _, s in slowest) - min(s for _, s in slowest), 1)


def _appender(db: Database) -> Callable[..., Awaitable[Any]]:
    """abathur's append with the baselines' signature (session, event, delta)."""

    async def append(session_id: str, event: dict[str, Any], delta: dict[str, Any]) -> None:
        await db.sessions.append_event(session_id, event, state_delta=delta)

    return append


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _count_events(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM session_events").fetchone()[0])
    finally:
        conn.close()


def _per_call(profiler: cProfile.Profile, calls: int) -> dict[str, Any]:
    """A profile's own time per call, in microseconds, grouped by package."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        groups[_group(filename, func)] += tottime
    return {
        "us_per_call_by_group": {
            k: round(v / calls * 1e6, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
        "total_us_per_call": round(total / calls * 1e6, 1),
    }


def _group(filename: str, func: str) -> str:
    if "sqlite3.Connection" in func or "sqlite3.Cursor" in func:
        return "SQLite (sqlite3 calls)"
    if "select.epoll" in func:
        return "waiting (for the worker thread)"
    if "site-packages/sqlalchemy" in filename:
        return "sqlalchemy"
    if "aiosqlite" in filename:
        return "aiosqlite"
    if "/abathur/" in filename:
        return "abathur"
    if "pydantic" in filename:
        return "pydantic"
    if "asyncio" in filename or "selectors" in filename or "threading" in filename:
        return "asyncio"
    if "json" in filename:
        return "json"
    return "other"


# ------------------------------------------------------------------ report


def ratios(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_op: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for f in figures:
        by_op[f["op"]][f["impl"]] = f
    rows = []
    for op, impls in by_op.items():
        a = impls.get("abathur")
        if a is None:
            continue
        row = {
            "op": op,
            "abathur": a,
            "aiosqlite": impls.get("aiosqlite"),
            "sqlite3": impls.get("sqlite3"),
        }
        for base in ("aiosqlite", "sqlite3"):
            b = impls.get(base)
            row[f"x_{base}"] = round(a["p50_us"] / b["p50_us"], 2) if b and b["p50_us"] else None
        rows.append(row)
    return rows


def targets(
    figures: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    lengths: tuple[int, ...],
    sizes: tuple[int, ...],
    hits: int,
) -> list[dict[str, Any]]:
    get = {(f["op"], f["impl"]): f for f in figures}
    out: list[dict[str, Any]] = []

    def check(name: str, measured: str, ok: bool) -> None:
        out.append({"target": name, "measured": measured, "met": ok})

    for row in rows:
        if row["x_aiosqlite"] is not None and "concurrent" not in row["op"]:
            check(
                f"{row['op']}: p50 within 2x of plain aiosqlite",
                f"{row['x_aiosqlite']}x",
                row["x_aiosqlite"] <= 2.0,
            )
    short, long = (
        get[(f"append_event @ {n} events", "abathur")]["p50_us"] for n in (lengths[0], lengths[-1])
    )
    check(
        f"append_event p50 at {lengths[-1]} events within 1.5x of at {lengths[0]}",
        f"{long:.0f} us vs {short:.0f} us = {long / short:.2f}x",
        long / short <= 1.5,
    )
    small, big = (get[(f"search {hits} of {n} memories", "abathur")]["p50_us"] for n in sizes)
    check(
        f"search at {sizes[1]} memories within 2x of at {sizes[0]}",
        f"{big:.0f} us vs {small:.0f} us = {big / small:.2f}x",
        big / small <= 2.0,
    )
    conc = next(f for f in figures if f["op"].startswith("200 sessions") and f["impl"] == "abathur")
    check(
        "200 concurrent sessions x appends: p99 under 50 ms, nothing lost",
        f"p50 {conc['p50_us'] / 1000:.1f} ms, p99 {conc['p99_us'] / 1000:.1f} ms "
        f"(its slowest 1% started within {conc['slowest_1pct_window_ms']} ms of one another), "
        f"lost {conc['lost_events']}",
        conc["p99_us"] < 50_000 and conc["lost_events"] == 0,
    )
    spec = [
        ("spec: session creation < 10 ms", "session create", 10_000, "p50_us"),
        (
            "spec: event append < 20 ms (with state delta)",
            f"append_event @ {lengths[-1]} events",
            20_000,
            "p50_us",
        ),
        (
            "spec: session operations p99 < 20 ms",
            f"append_event @ {lengths[-1]} events",
            20_000,
            "p99_us",
        ),
        ("spec: memory retrieval (current version) < 20 ms", "memory get latest", 20_000, "p50_us"),
        (
            "spec: namespace query (100 memories) < 50 ms",
            f"search {hits} of {sizes[-1]} memories",
            50_000,
            "p50_us",
        ),
        (
            "spec: memory operations p99 < 50 ms",
            "memory update (new version + audit)",
            50_000,
            "p99_us",
        ),
        (
            "spec: version history (10 versions) < 30 ms",
            "memory history (10 versions)",
            30_000,
            "p50_us",
        ),
    ]
    for name, op, limit, key in spec:
        value = get[(op, "abathur")][key]
        check(name, f"{value / 1000:.2f} ms ({key[:3]})", value < limit)
    reads = get[("50 concurrent get_session", "abathur")]
    check(
        "spec: 50 concurrent session reads < 1 s total",
        f"{reads['wall_s'] * 1000:.1f} ms",
        reads["wall_s"] < 1.0,
    )
    retrieval_targets(get, check)
    return out


def peer_ratios(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per peer operation: abathur's and the peer's figures, and how many times
    faster abathur's p50 is."""
    by_op: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for f in peers:
        by_op[f["op"]][f["impl"]] = f
    names = {
        "adk": ("ADK DatabaseSessionService", 5.0),
        "langgraph": ("LangGraph AsyncSqliteStore", 1 / 1.5),
    }
    rows = []
    for op, impls in by_op.items():
        (other,) = [impl for impl in impls if impl != "abathur"]
        name, goal = names[other]
        rows.append(
            {
                "op": op,
                "abathur": impls["abathur"],
                "peer": impls[other],
                "peer_name": name,
                "goal_x": goal,
                "x_faster": round(impls[other]["p50_us"] / impls["abathur"]["p50_us"], 2),
            }
        )
    return rows


def peer_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def goal(r: dict[str, Any]) -> str:
        if r.get("goal_x", 5.0) >= 1:
            return f"abathur at least {r.get('goal_x', 5.0):g}x faster than {r['peer_name']}"
        return f"abathur within {1 / r['goal_x']:g}x of {r['peer_name']}"

    return [
        {
            "target": f"{r['op']}: {goal(r)} (p50)",
            "measured": f"{r['abathur']['p50_us']:,.0f} us vs {r['peer']['p50_us']:,.0f} us "
            f"= {r['x_faster']}x",
            "met": r["x_faster"] >= r.get("goal_x", 5.0),
        }
        for r in rows
    ]


def retrieval_targets(
    get: dict[tuple[str, str], dict[str, Any]], check: Callable[[str, str, bool], None]
) -> None:
    """Issue 11's targets, from the ``retrieval`` cases (p50, abathur)."""
    p50 = {op: f["p50_us"] for (op, impl), f in get.items() if op.startswith("retrieval: ")}
    if not p50:
        return

    def one(fragment: str) -> tuple[str, float]:
        (op,) = [op for op in p50 if fragment in op]
        return op, p50[op]

    def within(name: str, slow: str, fast: str, limit: float) -> None:
        (_, a), (_, b) = one(slow), one(fast)
        check(name, f"{a:.0f} us vs {b:.0f} us = {a / b:.2f}x", a / b <= limit)

    within(
        "issue 11: put_memory (new key) p50 within 1.5x of add_memory",
        "put_memory (new key)",
        "add_memory (new key)",
        1.5,
    )
    within(
        "issue 11: put_memory (live key) p50 within 1.5x of update_memory",
        "put_memory (live key)",
        "update_memory (live key)",
        1.5,
    )
    within(
        "issue 11: filtered search within 1.5x of the unfiltered search",
        "subtree, filtered",
        "subtree, unfiltered",
        1.5,
    )
    within(
        "issue 11: get_memory with a TTL within 1.1x of without",
        "get_memory (with TTL)",
        "get_memory (no TTL)",
        1.1,
    )
    op, value = one("(first 100)")
    check(f"issue 11: {op[len('retrieval: '):]} under 5 ms p50", f"{value / 1000:.2f} ms",
          value < 5000)  # fmt: skip


def plot(figures: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl, style in (("abathur", "o-"), ("aiosqlite", "s--"), ("sqlite3", "^:")):
        pts = sorted(
            (f["length"], f["p50_us"]) for f in figures if f["impl"] == impl and "length" in f
        )
        left.plot([p[0] for p in pts], [p[1] for p in pts], style, label=impl)
        pts = sorted(
            (f["table_size"], f["p50_us"])
            for f in figures
            if f["impl"] == impl and "table_size" in f
        )
        right.plot([p[0] for p in pts], [p[1] for p in pts], style, label=impl)
    left.set(
        xscale="log",
        xlabel="events already in the session",
        ylabel="p50 latency (us)",
        title="append_event with a 1-key state delta",
    )
    right.set(
        xscale="log",
        xlabel="rows in memory_entries",
        ylabel="p50 latency (us)",
        title="namespace search returning 100 memories",
    )
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def fmt(f: dict[str, Any] | None, key: str) -> str:
    return "" if f is None else f"{f[key]:,.0f}"


def render(result: dict[str, Any], png: str | None) -> str:
    m = result["machine"]
    lines = [
        "# Performance validation, Milestone 2",
        "",
        "Generated by `make bench` (`benchmarks/run.py`) from one run; every number below is",
        "computed from that run's samples (`docs/performance_milestone2.json`). Do not edit by hand.",
        "",
        "## Machine",
        "",
        f"- date: {m['date']}; {m['platform']}; CPU: {m['cpu']} ({m['cores']} cores)",
        f"- Python {m['python']}, SQLite {m['sqlite']}, SQLAlchemy {m['sqlalchemy']}, "
        f"aiosqlite {m['aiosqlite']}, asyncpg {m['asyncpg']}",
        f"- iterations per operation: {result['iterations']}, the first "
        f"{WARMUP} of each a warm-up not counted; file-backed SQLite, WAL, "
        "synchronous=NORMAL, for all three implementations",
        "",
        "## Method",
        "",
        "Each operation runs through abathur's services (`db.sessions`, `db.memory`) and as",
        "hand-written SQL doing the same work on plain `aiosqlite` (the limit for an async",
        "caller) and plain `sqlite3` (the limit for a synchronous caller): the same statements,",
        "`BEGIN IMMEDIATE` for writes, a state delta merged by SQLite's `json_set`, a",
        "session's state returned merged with its shared `app:`/`user:` keys (create and",
        "get_session), one audit row per memory write, JSON parsed and timestamps returned as",
        "aware datetimes",
        "(`benchmarks/baselines.py`). Each implementation has its",
        "own copy of the same prefilled database file. Latencies are per call, in microseconds;",
        "the ratio is abathur's p50 over the baseline's p50. Every timed section starts after",
        "`gc.collect()`, for every implementation alike, so that the garbage of the set-up",
        "before it (migrations, prefill) is not collected inside it; the collector stays on.",
        "The implementations of an operation take turns going first, call by call (the",
        "first call after another operation runs on colder caches).",
        "",
        "## Figures (SQLite)",
        "",
        "| operation | abathur p50 | p99 | aiosqlite p50 | p99 | sqlite3 p50 | p99 | x aiosqlite | x sqlite3 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["ratios"]:
        lines.append(
            f"| {r['op']} | {fmt(r['abathur'], 'p50_us')} | {fmt(r['abathur'], 'p99_us')} | "
            f"{fmt(r['aiosqlite'], 'p50_us')} | {fmt(r['aiosqlite'], 'p99_us')} | "
            f"{fmt(r['sqlite3'], 'p50_us')} | {fmt(r['sqlite3'], 'p99_us')} | "
            f"{r['x_aiosqlite'] if r['x_aiosqlite'] is not None else ''} | "
            f"{r['x_sqlite3'] if r['x_sqlite3'] is not None else ''} |"
        )
    lines += ["", "Concurrent runs (wall time for the whole batch, events lost):", ""]
    lines += [
        "| run | implementation | wall | p50 | p99 | lost | slowest 1% started within | largest WAL |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in result["figures"]:
        if f["wall_s"] is not None:
            window = f.get("slowest_1pct_window_ms")
            wal = f.get("largest_wal_mb")
            lines.append(
                f"| {f['op']} | {f['impl']} | {f['wall_s'] * 1000:,.1f} ms | {f['p50_us']:,.0f} us | "
                f"{f['p99_us']:,.0f} us | {f.get('lost_events', '')} | "
                f"{'' if window is None else f'{window:,.1f} ms'} | "
                f"{'' if wal is None else f'{wal:,.1f} MB'} |"
            )
    if png:
        lines += ["", f"![latency against session length and table size]({png})"]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    prof = result["profile"]
    loop, worker = prof["event_loop_thread"], prof["worker_thread"]
    lines += [
        "",
        "## Where abathur's time goes",
        "",
        f"cProfile of {prof['calls']} `append_event` calls, microseconds per call by package, "
        "in the event loop's thread and in the SQLite worker thread where each unit of work "
        "runs (one crossing per unit; its statements go to sqlite3 directly):",
        "",
        "| package | event loop thread | worker thread |",
        "|---|---:|---:|",
    ]
    names = dict.fromkeys([*loop["us_per_call_by_group"], *worker["us_per_call_by_group"]])
    for name in names:
        lines.append(
            f"| {name} | {loop['us_per_call_by_group'].get(name, '')} | "
            f"{worker['us_per_call_by_group'].get(name, '')} |"
        )
    lines.append(f"| total | {loop['total_us_per_call']} | {worker['total_us_per_call']} |")
    sqlite_us = worker["us_per_call_by_group"].get("SQLite (sqlite3 calls)", 0.0)
    waiting = loop["us_per_call_by_group"].get("waiting (for the worker thread)", 0.0)
    busy = loop["total_us_per_call"] - waiting
    worker_total = worker["total_us_per_call"] or 1.0
    lines += [
        "",
        f"The event loop's thread works {busy:.0f} us per append (validation, JSON checks, "
        f"scheduling) and waits {waiting:.0f} us for the worker. In the worker, SQLite itself "
        f"takes {sqlite_us:.0f} us of {worker_total:.0f} us ({100 * sqlite_us / worker_total:.0f}%); "
        "the rest is binding parameters and reading rows (JSON, timestamps) and the unit's own "
        "logic. Measured under cProfile, which inflates Python time; the proportions are "
        "what matters.",
    ]
    lines += ["", "## Peers: Google ADK and LangGraph", ""]
    if result.get("peers"):
        lines += [
            "`abathur.integrations.adk.AbathurSessionService` against ADK's own",
            "`DatabaseSessionService` (sqlite+aiosqlite), each on its own file, interleaved call",
            "by call. Both build the same ADK `Event` objects: on `get_session` most of either",
            "side's time is `Event.model_validate` of the 100 events, which no storage can avoid.",
            "`abathur.integrations.langgraph.AbathurStore` against LangGraph's own",
            "`AsyncSqliteStore`, the same way; abathur keeps every version and an audit row of",
            "each put, LangGraph's store overwrites the row.",
            "",
            "| operation | abathur p50 | p99 | peer p50 | p99 | abathur faster by |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["peers"]:
            lines.append(
                f"| {r['op']} | {fmt(r['abathur'], 'p50_us')} | {fmt(r['abathur'], 'p99_us')} | "
                f"{fmt(r['peer'], 'p50_us')} | {fmt(r['peer'], 'p99_us')} | {r['x_faster']}x |"
            )
    else:
        lines.append(f"Not measured in this run ({result.get('peers_note')}).")
    lines += ["", *bulk.render(result.get("bulk")), ""]
    lines += render_postgres(result)
    lines += [
        "",
        "## Index usage (EXPLAIN QUERY PLAN of every statement abathur sent)",
        "",
        "Each distinct SELECT/UPDATE/DELETE recorded during the run above, explained on a",
        "populated database (`tests/repositories/test_query_plans.py` does the same in",
        "`make test` for a workload through every public method, on both backends).",
        "A `SCAN <table>` without an index would be a full table scan.",
        "",
    ]
    scans = [e for e in result["explain"] if e["full_scan"]]
    lines.append(f"Statements: {len(result['explain'])}; with a full table scan: {len(scans)}.")
    lines.append("")
    for e in result["explain"]:
        stmt = e["statement"] if len(e["statement"]) < 300 else e["statement"][:297] + "..."
        lines += [f"- `{stmt}`", *[f"  - {p}" for p in e["plan"]]]
    return "\n".join(lines) + "\n"


def render_postgres(result: dict[str, Any]) -> list[str]:
    if result.get("postgres"):
        pg = result["postgres"]
        return [
            *postgres.render(pg),
            "",
            *pg_peers.render(pg.get("peers")),
            *(["", *bulk.render_postgres(pg["bulk"])] if pg.get("bulk") else []),
        ]
    return [
        "## PostgreSQL",
        "",
        "Not measured in this run: set `ABATHUR_BENCH_POSTGRES_URL` to include it.",
    ]


def render_postgres_only(result: dict[str, Any], _png: str | None) -> str:
    m = result["machine"]
    lines = [
        "# Performance validation, PostgreSQL alone",
        "",
        "Generated by `python -m benchmarks.run --only postgres` from one run (the PostgreSQL",
        "section of `make bench`'s report); every number is computed from that run's samples.",
        "",
        f"- date: {m['date']}; {m['platform']}; CPU: {m['cpu']} ({m['cores']} cores, load "
        f"average at the start {', '.join(f'{x:g}' for x in m['load_average'])})",
        f"- Python {m['python']}, SQLAlchemy {m['sqlalchemy']}, asyncpg {m['asyncpg']}",
        f"- iterations per operation: {result['iterations']}, the first {WARMUP} of each a "
        "warm-up not counted",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", *render_postgres(result)]
    return "\n".join(lines) + "\n"


async def measure_postgres(bench: Bench, args: argparse.Namespace) -> dict[str, Any] | None:
    """The PostgreSQL section, when ``ABATHUR_BENCH_POSTGRES_URL`` names a server."""
    url = os.environ.get("ABATHUR_BENCH_POSTGRES_URL")
    if not url:
        return None
    seconds = args.scale_seconds
    if seconds is None:
        seconds = 2.0 if args.quick else 10.0
    result = await postgres.run(bench, url, seconds)
    result["peers"] = await pg_peers.run(bench, url)
    result["bulk"] = await bulk.postgres_bulk(url, *bulk_sizes(bench))
    return result


def bulk_sizes(bench: Bench) -> tuple[int, int]:
    """Memories and batch size of the bulk load (issue 16)."""
    return bulk.QUICK_SIZES if bench.quick else bulk.SIZES


def postgres_targets(pg: dict[str, Any]) -> list[dict[str, Any]]:
    return postgres.targets(pg) + pg_peers.targets(pg["peers"])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="abathur-bench-") as tmp:
        bench = Bench(Path(tmp), args.iterations, args.quick)
        if args.only == "postgres":
            pg = await measure_postgres(bench, args)
            if pg is None:
                raise SystemExit("--only postgres needs ABATHUR_BENCH_POSTGRES_URL")
            return {
                "machine": machine(),
                "iterations": args.iterations,
                "postgres": pg,
                "targets": postgres_targets(pg),
            }
        await bench.sessions()
        await bench.memory()
        await bench.retrieval()
        await bench.concurrency()
        await bench.adk()
        await bench.langgraph()
        await bench.readers_beside_writers()
        explain = await bench.explain()
        profile = await bench.profile()
        fill = bulk.QUICK_FILL if bench.quick else bulk.FILL
        rounds = 1 if bench.quick else bulk.ROUNDS
        bulk_load = await bulk.sqlite_bulk(bench.workdir, *bulk_sizes(bench), fill, rounds)
        figures = [f.summary() for f in bench.figures]
        peers = peer_ratios([f.summary() for f in bench.peers])
        pg = await measure_postgres(bench, args)
        return {
            "machine": machine(),
            "iterations": args.iterations,
            "figures": figures,
            "ratios": ratios(figures),
            "targets": targets(
                figures, ratios(figures), bench.lengths, bench.table_sizes, bench.search_hits
            )
            + peer_targets(peers)
            + bulk.targets(bulk_load)
            + (postgres_targets(pg) if pg else []),
            "peers": peers,
            "peers_note": bench.peers_note,
            "bulk": bulk_load,
            "profile": profile,
            "explain": explain,
            "postgres": pg,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few iterations of everything")
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write the results")
    parser.add_argument(
        "--only",
        choices=("postgres",),
        default=None,
        help="run one section alone (postgres: needs ABATHUR_BENCH_POSTGRES_URL); its "
        "results go to performance_postgres.json and performance_validation_postgres.md",
    )
    parser.add_argument(
        "--scale-seconds",
        type=float,
        default=None,
        help="how long each phase of the PostgreSQL scale-out run lasts (default 10, quick 2)",
    )
    args = parser.parse_args(argv)
    if args.iterations is None:
        args.iterations = 20 if args.quick else 400
    result = asyncio.run(main_async(args))
    if args.only == "postgres":
        report = write_results(
            args.out, "performance_postgres", "performance_validation_postgres", result,
            render_postgres_only,
        )  # fmt: skip
    else:
        report = write_results(
            args.out, "performance_milestone2", "performance_validation_milestone2", result,
            render, lambda path: plot(result["figures"], path),
        )  # fmt: skip
    print_targets(result["targets"])
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
