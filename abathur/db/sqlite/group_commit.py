"""Group commit: the writers of one SQLite file that wait together commit together.

SQLite has one writer at a time, so a process's writers take turns on the
Database's asyncio writer lock. A writer that finds nobody writing runs its
unit at once, in its own transaction. Writers that arrive while someone is
writing join a queue; one committer task then takes the lock and runs every
queued unit in one transaction and one crossing to the connection's worker
thread, each unit in a SAVEPOINT of its own, and repeats while units keep
arriving. A unit that fails is rolled back alone and only its caller gets the
exception; the rest commit together. A caller cancelled before its unit
starts never runs it.

Two hundred writers waiting behind one another then cost one BEGIN, one
COMMIT and one thread crossing, not two hundred of each; what each caller
sees is unchanged (its unit is atomic, and it returns once its unit is
committed, as durable as ``synchronous=NORMAL`` makes any commit).

A batch that fails as a whole (a lock another process held past the busy
timeout) is retried whole, like any unit of work: units are plain functions
of their arguments, so running one again after a rollback is safe. A unit
whose error made SQLite roll back the whole transaction (SQLITE_FULL may)
gets its error; the batch's other units, rolled back with it, run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from abathur.db.sqlite.worker import execute_in_worker, future_safe, worker_connection

T = TypeVar("T")
# Set in ``Connection.info`` while a batch runs: its units share one transaction.
GROUPED = "abathur_grouped"
Outcome = tuple[bool, Any]  # (succeeded, result or exception)
Body = Callable[[Connection], Any]


class _Request(Generic[T]):
    """A queued unit: run ``work`` in a shared transaction, or ``alone`` (with
    its own transaction handling) in a batch of one; ``future`` gets the outcome."""

    __slots__ = ("alone", "future", "work")

    def __init__(self, work: Callable[[Connection], T], alone: Callable[[Connection], T]):
        self.work = work
        self.alone = alone
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()


class _TransactionLost(Exception):
    """A unit's error ended the batch's whole transaction, not its savepoint."""

    def __init__(self, request: _Request[Any], error: Exception):
        super().__init__(str(error))
        self.request = request
        self.error = error


class GroupCommit:
    """Runs queued write units in shared transactions (see the module)."""

    def __init__(
        self,
        lock: asyncio.Lock,
        run: Callable[[Body], Awaitable[Any]],
        retryable: Callable[[BaseException], bool],
    ) -> None:
        self._lock = lock
        self._run = run  # runs a body on the writer connection, retrying contention
        self._retryable = retryable  # errors that fail a whole batch, to be retried
        self._queue: list[_Request[Any]] = []
        self._committer: asyncio.Task[None] | None = None
        self._solo = False  # a writer runs alone, or waits for the lock to do so

    @property
    def committer(self) -> asyncio.Task[None] | None:
        """The task committing queued units, while there are any."""
        return self._committer

    async def submit(self, work: Callable[[Connection], T], alone: Callable[[Connection], T]) -> T:
        """Run ``work`` with whatever else is queued, or ``alone`` (its own
        transaction handling) if nobody else is writing; return its result."""
        if self._committer is None and not self._solo and not self._lock.locked():
            # Nobody else is writing: no queue, no task. Until this unit ends,
            # later writers queue behind it: the lock may be passing to someone
            # else who waited for it (``Database.transaction``, the checkpoint),
            # and ``locked()`` says False meanwhile. Writers that judged by it
            # alone would each wait there alone and run in single file for good.
            self._solo = True
            try:
                async with self._lock:
                    result: T = await self._run(alone)
                    return result
            finally:
                self._solo = False
        request: _Request[T] = _Request(work, alone)
        self._queue.append(request)
        if self._committer is None:
            self._committer = asyncio.ensure_future(self._drain())
        # A caller cancelled while it waits cancels its future: the committer
        # then skips its unit if it has not started.
        return await request.future

    async def _drain(self) -> None:
        """Commit batches until the queue is empty, one at a time under the lock."""
        batch: list[_Request[Any]] = []
        try:
            while self._queue:
                # One batch per turn of the lock: anyone else waiting for it
                # (``Database.transaction``) gets a turn between batches.
                async with self._lock:
                    batch = [r for r in self._queue if not r.future.done()]
                    self._queue = []
                    if batch:
                        await self._commit(batch)
                    batch = []
        finally:
            self._committer = None
            for request in batch + self._queue:  # only if the committer itself was cancelled
                request.future.cancel()

    async def _commit(self, batch: list[_Request[Any]]) -> None:
        try:
            if len(batch) == 1:
                outcomes = [(True, await self._run(partial(_run_alone, batch[0])))]
            else:
                outcomes = await self._run(partial(_run_batch, batch, self._retryable))
        except _TransactionLost as lost:  # the rest was rolled back unharmed: run it again
            if not lost.request.future.done():
                lost.request.future.set_exception(lost.error)
            rest = [r for r in batch if r is not lost.request and not r.future.done()]
            if rest:
                await self._commit(rest)
            return
        except Exception as exc:  # the batch as a whole failed: nothing committed
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, (ok, value) in zip(batch, outcomes, strict=True):
            if not request.future.done():
                if ok:
                    request.future.set_result(value)
                else:
                    request.future.set_exception(value)


def _run_alone(request: _Request[T], conn: Connection) -> T | None:
    """In the worker thread: a batch of one, in the unit's own transaction."""
    if request.future.done():  # its caller was cancelled (perhaps while a retry waited)
        return None
    return request.alone(conn)


def _run_batch(
    batch: list[_Request[Any]], retryable: Callable[[BaseException], bool], conn: Connection
) -> list[Outcome]:
    """In the worker thread: every unit of the batch in one transaction, each
    in a SAVEPOINT of its own."""
    conn.info[GROUPED] = True  # ORM units then work in a savepoint too (Database.run)
    try:
        with conn.begin():
            return [_run_unit(request, retryable, conn) for request in batch]
    finally:
        conn.info.pop(GROUPED, None)


def _run_unit(
    request: _Request[Any], retryable: Callable[[BaseException], bool], conn: Connection
) -> Outcome:
    if request.future.done():  # its caller was cancelled (perhaps while a retry waited)
        return (False, None)
    execute_in_worker("SAVEPOINT grouped_unit")
    try:
        result = request.work(conn)
    except Exception as exc:
        if retryable(exc):
            raise  # contention: the whole batch is retried
        raw = worker_connection()
        if raw is not None and not raw.in_transaction:  # SQLite ended the transaction
            raise _TransactionLost(request, future_safe(_first_cause(exc))) from exc
        execute_in_worker("ROLLBACK TO grouped_unit")
        execute_in_worker("RELEASE grouped_unit")
        return (False, future_safe(exc))
    execute_in_worker("RELEASE grouped_unit")
    return (True, result)


def _first_cause(exc: Exception) -> Exception:
    """The error that ended the transaction: a savepoint's ROLLBACK TO, sent
    while handling it, fails ("no such savepoint") and hides it as context."""
    first = exc
    seen = {id(exc)}
    cause = exc.__context__
    while isinstance(cause, Exception) and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DBAPIError):
            first = cause
        cause = cause.__context__
    return first
