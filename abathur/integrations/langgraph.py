"""LangGraph on abathur: ``AbathurStore``, a ``langgraph.store.base.BaseStore``.

Install with ``pip install abathur[langgraph]``. This is the only module that
imports ``langgraph``. Usage::

    from abathur.integrations.langgraph import AbathurStore

    store = AbathurStore("agent.db", ttl={"default_ttl": 60, "refresh_on_read": True})
    graph = builder.compile(store=store)

How LangGraph's contract maps onto abathur (docs/integrations.md lists the
differences):

- Namespaces. A LangGraph namespace is a tuple of labels; it is stored under a
  fixed abathur root (``app:langgraph`` unless ``root=`` says otherwise), one
  abathur segment per label: ``("users", "alice")`` is
  ``app:langgraph:users:alice``. In each label ``%``, ``:``, control
  characters and lone surrogates are percent-encoded (``%25``, ``%3A``, ...),
  so every tuple maps to exactly one namespace and back (``abathur_namespace``
  and ``langgraph_namespace``).
- Writes. ``put`` is ``MemoryService.put_memory`` (a new version, one audit
  row; nothing is overwritten), ``delete`` is ``delete_memory`` (a soft
  delete; deleting a missing key is a no-op, as LangGraph expects). Memories
  are of type ``semantic`` unless ``memory_type=`` says otherwise. Audit rows
  name the task ``task_id`` (default ``langgraph-store``, created by
  ``setup()`` with status ``completed`` when missing) and the actor ``actor``.
- Reads. ``get``, ``search`` (``filter``, ``limit``, ``offset``) and
  ``list_namespaces`` (prefix, suffix, ``*`` wildcards, ``max_depth``,
  ``limit``, ``offset``) are the core's ``get_memory``, ``search_memories`` and
  ``list_namespaces``. ``Item.created_at`` is the creation time of the key's
  current life (its first version, or the first after a delete),
  ``updated_at`` the time of its current version.
- TTL. ``ttl`` minutes become the core's per-key TTL. Expired items are
  invisible at once (the core's rule; LangGraph's own SQLite store shows them
  until a sweep). ``refresh_on_read: True`` in the TTL config makes reads
  push the expiry (as in LangGraph's SQLite store, not without it). ``sweep_ttl``
  soft-deletes expired keys (``MemoryService.sweep_expired``); the sweeper
  (``start_ttl_sweeper``) runs it every ``sweep_interval_minutes``, logs a
  failed sweep and goes on (stopping once the database is closed), and stops
  when the future or task it returned is cancelled.
- Threads and loops. The store is bound to one event loop: the one running
  when it is created, or else a private loop in a daemon thread of its own.
  Async methods run there (awaited from another loop, they hop over); sync
  methods called from any other thread block on it, and raise
  ``asyncio.InvalidStateError`` on the loop's own thread (where blocking would
  deadlock), as LangGraph's async stores do. Once that loop is closed (by
  ``close()``, or by the end of the ``asyncio.run`` the store was made in)
  every call raises ``DatabaseClosedError``; while it is stopped but not
  closed, ``asyncio.InvalidStateError`` (instead of waiting forever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Coroutine, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)
from langgraph.store.base.embed import ensure_embeddings
from sqlalchemy.engine import URL

from abathur.domain.memory import MemoryDict
from abathur.domain.values import bool_arg, brief_repr
from abathur.embeddings.embedder import WHOLE_VALUE, Embedder
from abathur.errors import AlreadyExistsError, DatabaseClosedError, ValidationError
from abathur.infrastructure.database import Database
from abathur.infrastructure.memory_service import MemoryService

T = TypeVar("T")
LOG = logging.getLogger("abathur")

DEFAULT_ROOT = "app:langgraph"
DEFAULT_TASK_ID = "langgraph-store"
DEFAULT_ACTOR = "langgraph"
WILDCARD = "*"
DEFAULT_SWEEP_MINUTES = 5.0
# Batches run at once per store; more wait their turn (as LangGraph's async
# stores queue their ops) instead of waiting for a pooled connection, where
# thousands of concurrent calls would exhaust the pool's timeout.
MAX_CONCURRENT_BATCHES = 8


def _must_encode(ch: str) -> bool:
    code = ord(ch)
    return (
        ch in "%:"
        or code < 32
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF  # lone surrogates
    )


def encode_label(label: str) -> str:
    """One LangGraph label as one abathur namespace segment (reversible)."""
    return "".join(
        "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        if _must_encode(ch)
        else ch
        for ch in label
    )


def decode_label(segment: str) -> str:
    """The LangGraph label of a segment made by ``encode_label``."""
    return unquote(segment, errors="surrogatepass")


def abathur_namespace(namespace: tuple[str, ...], root: str = DEFAULT_ROOT) -> str:
    """The abathur namespace of a LangGraph namespace tuple (``()`` is the root)."""
    return ":".join([root, *(encode_label(label) for label in namespace)])


def langgraph_namespace(namespace: str, root: str = DEFAULT_ROOT) -> tuple[str, ...]:
    """The LangGraph tuple of an abathur namespace at or below ``root``."""
    if namespace == root:
        return ()
    if not namespace.startswith(root + ":"):
        raise ValidationError(f"namespace {namespace!r} is not below the store's root {root!r}")
    return tuple(decode_label(s) for s in namespace[len(root) + 1 :].split(":"))


def index_fields(paths: Iterable[str]) -> list[str]:
    """LangGraph field paths as abathur's embedder fields: ``"$"`` (the whole
    value) and dotted names are the same; array paths (``a[*].b``, ``a[0]``)
    have no abathur equivalent and are a ValidationError. A string is one path."""
    fields = [paths] if isinstance(paths, str) else list(paths)
    for path in fields:
        if not isinstance(path, str) or "[" in path or "]" in path:
            raise ValidationError(
                f"index field {path!r}: abathur embeds '$' or dotted object paths, not array paths"
            )
    return fields


def ttl_delta(minutes: Any) -> timedelta | None:
    """A put's ``ttl`` (minutes, LangGraph's unit) as a ``timedelta``; one that
    is no positive duration (NaN, infinite, too large, not a number, zero or
    negative) is a ValidationError."""
    if minutes is None:
        return None
    try:
        delta = timedelta(minutes=minutes)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(
            f"ttl must be a number of minutes a timedelta holds, not {brief_repr(minutes)}"
        ) from exc
    if delta <= timedelta(0):
        raise ValidationError(f"ttl must be positive, not {brief_repr(minutes)} minutes")
    return delta


class _Put(NamedTuple):
    """A checked ``PutOp`` with its ``ttl`` and ``index`` in abathur's terms
    (converted once, by ``AbathurStore._checked``)."""

    op: PutOp
    ttl: timedelta | None
    embed: bool | list[str]  # put_memory's ``index``

    @classmethod
    def of(cls, op: PutOp) -> _Put:
        if op.value is None:  # a delete: neither is used
            return cls(op, None, True)
        index: bool | list[str] = True
        if op.index is False:
            index = False
        elif op.index is not None:
            index = index_fields(op.index) or False  # no fields: nothing to embed
        return cls(op, ttl_delta(op.ttl), index)


def index_embedder(index: IndexConfig) -> Embedder:
    """abathur's Embedder for a LangGraph ``IndexConfig``: ``embed`` (a
    langchain ``Embeddings``, a sync or async function of a list of texts, or a
    ``"provider:model"`` string langchain can resolve), ``dims``, and
    ``fields`` (SQLite's ``text_fields`` is read too; default ``["$"]``).
    Vectors are stored under the model name ``langgraph:<Embeddings class>``."""
    if not isinstance(index, dict) or "embed" not in index or "dims" not in index:
        raise ValidationError("index must be a LangGraph IndexConfig with 'dims' and 'embed'")
    config: dict[str, Any] = dict(index)
    embeddings = ensure_embeddings(config["embed"])
    fields = config.get("fields") or config.get("text_fields") or [WHOLE_VALUE]
    if isinstance(fields, str):
        fields = [fields]
    return Embedder(
        embeddings.aembed_documents,
        config["dims"],
        fields=index_fields(fields),
        model=f"langgraph:{type(embeddings).__name__}",
    )


class AbathurStore(BaseStore):
    """LangGraph's ``BaseStore`` on an abathur database (SQLite or PostgreSQL).

    ``db_or_url`` is a ``Database`` (used as it is; ``close()`` leaves it open)
    or a path / SQLAlchemy URL, which the store opens, migrates on first use
    and closes in ``close()``. ``index`` is LangGraph's ``IndexConfig``, ``ttl``
    its ``TTLConfig`` (minutes). ``root`` is the abathur namespace the
    store's tuples live under, ``memory_type`` the type of the memories it
    writes, ``task_id`` and ``actor`` what its audit rows name.
    ``close_database=True`` makes ``close()`` close a ``Database`` it was
    given (by default it closes only one it opened itself).
    """

    supports_ttl: bool = True

    def __init__(
        self,
        db_or_url: Database | str | Path | URL,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        root: str = DEFAULT_ROOT,
        memory_type: str = "semantic",
        task_id: str = DEFAULT_TASK_ID,
        actor: str = DEFAULT_ACTOR,
        close_database: bool | None = None,
        **engine_options: Any,
    ) -> None:
        embedder = None if index is None else index_embedder(index)
        if isinstance(db_or_url, Database):
            if engine_options:
                raise ValidationError("engine options apply only when the store opens the URL")
            if embedder is not None:
                if db_or_url.embedder is not None:
                    raise ValidationError(
                        "the Database already has an embedder: pass index=None to use it"
                    )
                db_or_url.embedder = embedder
            self._db = db_or_url
            self._owned = False
        else:
            self._db = Database(db_or_url, embedder=embedder, **engine_options)
            self._owned = True
        self._closes = (
            self._owned if close_database is None else bool_arg(close_database, "close_database")
        )
        if not isinstance(root, str) or WILDCARD in root.split(":"):
            raise ValidationError(
                f"root must be an abathur namespace without '*', not {brief_repr(root)}"
            )
        self._root = root
        self._root_depth = len(root.split(":"))
        self.index_config = index
        self.ttl_config = ttl
        self.memory_type = memory_type
        self.task_id = task_id
        self.actor = actor
        self._ready = False
        self._init_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweeper_stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="abathur-langgraph-store", daemon=True
            )
            self._thread.start()

    @property
    def database(self) -> Database:
        return self._db

    @property
    def root(self) -> str:
        """The abathur namespace the store's tuples live under: fixed when
        the store is made (``list_namespaces`` counts depths from it)."""
        return self._root

    # ------------------------------------------------------------ loop plumbing

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _check_open(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._loop.is_closed():
            coro.close()
            raise DatabaseClosedError(
                "this AbathurStore is closed: its event loop is closed (close() ends a "
                "store's own loop; asyncio.run ends the one it was made in); make a new store"
            )
        if self._thread is None and not self._loop.is_running():  # a call would wait forever
            coro.close()
            raise asyncio.InvalidStateError(
                "the event loop this AbathurStore was made in is not running: call it while "
                "that loop runs (or await it there), or make the store outside any loop"
            )

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop from a thread other than the loop's."""
        self._check_open(coro)
        if self._on_loop():
            coro.close()
            raise asyncio.InvalidStateError(
                "Synchronous calls to AbathurStore detected in the event loop it runs on. "
                "Use the async methods (aget, aput, asearch, ...) there, or call the sync "
                "methods from another thread."
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the store's loop, from it or from another loop."""
        if self._on_loop():
            return await coro
        self._check_open(coro)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(future)

    # ------------------------------------------------------------ lifecycle

    async def _memory(self) -> MemoryService:
        if not self._ready:
            if self._init_lock is None:
                self._init_lock = asyncio.Lock()
            async with self._init_lock:
                if not self._ready:
                    if self._owned:
                        await self._db.initialize()
                    await self._ensure_task()
                    self._ready = True
        return self._db.memory

    async def _ensure_task(self) -> None:
        if await self._db.tasks.get_task(self.task_id) is not None:
            return
        with contextlib.suppress(AlreadyExistsError):  # another store created it meanwhile
            await self._db.tasks.create_task(
                "LangGraph store writes",
                id=self.task_id,
                status="completed",
                created_by=self.actor,
            )

    async def asetup(self) -> None:
        """Migrate an owned database and make sure the store's task exists."""
        await self._async(self._memory())

    def setup(self) -> None:
        """As ``asetup``, from sync code."""
        self._sync(self._memory())

    async def _close(self) -> None:
        await self._stop_sweeper(None)
        if self._closes:
            await self._db.close()
        self._ready = False

    async def aclose(self) -> None:
        """Stop the sweeper and close the database if the store opened it."""
        if self._loop.is_closed():  # closed already, or its loop has ended
            return
        await self._async(self._close())

    def close(self) -> None:
        """As ``aclose``, from sync code; also ends the store's private loop thread."""
        if self._loop.is_closed():  # closed already, or its loop has ended
            return
        if self._thread is None:
            self._sync(self._close())
            return
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> AbathurStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AbathurStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._thread is None:
            await self.aclose()
        else:
            await asyncio.to_thread(self.close)

    # ------------------------------------------------------------ TTL

    async def _sweep(self) -> int:
        memory = await self._memory()
        return await memory.sweep_expired(task_id=self.task_id)

    async def asweep_ttl(self) -> int:
        """Soft-delete every expired item now; the number of items."""
        return await self._async(self._sweep())

    def sweep_ttl(self) -> int:
        """As ``asweep_ttl``, from sync code."""
        return self._sync(self._sweep())

    async def _start_sweeper(self, minutes: float | None) -> asyncio.Task[None]:
        if self._sweeper is not None and not self._sweeper.done():
            return self._sweeper
        config = self.ttl_config or {}
        interval = minutes if minutes is not None else config.get("sweep_interval_minutes")
        seconds = float(interval if interval is not None else DEFAULT_SWEEP_MINUTES) * 60
        if not 0 < seconds < math.inf:  # NaN too
            raise ValidationError(
                f"sweep interval must be positive, not {brief_repr(interval)} minutes"
            )
        stop = asyncio.Event()

        async def run() -> None:
            while True:
                try:
                    await asyncio.wait_for(stop.wait(), seconds)
                    return
                except TimeoutError:
                    pass
                try:
                    await self._sweep()
                except DatabaseClosedError:  # for good: no later sweep can work
                    LOG.warning("LangGraph store TTL sweeper stops: the database is closed")
                    return
                except Exception:  # the next sweep may work (LangGraph's sweepers go on too)
                    LOG.exception(
                        "LangGraph store TTL sweep failed; sweeping again in %s s", seconds
                    )

        self._sweeper_stop = stop
        self._sweeper = asyncio.create_task(run(), name="abathur-langgraph-ttl-sweeper")
        return self._sweeper

    async def astart_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        """Start sweeping every ``sweep_interval_minutes`` (else the TTL config's
        ``sweep_interval_minutes``, else 5) on the store's loop; a task of the
        caller's loop that ends when the sweeper stops (cancelling it stops
        the sweeper)."""
        if self._on_loop():
            return await self._start_sweeper(sweep_interval_minutes)
        task = await self._async(self._start_sweeper(sweep_interval_minutes))
        waiter = self._waiter(task)
        follower = asyncio.create_task(self._follow(waiter), name="abathur-langgraph-ttl-sweeper")
        # Cancelled even before it starts, the follower cancels the waiter.
        follower.add_done_callback(lambda f: waiter.cancel() if f.cancelled() else None)
        return follower

    @staticmethod
    async def _follow(waiter: concurrent.futures.Future[None]) -> None:
        await asyncio.wrap_future(waiter)

    def _waiter(self, task: asyncio.Task[None]) -> concurrent.futures.Future[None]:
        """A future of the sweeper ``task``'s end; cancelling it stops the
        sweeper, as cancelling the future LangGraph's stores return does."""
        waiter = asyncio.run_coroutine_threadsafe(self._await_sweeper(task), self._loop)

        def cancelled(f: concurrent.futures.Future[None]) -> None:
            if f.cancelled():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._signal_stop, task)

        waiter.add_done_callback(cancelled)
        return waiter

    @staticmethod
    async def _await_sweeper(task: asyncio.Task[None]) -> None:
        await asyncio.shield(task)

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """As ``astart_ttl_sweeper``, from sync code: a future that completes
        when the sweeper stops (cancelling it stops the sweeper)."""
        return self._waiter(self._sync(self._start_sweeper(sweep_interval_minutes)))

    def _signal_stop(self, task: asyncio.Task[None]) -> None:
        if self._sweeper is task and self._sweeper_stop is not None:
            self._sweeper_stop.set()

    # LangGraph's API names the parameter ``timeout`` (stop_ttl_sweeper).
    async def _stop_sweeper(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        task, stop = self._sweeper, self._sweeper_stop
        if task is None or stop is None:
            return True
        stop.set()
        # ``wait`` never raises what ended the task (a cancellation by whoever
        # holds it, say): a stopped sweeper is stopped however it ended.
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            return False
        self._sweeper = self._sweeper_stop = None
        return True

    async def astop_ttl_sweeper(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Stop the sweeper; False if it did not stop within ``timeout`` seconds."""
        return await self._async(self._stop_sweeper(timeout))

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """As ``astop_ttl_sweeper``, from sync code."""
        return self._sync(self._stop_sweeper(timeout))

    # ------------------------------------------------------------ BaseStore

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order; their results in the same order."""
        checked = self._checked(ops)
        return self._sync(self._run(checked))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order; their results in the same order."""
        checked = self._checked(ops)
        if self._on_loop():  # ``_async``'s own case, without its coroutine on every call
            return await self._run(checked)
        return await self._async(self._run(checked))

    @staticmethod
    def _checked(ops: Iterable[Op]) -> list[Op | _Put]:
        """Every op's labels (LangGraph's ``validate_op_namespace``) and every
        put's ``ttl`` and ``index`` fields are checked before any op runs, so
        such a bad batch changes nothing. A put comes back as a ``_Put``
        carrying its converted ``ttl`` and ``index``."""
        checked: list[Op | _Put] = []
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                checked.append(_Put.of(op))
            else:
                checked.append(op)
        return checked

    async def _run(self, ops: list[Op | _Put]) -> list[Result]:
        memory = self._db.memory if self._ready else await self._memory()
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_CONCURRENT_BATCHES)
        async with self._slots:
            return await self._run_ops(memory, ops)

    async def _run_ops(self, memory: MemoryService, ops: list[Op | _Put]) -> list[Result]:
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(await self._get(memory, op))
            elif isinstance(op, SearchOp):
                results.append(await self._search(memory, op))
            elif isinstance(op, _Put):
                await self._put(memory, op)
                results.append(None)
            elif isinstance(op, ListNamespacesOp):
                results.append(await self._list(memory, op))
            else:
                raise ValidationError(f"unknown store operation {op!r}")
        return results

    def _refresh(self, requested: bool) -> bool:
        """Reads refresh expiries only when asked and the store's TTL config
        sets ``refresh_on_read`` (LangGraph's SQLite store's rule: without the
        setting, or without a TTL config, reads never move an expiry)."""
        config = self.ttl_config
        return bool(requested) and config is not None and bool(config.get("refresh_on_read"))

    def _item(self, row: MemoryDict) -> Item:
        return Item(
            value=row["value"],
            key=row["key"],
            namespace=langgraph_namespace(row["namespace"], self._root),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def _get(self, memory: MemoryService, op: GetOp) -> Item | None:
        row = await memory.get_memory(
            abathur_namespace(op.namespace, self._root),
            op.key,
            refresh_ttl=self._refresh(op.refresh_ttl),
        )
        return None if row is None else self._item(row)

    async def _search(self, memory: MemoryService, op: SearchOp) -> list[SearchItem]:
        # A query ranks by meaning when the database has an embedder; an empty
        # query, or none, searches newest first (LangGraph's stores do the same).
        query = op.query if op.query and self._db.embedder is not None else None
        rows = await memory.search_memories(
            abathur_namespace(op.namespace_prefix, self._root),
            None,
            op.limit,
            filter=op.filter,
            offset=op.offset,
            refresh_ttl=self._refresh(op.refresh_ttl),
            query=query,
        )
        # Results share few namespaces: each is decoded once.
        tuples: dict[str, tuple[str, ...]] = {}
        for r in rows:
            if r["namespace"] not in tuples:
                tuples[r["namespace"]] = langgraph_namespace(r["namespace"], self._root)
        return [
            SearchItem(
                namespace=tuples[r["namespace"]],
                key=r["key"],
                value=r["value"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                score=r.get("score"),
            )
            for r in rows
        ]

    async def _put(self, memory: MemoryService, put: _Put) -> None:
        op = put.op
        namespace = abathur_namespace(op.namespace, self._root)
        if op.value is None:
            await memory.delete_memory(namespace, op.key, self.actor, self.task_id, missing_ok=True)
            return
        await memory.put_memory(
            namespace,
            op.key,
            dict(op.value),
            self.memory_type,
            by=self.actor,
            task_id=self.task_id,
            ttl=put.ttl,
            index=put.embed,
        )

    async def _list(self, memory: MemoryService, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        prefix: tuple[str, ...] = ()
        suffix: tuple[str, ...] | None = None
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix" and not prefix:
                prefix = tuple(condition.path)
            elif condition.match_type == "suffix" and suffix is None:
                suffix = tuple(condition.path)
            else:
                raise ValidationError(
                    "list_namespaces takes at most one prefix and one suffix condition, "
                    f"not {op.match_conditions!r}"
                )
        if op.max_depth is not None and op.max_depth < 0:
            raise ValidationError(f"max_depth must be 0 or more, not {brief_repr(op.max_depth)}")
        depth = None if op.max_depth is None else op.max_depth + self._root_depth
        # A suffix never reaches into the root's segments: the namespace must
        # have at least as many labels as the suffix (and one, the root itself
        # being no LangGraph namespace).
        min_depth = self._root_depth + max(1, len(suffix or ()))
        found = await memory.list_namespaces(
            abathur_namespace(prefix, self._root),
            suffix=None if not suffix else ":".join(encode_label(s) for s in suffix),
            wildcard=WILDCARD,
            min_depth=min_depth,
            max_depth=depth,
            limit=op.limit,
            offset=op.offset,
        )
        return [langgraph_namespace(ns, self._root) for ns in found]
