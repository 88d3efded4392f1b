"""No lost update: concurrent appends and state writes on one session, on both
backends, and several OS processes appending to one SQLite file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from abathur.infrastructure.database import Database

SESSIONS = 50
APPENDS = 20


async def test_concurrent_appends_keep_every_event_and_state_key(db: Database) -> None:
    ids = [f"s{i}" for i in range(SESSIONS)]
    for sid in ids:
        await db.sessions.create_session(sid, "app", "alice")

    await asyncio.gather(
        *(
            db.sessions.append_event(sid, {"writer": n}, {f"k{n}": n})
            for n in range(APPENDS)
            for sid in ids
        )
    )

    for sid in ids:
        got = await db.sessions.get_session(sid)
        assert got is not None
        assert sorted(e["writer"] for e in got["events"]) == list(range(APPENDS))
        assert got["state"] == {f"k{n}": n for n in range(APPENDS)}
        assert [e["seq"] for e in await db.sessions.list_events(sid)] == list(range(1, APPENDS + 1))


async def test_concurrent_state_writers_keep_every_key(db: Database) -> None:
    await db.sessions.create_session("s", "app", "alice", initial_state={"base": True})
    writers = 50
    await asyncio.gather(
        *(db.sessions.set_state("s", f"key{n}", {"n": n}) for n in range(writers)),
        *(db.sessions.append_event("s", {"n": n}, {f"delta{n}": n}) for n in range(writers)),
    )
    got = await db.sessions.get_session("s")
    assert got is not None
    expected = {"base": True}
    expected |= {f"key{n}": {"n": n} for n in range(writers)}
    expected |= {f"delta{n}": n for n in range(writers)}
    assert got["state"] == expected
    assert len(got["events"]) == writers


async def test_concurrent_expected_seq_lets_exactly_one_writer_win(db: Database) -> None:
    await db.sessions.create_session("s", "app", "alice")
    results = await asyncio.gather(
        *(db.sessions.append_event("s", {"n": n}, expected_seq=0) for n in range(10)),
        return_exceptions=True,
    )
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"NoneType": 1, "StaleSessionError": 9}
    got = await db.sessions.get_session("s")
    assert got is not None and len(got["events"]) == 1


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from abathur.infrastructure.database import Database

    async def main(path, worker, count, go):
        db = Database(Path(path))
        try:
            Path(f"{go}.ready{worker}").touch()
            deadline = time.monotonic() + 30
            while not Path(go).exists():
                if time.monotonic() > deadline:
                    raise SystemExit("never told to go")
                await asyncio.sleep(0.01)
            await asyncio.gather(*(
                db.sessions.append_event("shared", {"worker": worker, "i": i}, {f"w{worker}": i})
                for i in range(count)
            ))
        finally:
            await db.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    """
)


ROOT = Path(__file__).resolve().parents[2]


def run_workers(tmp_path: Path, path: Path, workers: int, count: int) -> list[tuple[int, str]]:
    """Start the worker processes, release them together, and wait for them."""
    go = tmp_path / "go"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(w), str(count), str(go)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    try:
        for _ in range(3000):
            if all((tmp_path / f"go.ready{w}").exists() for w in range(workers)):
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate(timeout=60)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errors, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
async def test_processes_appending_to_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    workers, count = 4, 50
    async with Database(path) as db:
        await db.sessions.create_session("shared", "app", "alice")
        outcomes = await asyncio.to_thread(run_workers, tmp_path, path, workers, count)
        for returncode, err in outcomes:
            assert returncode == 0, err
            assert "locked" not in err, err

        got = await db.sessions.get_session("shared")
        assert got is not None
        assert got["last_seq"] == workers * count
        seen = Counter((e["worker"], e["i"]) for e in got["events"])
        assert seen == Counter((w, i) for w in range(workers) for i in range(count))
        seqs = [e["seq"] for e in await db.sessions.list_events("shared", limit=1000)]
        assert seqs == list(range(1, workers * count + 1))
        assert set(got["state"]) == {f"w{w}" for w in range(workers)}
        assert await db.integrity_check() == "ok"
