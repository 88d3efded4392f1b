"""The recall benchmark keeps working: small sizes, a few iterations, no timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.recall import main


def test_quick_recall_benchmark_writes_results_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABATHUR_BENCH_POSTGRES_URL", raising=False)
    assert main(["--quick", "--iterations", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "performance_recall.json").read_text())
    searches = [f for f in result["figures"] if f["op"] == "query search (warm)"]
    assert [f["subtree"] for f in searches] == [200, 1000]
    assert all(f["p99_us"] >= f["p50_us"] > 0 for f in result["figures"])
    assert {t["target"].split(":")[0] for t in result["targets"]} == {"sqlite"}
    report = (tmp_path / "performance_recall.md").read_text()
    assert "## Query search" in report and "## Writes" in report
