"""The bulk-load benchmark keeps working: a few hundred memories, no timing asserted."""

from __future__ import annotations

import pytest

from benchmarks.bulk import main


def test_bulk_benchmark_reports_every_contender(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--items", "300", "--batch", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "300 new memories, batches of 100"
    labels = [line.split("  ")[0] for line in lines[1:]]
    assert labels == [
        "put_memories",
        "bare sqlite3, default cache",
        "bare sqlite3, 64 MiB cache",
        "bare sqlite3, no secondary indexes",
    ]
    assert all("/s per CPU second" in line for line in lines[1:])
