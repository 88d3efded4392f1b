"""The bulk-load benchmark keeps working: a few hundred memories, no timing asserted."""

from __future__ import annotations

import pytest

from benchmarks.bulk import main


def test_bulk_benchmark_reports_every_contender(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABATHUR_BENCH_POSTGRES_URL", raising=False)
    assert main(["--items", "300", "--batch", "100", "--fill", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "SQLite: 300 new memories, batches of 100"
    labels = [line.strip().split("  ")[0] for line in lines[1:5]]
    assert labels == [
        "put_memories, abathur",
        "the same rows, sqlite3, default cache",
        "the same rows, sqlite3, 64 MiB cache",
        "the same rows, sqlite3, no secondary indexes",
    ]
    assert lines[5] == "SQLite, the fill scenario: 200 new memories, batches of 200"
    labels = [line.strip().split("  ")[0] for line in lines[6:9]]
    assert labels == [
        "put_memories, one call, abathur",
        "the same rows, sqlite3, indexes rebuilt",
        "the same rows, sqlite3, every index",
    ]
    assert all("/s per CPU second" in line for line in lines[1:5] + lines[6:9])
    # Figures compare only on the same machine (the VM's host changes).
    assert len(lines) == 10 and lines[9].startswith("machine: ")
    assert " cores, load average " in lines[9]
