"""The scale benchmark keeps working: ``--quick`` sizes, a few calls, figures for
every search variant at every size on SQLite (and PostgreSQL when
ABATHUR_TEST_POSTGRES_URL is set); no timing asserted."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from benchmarks.scale import QUICK_SIZES, VARIANTS, main


def test_quick_scale_benchmark_writes_results_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = os.environ.get("ABATHUR_TEST_POSTGRES_URL")
    if url:
        monkeypatch.setenv("ABATHUR_BENCH_POSTGRES_URL", url)
    else:
        monkeypatch.delenv("ABATHUR_BENCH_POSTGRES_URL", raising=False)
    args = ["--quick", "--iterations", "3", "--budget", "0.2", "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads((tmp_path / "performance_scale.json").read_text())
    backends = ["sqlite", "postgresql"] if url else ["sqlite"]
    figures = result["figures"]
    for backend in backends:
        for v in VARIANTS:
            found = sorted(
                f["rows"]
                for f in figures
                if (f["backend"], f["impl"], f["op"]) == (backend, "abathur", v.name)
            )
            assert found == list(QUICK_SIZES), (backend, v.name)
    peer = {(f["op"], f["rows"]) for f in figures if f["impl"] == "langgraph"}
    if importlib.util.find_spec("langgraph.store.sqlite") is not None:
        assert peer == {(v.name, s) for v in VARIANTS if v.peer for s in QUICK_SIZES}
    assert all(f["p99_us"] >= f["p50_us"] > 0 for f in figures)
    assert all(f["returned"] > 0 for f in figures)
    growth = [t for t in result["targets"] if "growth" in t["target"]]
    assert len(growth) == len(backends) * sum(v.target for v in VARIANTS)
    assert {f["backend"] for f in result["fills"]} == set(backends)
    report = (tmp_path / "performance_scale.md").read_text()
    assert "## Targets" in report and "## SQLite" in report and "## Fill" in report
    assert ("## PostgreSQL" in report) == bool(url)
