"""Child processes that start their work at the same instant.

Each child runs ``SCRIPT``: the caller's code (which defines ``async def
main(*args)``), then a wait for a starting gun, a file that appears once every
child has imported abathur and is ready. Without it, the first child would be
done before the last one started, and a test of concurrency would test
nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the worktree: its abathur, not an installed one
START = textwrap.dedent(
    """

    def _wait_for_go(go, me):
        import time
        from pathlib import Path

        Path(f"{go}.ready{me}").touch()
        while not Path(go).exists():  # the parent kills us if it gives up
            time.sleep(0.005)

    if __name__ == "__main__":
        import asyncio, sys

        _wait_for_go(sys.argv[1], sys.argv[2])
        asyncio.run(main(*sys.argv[3:]))
    """
)


def run_together(tmp_path: Path, code: str, args: list[list[str]]) -> list[tuple[int, str]]:
    """Run ``code`` in one process per entry of ``args`` (its ``main``'s
    arguments), release them together, and return each one's exit code and
    standard error."""
    go = tmp_path / "go"
    script = tmp_path / "together.py"
    script.write_text(textwrap.dedent(code) + START)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(go), str(n), *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, argv in enumerate(args)
    ]
    try:
        while not all((tmp_path / f"go.ready{n}").exists() for n in range(len(procs))):
            if any(p.poll() is not None for p in procs):
                break  # one died early: its error is reported below
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate()[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errors, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


async def run_all_ok(tmp_path: Path, code: str, args: list[list[str]]) -> list[str]:
    """``run_together`` off the event loop, every process exiting 0 (else the
    test fails with that process's standard error); each one's standard error."""
    outcomes = await asyncio.to_thread(run_together, tmp_path, code, args)
    for returncode, err in outcomes:
        assert returncode == 0, err
    return [err for _, err in outcomes]
