"""Background upkeep of a file database: WAL checkpoints off the commit path."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from abathur.db.sqlite.worker import execute_in_worker, run_unit_in_worker

LOG = logging.getLogger("abathur")
# A file Database checkpoints its WAL in the background, off the commit path,
# after this many write units; SQLite's own automatic checkpoint, which runs
# inside whichever COMMIT crosses 1000 pages and makes every writer queued
# behind that COMMIT wait for its fsync, is off on its connections.
CHECKPOINT_EVERY = 500
# A WAL of this many frames (16 MB of 4 KB pages; SQLite's own automatic
# checkpoint restarts it at 1000) is checkpointed to its end under the
# Database's locks, and the next write starts it over from its beginning
# (``Checkpointer._run``).
WAL_RESTART_FRAMES = 4000
# How long that restarting checkpoint waits for readers and writers it cannot
# see otherwise (other processes', ``transaction()`` blocks) before it gives
# up until soon after.
RESTART_WAIT_MS = 1000


def _checkpoint(conn: Connection) -> int:
    """In the worker thread: copy committed WAL frames into the database file;
    the number of frames the WAL holds.

    PASSIVE: it neither waits for nor blocks readers and writers; frames it
    cannot copy yet (a reader still needs them) wait for the next run.
    """
    _busy, frames, _copied = execute_in_worker("PRAGMA wal_checkpoint(PASSIVE)")
    return int(frames)


def _restart(conn: Connection) -> bool:
    """In the worker thread: copy every frame, so that the next write starts
    the WAL over from its beginning; False if readers or writers still held
    it after ``RESTART_WAIT_MS``.

    RESTART waits (SQLite's busy handler, with a busy timeout of its own)
    until no process writes and no reader needs the WAL, holding off new
    writers in every process meanwhile: the file's own locks coordinate the
    checkpointers of all processes. PASSIVE could never finish while some
    reader held an old snapshot, and the WAL grew without end.

    Not TRUNCATE: truncating the file to nothing is an ftruncate of 16 MB,
    under the writer lock, that every queued writer waits for; and the writes
    after it grow the file again block by block. RESTART leaves the file as
    large as it grew (about ``WAL_RESTART_FRAMES`` frames) and writes over it
    from the start: the WAL's content is bounded just the same.
    """
    (timeout,) = execute_in_worker("PRAGMA busy_timeout")
    execute_in_worker(f"PRAGMA busy_timeout={int(RESTART_WAIT_MS)}")
    try:
        busy, _frames, _copied = execute_in_worker("PRAGMA wal_checkpoint(RESTART)")
    finally:
        execute_in_worker(f"PRAGMA busy_timeout={int(timeout)}")
    return not busy


class Checkpointer:
    """Counts committed write units and runs a checkpoint every
    ``CHECKPOINT_EVERY`` of them, as a task of its own."""

    def __init__(self, engine: AsyncEngine, writer: asyncio.Lock, reader: asyncio.Lock):
        self._engine = engine
        self._writer = writer
        self._reader = reader
        self._writes = 0
        self.running: asyncio.Task[None] | None = None
        self.stopped = False

    def wrote(self) -> None:
        """Count a committed write unit; start a background checkpoint when due."""
        if self.stopped:
            return
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and self.running is None:
            self._writes = 0
            self.running = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """A PASSIVE checkpoint on a connection of its own, holding no lock of
        the Database: writers and readers carry on while it copies and syncs.

        SQLite starts the WAL over from its beginning only after a checkpoint
        that copied every frame, with no reader left on an old snapshot; writers
        that never pause, and readers beside them (in this process or another),
        leave every PASSIVE checkpoint short: the WAL would grow with every
        write, forever. So once it holds ``WAL_RESTART_FRAMES`` frames, a
        second pass takes this process's writer and reader locks (between two
        batches of group commit, between two reads) and runs a RESTART
        checkpoint, which waits briefly for everyone else (``_restart``).
        If they outlast the wait, the next attempt comes after a quarter of
        the usual writes.
        """
        try:
            async with self._engine.connect() as conn:
                frames = await run_unit_in_worker(conn, _checkpoint)
                if frames >= WAL_RESTART_FRAMES:
                    async with self._writer, self._reader:
                        done = await run_unit_in_worker(conn, _restart)
                    if not done:
                        LOG.info("WAL still in use by readers; restarting it again soon")
                        self._writes = CHECKPOINT_EVERY * 3 // 4
        except Exception as exc:  # a missed checkpoint is retried after the next write
            LOG.warning("background WAL checkpoint failed: %s", exc)
            self._writes = CHECKPOINT_EVERY
        finally:
            self.running = None
