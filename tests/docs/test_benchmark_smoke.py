"""`make bench` keeps working: a few iterations of every case, no timing asserted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from benchmarks.run import EVENT, IMPLS, Contestants, main, migrated_file, prefill


def test_quick_benchmark_writes_results_report_and_loses_nothing(tmp_path: Path) -> None:
    assert main(["--quick", "--iterations", "5", "--out", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "performance_milestone2.json").read_text())
    ops: dict[str, set[str]] = {}
    for figure in result["figures"]:
        ops.setdefault(figure["op"], set()).add(figure["impl"])
        assert figure["p50_us"] > 0 and figure["p99_us"] >= figure["p50_us"]
        assert figure.get("lost_events", 0) == 0
    # Issue 11's retrieval cases have no hand-written baseline: abathur alone.
    retrieval = [op for op in ops if op.startswith("retrieval: ")]
    assert len(retrieval) == 10 and all(ops[op] == {"abathur"} for op in retrieval), ops
    single = [op for op in ops if "concurrent" not in op and op not in retrieval]
    assert all(ops[op] == set(IMPLS) for op in single), ops
    assert result["explain"] and all(not e["full_scan"] for e in result["explain"])
    named = {t["target"] for t in result["targets"]}
    assert "200 concurrent sessions x appends: p99 under 50 ms, nothing lost" in named
    assert len([t for t in named if t.startswith("issue 11: ")]) == 5, named
    report = (tmp_path / "performance_validation_milestone2.md").read_text()
    assert "## Targets" in report and "## Index usage" in report
    # The ADK and LangGraph peers (the dev and bench extras install google-adk and
    # langgraph-checkpoint-sqlite).
    assert {r["op"] for r in result["peers"]} == {
        "ADK create_session",
        "ADK append_event",
        "ADK get_session (100 events)",
        "LangGraph put (update)",
        "LangGraph get",
        "LangGraph search (10 of 100)",
        "LangGraph search (filter, 10 of 100)",
    }
    assert all(r["abathur"]["p50_us"] > 0 and r["peer"]["p50_us"] > 0 for r in result["peers"])
    assert "## Peers: Google ADK and LangGraph" in report


def _stored(path: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The session's state and its events without their generated id and time."""
    conn = sqlite3.connect(path)
    try:
        (state,) = conn.execute("SELECT state FROM sessions WHERE id = 's'").fetchone()
        events = [
            {k: v for k, v in json.loads(e).items() if k not in ("event_id", "timestamp")}
            for (e,) in conn.execute(
                "SELECT event FROM session_events WHERE session_id = 's' ORDER BY seq"
            )
        ]
    finally:
        conn.close()
    return json.loads(state), events


async def test_baselines_do_the_same_work_as_abathur(tmp_path: Path) -> None:
    """The ratios compare like with like: the hand-written baselines leave the
    same state and events as abathur (nested values replaced whole, nulls kept)."""
    base = tmp_path / "base.db"
    await migrated_file(base)
    prefill(base, sessions={"s": 0})
    async with Contestants(base, tmp_path, "same") as c:
        assert c.db and c.aio and c.sync
        for i in range(4):
            event = {**EVENT, "i": i}
            delta = {f"session:k{i % 2}": {"i": i, "none": None}, "n": i, "gone": None}
            await c.db.sessions.append_event("s", event, state_delta=delta)
            await c.aio.append_event("s", event, delta)
            c.sync.append_event("s", event, delta)
    expected = (
        {"session:k0": {"i": 2, "none": None}, "session:k1": {"i": 3, "none": None}, "n": 3,
         "gone": None},
        [{**EVENT, "i": i} for i in range(4)],
    )  # fmt: skip
    assert {impl: _stored(path) for impl, path in c.paths.items()} == dict.fromkeys(IMPLS, expected)
