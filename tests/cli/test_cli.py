"""The ``abathur`` command line, driven through click's test runner (the same
``cli`` group that the console script ``abathur.cli:main`` runs) and, for the
demo and one failure, through the installed console script itself.

Every test gets its own SQLite file in ``tmp_path``. Most start from a
database the demo filled: session ``demo-session``, task ``demo-task`` and the
memory ``user:alice:preferences``/``coding_style`` at version 2.
"""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from abathur.cli import cli, main
from abathur.cli.demo import KEY, NAMESPACE, SESSION_ID, TASK_ID
from abathur.strict_json import MAX_JSON_DEPTH

PG_URL = os.environ.get("ABATHUR_TEST_POSTGRES_URL")

# click < 8.2 mixes stderr into output unless told not to; 8.2 removed the option
# and always keeps stderr apart.
_SEPARATE_STDERR: dict[str, Any] = (
    {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
)


def invoke(db: Path | str, *args: str) -> Result:
    """Run ``abathur --db DB ARGS...`` with a clean environment variable."""
    runner = CliRunner(
        env={"ABATHUR_DATABASE_URL": None, "ABATHUR_DEBUG": None}, **_SEPARATE_STDERR
    )
    return runner.invoke(cli, ["--db", str(db), *args], prog_name="abathur")


def ok(db: Path | str, *args: str) -> Result:
    result = invoke(db, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return result


def ok_json(db: Path | str, *args: str) -> Any:
    return json.loads(ok(db, *args, "--json").stdout)


def fails(db: Path | str, *args: str, expect: str) -> str:
    """Assert a non-zero exit with exactly one line on stderr containing ``expect``."""
    result = invoke(db, *args)
    assert result.exit_code != 0, result.stdout
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expect in lines[0]
    return lines[0]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def seeded(db_path: Path) -> Path:
    ok(db_path, "demo")
    return db_path


# ------------------------------------------------------------------ entry point


def test_main_is_the_console_entry_point(db_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", str(db_path), "db", "upgrade"])
    assert exit_info.value.code == 0


def test_console_script_runs_the_demo_and_fails_in_one_line(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "abathur"
    env = {k: v for k, v in os.environ.items() if k != "ABATHUR_DATABASE_URL"}
    done = subprocess.run(
        [str(script), "demo"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "== Session and its events" in done.stdout
    assert not (tmp_path / "abathur.db").exists()  # a temporary database, not the default

    bad = subprocess.run(
        [str(script), "--db", str(tmp_path / "x.db"), "memory", "get", "nope", "k"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_python_m_abathur_demo(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "abathur.cli", "demo"], capture_output=True, text=True, cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "== Memory versions" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "tail"],
        ["audit", "tail", "--json"],
        ["session", "show", SESSION_ID],
        ["memory", "history", NAMESPACE, KEY],
    ],
)
def test_output_to_a_closed_pipe_exits_quietly(seeded: Path, args: list[str]) -> None:
    """``abathur ... | head -1``: the reader left, so no 'Broken pipe' error and no traceback.

    The read end of the pipe is closed before the command starts, so its first
    write fails with EPIPE every time (not only when the output outgrows the
    pipe's buffer). The exit code is 141, what a shell reports for a command
    killed by SIGPIPE (``set -o pipefail`` sees it as for ``seq``).
    """
    unset = ("ABATHUR_DATABASE_URL", "ABATHUR_DEBUG")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "abathur.cli", "--db", str(seeded), *args],
            stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


# ------------------------------------------------------------------ demo


def test_demo_prints_every_section(db_path: Path) -> None:
    out = ok(db_path, "demo").stdout
    headings = [
        "== 1. Create a session",
        "== 2. Create a task linked to the session",
        "== 3. Append events with state deltas",
        "== 4. Store memory under the task",
        "== 5. Terminate the session (temp: keys are cleared)",
        "== Session and its events",
        "== Memory versions",
        "== Audit trail",
    ]
    positions = [out.index(h) for h in headings]
    assert positions == sorted(positions)
    session_part = out[out.index("== Session and its events") : out.index("== Memory versions")]
    assert "(terminated)" in session_part
    assert "events (3):" in session_part
    assert "session:turns = 2" in session_part
    assert "temp:" not in session_part  # cleared on termination
    memory_part = out[out.index("== Memory versions") : out.index("== Audit trail")]
    assert f"{NAMESPACE} / {KEY}  v1" in memory_part
    assert f"{NAMESPACE} / {KEY}  v2" in memory_part
    audit_part = out[out.index("== Audit trail") :]
    assert audit_part.index("memory_update") < audit_part.index("memory_create")


def test_demo_refuses_a_used_database(seeded: Path) -> None:
    fails(seeded, "demo", expect="fresh database")


def test_demo_ignores_the_environment_database(tmp_path: Path) -> None:
    target = tmp_path / "env.db"
    runner = CliRunner(env={"ABATHUR_DATABASE_URL": str(target)}, **_SEPARATE_STDERR)
    result = runner.invoke(cli, ["demo"], prog_name="abathur")
    assert result.exit_code == 0, result.stderr
    assert not target.exists()


# ------------------------------------------------------------------ db


def test_db_upgrade_current_history_downgrade(db_path: Path) -> None:
    assert ok_json(db_path, "db", "current") == {
        "revision": None,
        "head": ok_json(db_path, "db", "history")[-1]["revision"],
        "up_to_date": False,
    }
    assert "database at revision" in ok(db_path, "db", "upgrade").stdout
    current = ok_json(db_path, "db", "current")
    assert current["up_to_date"] is True
    history = ok_json(db_path, "db", "history")
    assert history[0]["revision"] == "0001_milestone1_core"
    assert [h["current"] for h in history] == [False] * (len(history) - 1) + [True]
    assert "* " + current["revision"] in ok(db_path, "db", "history").stdout

    ok(db_path, "db", "downgrade", "0001_milestone1_core")
    assert ok_json(db_path, "db", "current")["revision"] == "0001_milestone1_core"
    ok(db_path, "db", "upgrade", "0002_milestone2_memory")
    assert ok_json(db_path, "db", "current")["revision"] == "0002_milestone2_memory"
    assert "base" in ok(db_path, "db", "downgrade", "base").stdout


def test_db_bad_revision(db_path: Path) -> None:
    fails(db_path, "db", "upgrade", "no_such_revision", expect="no_such_revision")
    result = invoke(db_path, "db", "downgrade")  # missing argument: a usage error
    assert result.exit_code == 2


def test_db_relative_revisions_are_arguments_not_options(db_path: Path) -> None:
    ok(db_path, "db", "upgrade", "0002_milestone2_memory")
    assert "0001_milestone1_core" in ok(db_path, "db", "downgrade", "-1").stdout
    assert "0002_milestone2_memory" in ok(db_path, "db", "upgrade", "+1").stdout
    fails(db_path, "db", "downgrade", "--bogus", expect="unknown revision '--bogus'")
    assert "Usage:" in ok(db_path, "db", "downgrade", "--help").stdout


def test_db_revisions_the_wrong_way_or_from_the_future(db_path: Path) -> None:
    ok(db_path, "db", "upgrade", "0002_milestone2_memory")
    fails(db_path, "db", "upgrade", "0001_milestone1_core", expect="use downgrade")
    fails(db_path, "db", "downgrade", "0003_session_event_log", expect="use upgrade")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    fails(db_path, "db", "upgrade", expect="upgrade abathur")
    fails(db_path, "session", "list", expect="newer than this abathur knows")
    assert ok_json(db_path, "db", "current")["revision"] == "0099_future"


def test_db_commands_leave_no_file_behind_for_a_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    assert ok_json(missing, "db", "current")["revision"] is None
    assert not any(h["current"] for h in ok_json(missing, "db", "history"))
    fails(missing, "db", "check", expect=f"database file {str(missing)!r} not found")
    fails(missing, "db", "downgrade", "base", expect="not found")
    assert list(tmp_path.iterdir()) == []


def test_db_check_passes_on_a_healthy_database(seeded: Path) -> None:
    assert ok(seeded, "db", "check").stdout.strip().endswith("ok")
    report = ok_json(seeded, "db", "check")
    assert report["ok"] is True
    assert (report["integrity"], report["foreign_key_violations"], report["drift"]) == (
        "ok",
        [],
        [],
    )


def test_db_check_finds_drift_and_foreign_key_violations(seeded: Path) -> None:
    with sqlite3.connect(seeded) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("UPDATE tasks SET parent_task_id = 'ghost' WHERE id = ?", (TASK_ID,))
        conn.execute("CREATE INDEX idx_not_in_models ON tasks (prompt)")
    result = invoke(seeded, "db", "check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [v["table"] for v in report["foreign_key_violations"]] == ["tasks"]
    assert any("idx_not_in_models" in d for d in report["drift"])
    assert "PROBLEMS FOUND" in invoke(seeded, "db", "check").stdout


def test_db_check_reports_an_old_revision(db_path: Path) -> None:
    ok(db_path, "db", "upgrade", "0001_milestone1_core")
    result = invoke(db_path, "db", "check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["revision"] == "0001_milestone1_core"
    assert any("add_table sessions" in d for d in report["drift"])


def test_commands_refuse_a_database_at_another_revision(db_path: Path) -> None:
    ok(db_path, "db", "upgrade", "0001_milestone1_core")
    fails(db_path, "session", "list", expect="abathur db upgrade")


def test_db_backup_copies_a_live_database(seeded: Path, tmp_path: Path) -> None:
    with sqlite3.connect(seeded) as conn:
        before = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
    stop = threading.Event()

    def writer() -> None:
        conn = sqlite3.connect(seeded, timeout=30)
        try:
            while not stop.is_set():
                with conn:
                    conn.execute(
                        "INSERT INTO metrics (timestamp, metric_name, metric_value) "
                        "VALUES (CURRENT_TIMESTAMP, 'load', 1)"
                    )
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        target = tmp_path / "backup.db"
        out = ok(seeded, "db", "backup", str(target)).stdout
    finally:
        stop.set()
        thread.join()
    assert "integrity ok" in out
    with sqlite3.connect(target) as copy, sqlite3.connect(seeded) as live:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        copied = copy.execute("SELECT count(*) FROM metrics").fetchone()[0]
        assert before <= copied <= live.execute("SELECT count(*) FROM metrics").fetchone()[0]
        assert copy.execute("SELECT id FROM sessions").fetchall() == [(SESSION_ID,)]
    ok_json(target, "session", "show", SESSION_ID)  # the copy is a working database

    size = target.stat().st_size
    fails(seeded, "db", "backup", str(target), expect="refusing to overwrite")
    assert target.stat().st_size == size


def test_db_backup_of_a_missing_file(tmp_path: Path) -> None:
    fails(tmp_path / "none.db", "db", "backup", str(tmp_path / "b.db"), expect="not found")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.skipif(not PG_URL, reason="ABATHUR_TEST_POSTGRES_URL is not set")
def test_db_backup_on_postgresql_points_at_pg_dump(tmp_path: Path) -> None:
    assert PG_URL
    fails(PG_URL, "db", "backup", str(tmp_path / "b.db"), expect="pg_dump")
    assert not (tmp_path / "b.db").exists()


# ------------------------------------------------------------------ session


def test_session_list_and_filters(seeded: Path) -> None:
    assert SESSION_ID in ok(seeded, "session", "list").stdout
    assert [s["id"] for s in ok_json(seeded, "session", "list")] == [SESSION_ID]
    assert [s["id"] for s in ok_json(seeded, "session", "list", "--user", "alice")] == [SESSION_ID]
    assert ok_json(seeded, "session", "list", "--user", "bob") == []
    assert ok_json(seeded, "session", "list", "--status", "active") == []
    assert len(ok_json(seeded, "session", "list", "--status", "terminated")) == 1
    assert "no sessions" in ok(seeded, "session", "list", "--user", "bob").stdout


def test_session_show(seeded: Path) -> None:
    out = ok(seeded, "session", "show", SESSION_ID).stdout
    assert "events (3):" in out
    shown = ok_json(seeded, "session", "show", SESSION_ID)
    assert shown["status"] == "terminated"
    assert [e["type"] for e in shown["events"]] == ["message", "tool_call", "message"]
    last = ok_json(seeded, "session", "show", SESSION_ID, "--events", "1")
    assert last["events"] == shown["events"][-1:]


def test_session_bad_input(seeded: Path) -> None:
    fails(seeded, "session", "show", "nope", expect="session 'nope' not found")
    fails(seeded, "session", "list", "--status", "sleeping", expect="status")
    assert invoke(seeded, "session", "show", SESSION_ID, "--events", "-1").exit_code == 2


# ------------------------------------------------------------------ memory


def test_memory_get_and_versions(seeded: Path) -> None:
    current = ok_json(seeded, "memory", "get", NAMESPACE, KEY)
    assert current["version"] == 2
    assert current["value"] == {"indent": 4, "quotes": "double"}
    first = ok_json(seeded, "memory", "get", NAMESPACE, KEY, "--version", "1")
    assert first["value"] == {"indent": 4}
    assert "v2" in ok(seeded, "memory", "get", NAMESPACE, KEY).stdout


def test_memory_put_adds_then_updates(seeded: Path) -> None:
    ns = "user:alice:tools"
    out = ok(seeded, "memory", "put", ns, "editor", '{"name": "vim"}', "--type", "procedural",
             "--by", "me", "--task", TASK_ID, "--metadata", '{"source": "cli"}').stdout  # fmt: skip
    assert out.strip() == f"added {ns}/editor: version 1"
    out = ok(seeded, "memory", "put", ns, "editor", '{"name": "emacs"}', "--by", "you",
             "--task", TASK_ID).stdout  # fmt: skip
    assert out.strip() == f"updated {ns}/editor: version 2"
    entry = ok_json(seeded, "memory", "get", ns, "editor")
    assert (entry["value"], entry["memory_type"], entry["updated_by"]) == (
        {"name": "emacs"},
        "procedural",
        "you",
    )
    assert entry["metadata"]["source"] == "cli"


def _nested(depth: int) -> str:
    """A JSON object ``depth`` containers deep: {"a": {"a": ... {} ...}}."""
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_memory_put_refuses_values_nested_deeper_than_reads_can_print(seeded: Path) -> None:
    """Before, 300 levels were stored and then `memory get`/`history` failed
    ("Maximum serialization depth exceeded"): now one limit, on write."""
    put = ("memory", "put", "user:alice:deep")
    fails(seeded, *put, "too", _nested(300), "--type", "semantic", "--by", "me",
          "--task", TASK_ID, expect="nested more than 100 levels")  # fmt: skip
    fails(seeded, *put, "too", _nested(MAX_JSON_DEPTH + 1), "--type", "semantic", "--by", "me",
          "--task", TASK_ID, expect="nested more than 100 levels")  # fmt: skip
    ok(seeded, *put, "ok", _nested(MAX_JSON_DEPTH), "--type", "semantic", "--by", "me",
       "--task", TASK_ID)  # fmt: skip
    assert ok_json(seeded, "memory", "get", "user:alice:deep", "ok")["value"] == json.loads(
        _nested(MAX_JSON_DEPTH)
    )
    assert len(ok_json(seeded, "memory", "history", "user:alice:deep", "ok")) == 1
    assert "too" not in ok(seeded, "memory", "search", "user:alice:deep").stdout


def test_empty_db_is_refused_not_a_throwaway_database(tmp_path: Path) -> None:
    fails("", "db", "upgrade", expect="--db must name a database")
    fails("  ", "session", "list", expect="--db must name a database")


def test_unsupported_url_scheme_names_the_supported_backends(tmp_path: Path) -> None:
    line = fails("mysql://u@h/db", "session", "list", expect="unsupported database URL scheme")
    assert "SQLite" in line and "PostgreSQL" in line and "unexpected" not in line
    fails("mysql://u@h/db", "db", "current", expect="supports SQLite and PostgreSQL")


def test_memory_put_bad_input(seeded: Path) -> None:
    put = ("memory", "put", "user:alice:t", "k")
    fails(seeded, *put, "{not json", "--type", "semantic", "--by", "me", "--task", TASK_ID,
          expect="VALUE is not valid JSON")  # fmt: skip
    fails(seeded, *put, "{}", "--by", "me", "--task", TASK_ID, expect="--type is required")
    fails(seeded, *put, "{}", "--type", "semantic", "--by", "me", "--task", "no-task",
          expect="not found")  # fmt: skip
    fails(seeded, "memory", "put", "nonsense", "k", "{}", "--type", "semantic", "--by", "me",
          "--task", TASK_ID, expect="nonsense")  # fmt: skip
    fails(seeded, *put, "{}", "--type", "imaginary", "--by", "me", "--task", TASK_ID,
          expect="memory_type")  # fmt: skip
    fails(seeded, *put, "{}", "--type", "semantic", "--by", "me", "--task", TASK_ID,
          "--metadata", "[1]", expect="metadata")  # fmt: skip
    assert invoke(seeded, *put, "{}", "--type", "semantic", "--task", TASK_ID).exit_code == 2
    assert invoke(seeded, *put, "{}", "--type", "semantic", "--by", "me", "--task", TASK_ID,
                  "--ttl", "0").exit_code == 2  # fmt: skip
    # What json.loads raises besides JSONDecodeError: RecursionError, and
    # ValueError for an integer of more than 4,300 digits.
    deep, long = "[" * 100_000 + "]" * 100_000, '{"n": ' + "1" * 5000 + "}"
    for value, reason in ((deep, "nested too deeply"), (long, "Exceeds the limit")):
        fails(seeded, *put, value, "--type", "semantic", "--by", "me", "--task", TASK_ID,
              expect=f"VALUE is not valid JSON: {reason}")  # fmt: skip
        fails(seeded, *put, "{}", "--type", "semantic", "--by", "me", "--task", TASK_ID,
              "--metadata", value, expect=f"--metadata is not valid JSON: {reason}")  # fmt: skip
        fails(seeded, "memory", "search", "user", "--filter", value,
              expect=f"--filter is not valid JSON: {reason}")  # fmt: skip
    # A --ttl timedelta cannot hold, or that rounds to nothing, is a usage error.
    for ttl in ("inf", "nan", "1e300", "1e-9"):
        result = invoke(seeded, *put, "{}", "--type", "semantic", "--by", "me", "--task",
                        TASK_ID, "--ttl", ttl)  # fmt: skip
        assert result.exit_code == 2, (ttl, result.stderr)
        assert "Invalid value for '--ttl'" in result.stderr, result.stderr
    assert ok_json(seeded, "memory", "search", "user:alice:t") == []


def test_memory_put_is_an_upsert(seeded: Path) -> None:
    # A live key keeps its type (a different --type is reported, not applied);
    # --metadata replaces the metadata.
    out = ok(seeded, "memory", "put", NAMESPACE, KEY, '{"indent": 2}', "--type", "episodic",
             "--by", "me", "--task", TASK_ID, "--metadata", '{"m": 1}').stdout  # fmt: skip
    assert out.strip() == f"updated {NAMESPACE}/{KEY}: version 3 (its type stays semantic)"
    entry = ok_json(seeded, "memory", "get", NAMESPACE, KEY)
    assert (entry["memory_type"], entry["metadata"]) == ("semantic", {"m": 1})
    # A deleted key comes back as the next version.
    ok(seeded, "memory", "delete", NAMESPACE, KEY, "--by", "me", "--task", TASK_ID)
    written = ok_json(seeded, "memory", "put", NAMESPACE, KEY, "{}", "--type", "episodic",
                      "--by", "me", "--task", TASK_ID, "--ttl", "3600", "--json")  # fmt: skip
    assert (written["version"], written["memory_type"]) == (4, "episodic")
    assert ok_json(seeded, "memory", "get", NAMESPACE, KEY)["version"] == 4


def test_memory_search_filter_offset_namespaces_sweep(seeded: Path) -> None:
    for i in range(4):
        value = json.dumps({"i": i, "odd": i % 2 == 1})
        ok(seeded, "memory", "put", f"user:bob:n{i % 2}", f"k{i}", value,
           "--type", "semantic", "--by", "me", "--task", TASK_ID)  # fmt: skip
    odd = ok_json(seeded, "memory", "search", "user:bob", "--filter", '{"odd": true}')
    assert sorted(m["key"] for m in odd) == ["k1", "k3"]
    big = ok_json(seeded, "memory", "search", "user:bob", "--filter", '{"i": {"$gte": 2}}')
    assert sorted(m["key"] for m in big) == ["k2", "k3"]
    whole = ok_json(seeded, "memory", "search", "user:bob")
    paged = [
        m
        for offset in range(0, 4, 3)
        for m in ok_json(
            seeded, "memory", "search", "user:bob", "--limit", "3", "--offset", str(offset)
        )
    ]
    assert [m["id"] for m in paged] == [m["id"] for m in whole]
    fails(seeded, "memory", "search", "user:bob", "--filter", '{"i": {"$near": 1}}',
          expect="unknown operator")  # fmt: skip
    fails(seeded, "memory", "search", "user:bob", "--filter", "{oops", expect="--filter")

    assert ok_json(seeded, "memory", "namespaces", "user:bob") == ["user:bob:n0", "user:bob:n1"]
    assert ok(seeded, "memory", "namespaces", "user", "--max-depth", "2").stdout.split() == [
        "user:alice",
        "user:bob",
    ]
    assert ok_json(seeded, "memory", "namespaces", "--suffix", "n1") == ["user:bob:n1"]
    assert ok_json(seeded, "memory", "namespaces", "--limit", "1", "--offset", "1") == [
        "user:bob:n0"
    ]
    assert "no namespaces" in ok(seeded, "memory", "namespaces", "project").stdout
    fails(seeded, "memory", "namespaces", "temp:x", expect="temp:")

    assert ok(seeded, "memory", "sweep").stdout.strip() == "expired 0 key(s)"
    assert ok(seeded, "memory", "sweep", "--task", TASK_ID).stdout.strip() == "expired 0 key(s)"
    fails(seeded, "memory", "sweep", "--task", "no-task", expect="not found")


def test_memory_history_search_delete_restore(seeded: Path) -> None:
    history = ok_json(seeded, "memory", "history", NAMESPACE, KEY)
    assert [h["version"] for h in history] == [1, 2]
    assert "v1" in ok(seeded, "memory", "history", NAMESPACE, KEY).stdout

    found = ok_json(seeded, "memory", "search", "user:alice")
    assert [(m["namespace"], m["key"]) for m in found] == [(NAMESPACE, KEY)]
    assert ok_json(seeded, "memory", "search", "user:alice", "--type", "episodic") == []
    assert ok_json(seeded, "memory", "search", "user:alic") == []  # whole segments only
    assert len(ok_json(seeded, "memory", "search", "user", "--limit", "1")) == 1

    ok(seeded, "memory", "delete", NAMESPACE, KEY, "--by", "me", "--task", TASK_ID)
    fails(seeded, "memory", "get", NAMESPACE, KEY, expect="not found")
    assert ok_json(seeded, "memory", "search", "user:alice") == []
    assert "no memories" in ok(seeded, "memory", "search", "user:alice").stdout

    out = ok(seeded, "memory", "restore", NAMESPACE, KEY, "1", "--by", "me", "--task", TASK_ID)
    assert "as version 3" in out.stdout
    restored = ok_json(seeded, "memory", "get", NAMESPACE, KEY)
    assert (restored["version"], restored["value"]) == (3, {"indent": 4})


def test_memory_bad_input(seeded: Path) -> None:
    fails(seeded, "memory", "get", "user:alice", "nope", expect="not found")
    fails(seeded, "memory", "get", "temp:x", "k", expect="temp:")
    fails(seeded, "memory", "history", "user:alice", "nope", expect="not found")
    fails(seeded, "memory", "search", "nowhere", expect="nowhere")
    fails(seeded, "memory", "delete", "user:alice", "nope", "--by", "me", "--task", TASK_ID,
          expect="not found")  # fmt: skip
    fails(seeded, "memory", "restore", NAMESPACE, KEY, "9", "--by", "me", "--task", TASK_ID,
          expect="9")  # fmt: skip
    fails(seeded, "memory", "consolidate", NAMESPACE, "--strategy", "magic", expect="magic")
    assert invoke(seeded, "memory", "search", "user", "--limit", "0").exit_code == 2


def test_memory_consolidate(seeded: Path) -> None:
    # The demo left versions 1 and 2 both live: one key to consolidate.
    out = ok(seeded, "memory", "consolidate", "user:alice", "--strategy", "latest_wins",
             "--by", "me", "--task", TASK_ID).stdout  # fmt: skip
    assert out.strip() == "consolidated 1 key(s) in user:alice"
    entry = ok_json(seeded, "memory", "get", NAMESPACE, KEY)
    assert (entry["version"], entry["value"]) == (3, {"indent": 4, "quotes": "double"})
    out = ok(seeded, "memory", "consolidate", "user:alice", "--strategy", "merge").stdout
    assert out.strip() == "consolidated 0 key(s) in user:alice"


# ------------------------------------------------------------------ audit


def test_audit_tail(seeded: Path) -> None:
    rows = ok_json(seeded, "audit", "tail")
    assert [r["action_type"] for r in rows] == ["memory_update", "memory_create"]
    assert all(r["task_id"] == TASK_ID for r in rows)
    assert len(ok_json(seeded, "audit", "tail", "--limit", "1")) == 1
    assert ok_json(seeded, "audit", "tail", "--namespace", "user:bob") == []
    assert len(ok_json(seeded, "audit", "tail", "--namespace", "user:alice")) == 2
    assert "memory_create" in ok(seeded, "audit", "tail").stdout
    fails(seeded, "audit", "tail", "--namespace", "bogus", expect="bogus")


# ------------------------------------------------------------------ docs


def test_docs_sync(db_path: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.md").write_text(f"# Doc {i}\n")
    (docs / "bad.md").write_bytes(b"\xff\xfe# broken\n")
    result = ok(db_path, "docs", "sync", str(docs))
    assert "3 added, 0 changed, 0 unchanged, 0 missing, 1 problem(s)" in result.stdout
    assert "bad.md: not valid UTF-8" in result.stdout
    assert "syncing documents" in result.stderr  # progress goes to stderr

    (docs / "0.md").write_text("# Doc zero\n")
    (docs / "1.md").unlink()
    report = ok_json(db_path, "docs", "sync", str(docs))
    assert (report["added"], report["changed"], report["unchanged"], report["missing"]) == (
        0,
        1,
        1,
        1,
    )
    assert report["missing_files"] == [(docs / "1.md").resolve().as_posix()]
    assert [p["reason"][:15] for p in report["problems"]] == ["not valid UTF-8"]

    pending = ok_json(db_path, "docs", "pending")
    assert {Path(d["file_path"]).name for d in pending} == {"0.md", "2.md"}
    assert "Doc 2" in ok(db_path, "docs", "pending").stdout

    only_txt = ok_json(db_path, "docs", "sync", str(docs), "--pattern", "*.txt")
    assert only_txt["added"] == 0


def test_docs_sync_json_keeps_stderr_clean(db_path: Path, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n")
    result = ok(db_path, "docs", "sync", str(tmp_path), "--json")
    assert json.loads(result.stdout)["added"] == 1
    assert result.stderr == ""


def test_docs_sync_reports_skipped_files_and_follows_links_only_when_asked(
    db_path: Path, tmp_path: Path
) -> None:
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir()
    outside.mkdir()
    (outside / "x.md").write_text("# Outside\n")
    (docs / "link.md").symlink_to(outside / "x.md")
    (docs / "folder.md").mkdir()  # (a FIFO: the service tests, guarded against a hang)
    report = ok_json(db_path, "docs", "sync", str(docs))
    reasons = {Path(p["file_path"]).name: p["reason"] for p in report["problems"]}
    assert reasons["folder.md"] == "unreadable: not a regular file (a directory)"
    assert reasons["link.md"].startswith("skipped: symlink to")
    report = ok_json(db_path, "docs", "sync", str(docs), "--follow-external-symlinks")
    assert report["added"] == 1 and len(report["problems"]) == 1


def test_docs_sync_bad_directory(db_path: Path, tmp_path: Path) -> None:
    fails(db_path, "docs", "sync", str(tmp_path / "missing"), expect="not found")


# ------------------------------------------------------------------ global


def test_every_read_command_accepts_json() -> None:
    read_commands = {
        ("db", "current"), ("db", "history"), ("db", "check"),
        ("session", "list"), ("session", "show"),
        ("memory", "get"), ("memory", "history"), ("memory", "search"),
        ("memory", "namespaces"),
        ("audit", "tail"), ("docs", "sync"), ("docs", "pending"),
    }  # fmt: skip
    for group_name, command_name in read_commands:
        group = cli.commands[group_name]
        command = group.commands[command_name]  # type: ignore[attr-defined]
        assert any("--json" in p.opts for p in command.params), (group_name, command_name)


def test_unknown_command_is_a_usage_error(db_path: Path) -> None:
    result = invoke(db_path, "frobnicate")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    fails(missing / "dir.db", "session", "list", expect="does not exist")
    assert not missing.exists()
