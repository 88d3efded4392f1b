"""`make bench` keeps working: a few iterations of every case, no timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.run import IMPLS, main


def test_quick_benchmark_writes_results_report_and_loses_nothing(tmp_path: Path) -> None:
    assert main(["--quick", "--iterations", "5", "--out", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "performance_milestone2.json").read_text())
    ops: dict[str, set[str]] = {}
    for figure in result["figures"]:
        ops.setdefault(figure["op"], set()).add(figure["impl"])
        assert figure["p50_us"] > 0 and figure["p99_us"] >= figure["p50_us"]
        assert figure.get("lost_events", 0) == 0
    single = [op for op in ops if "concurrent" not in op]
    assert all(ops[op] == set(IMPLS) for op in single), ops
    assert result["explain"] and all(not e["full_scan"] for e in result["explain"])
    assert {t["target"] for t in result["targets"]} >= {
        "200 concurrent sessions x appends: p99 under 50 ms, nothing lost"
    }
    report = (tmp_path / "performance_validation_milestone2.md").read_text()
    assert "## Targets" in report and "## Index usage" in report
