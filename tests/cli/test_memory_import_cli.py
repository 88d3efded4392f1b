"""Issue 16: ``abathur memory import FILE`` (JSON Lines through put_memories)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from abathur.cli import cli
from abathur.cli.data_commands import _import_lines
from abathur.cli.demo import TASK_ID
from abathur.infrastructure.database import Database
from abathur.repositories.memory import BULK_LOCK_ID, MAX_KEY_LOCKS
from tests.cli.test_cli import _SEPARATE_STDERR, invoke, ok, ok_json


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"
    ok(path, "demo")
    return path


def line(key: str, **extra: Any) -> str:
    item = {"namespace": "user:imp", "key": key, "value": {"k": key}, "memory_type": "semantic",
            "by": "importer", "task_id": TASK_ID, **extra}  # fmt: skip
    return json.dumps(item)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def history(db: Path, key: str) -> list[Any]:
    return list(ok_json(db, "memory", "history", "user:imp", key))


def test_import_a_file(seeded: Path, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.jsonl",
        [line("a"), "", line("b", metadata={"m": 1}, ttl=3600), line("a", by="again"),
         line("c", memory_type="episodic")],
    )  # fmt: skip
    result = ok(seeded, "memory", "import", str(source), "--batch-size", "2")
    assert result.stdout.strip() == "imported 4 memories"
    assert "importing memories" in result.stderr  # the progress bar
    assert [h["version"] for h in history(seeded, "a")] == [1, 2]
    assert history(seeded, "a")[1]["updated_by"] == "again"
    assert history(seeded, "b")[0]["metadata"] == {"m": 1}
    assert history(seeded, "c")[0]["memory_type"] == "episodic"
    found = ok_json(seeded, "memory", "search", "user:imp")
    assert sorted(f["key"] for f in found) == ["a", "b", "c"]
    audit = ok_json(seeded, "audit", "tail", "--namespace", "user:imp")
    assert len(audit) == 4


def test_import_from_stdin_with_json_output(seeded: Path) -> None:
    runner = CliRunner(
        env={"ABATHUR_DATABASE_URL": None, "ABATHUR_DEBUG": None}, **_SEPARATE_STDERR
    )
    text = "\n".join(line(f"k{i}") for i in range(5)) + "\n"
    result = runner.invoke(
        cli, ["--db", str(seeded), "memory", "import", "-", "--json"], input=text
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"imported": 5}
    assert result.stderr == ""
    result = runner.invoke(cli, ["--db", str(seeded), "memory", "import", "-"], input=text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "imported 5 memories"
    assert "imported 5 memories" in result.stderr  # the running count
    assert [h["version"] for h in history(seeded, "k3")] == [1, 2]


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        ("{not json", "line 4: not valid JSON"),
        ("[1, 2]", "line 4: must be a JSON object"),
        (line("x", ttl=-1), "line 4: ttl must be a positive number of seconds"),
        (line("x", namespace="temp:x"), "line 4: namespace: "),
        (line("x", memory_type="other"), "line 4: memory_type"),
        (line("x", task_id="no-such-task"), "line 4: task 'no-such-task' not found"),
        (line("x", colour="red"), "line 4: unknown field(s) 'colour'"),
        # What json.loads raises besides JSONDecodeError: a RecursionError and
        # a ValueError (integers of more than 4,300 digits).
        ('{"value": ' + "[" * 100_000 + "]" * 100_000 + "}", "line 4: not valid JSON: nested"),
        ('{"value": {"n": ' + "1" * 5000 + "}}", "line 4: not valid JSON: Exceeds the limit"),
    ],
)
def test_a_bad_line_is_named_and_its_batch_not_written(
    seeded: Path, tmp_path: Path, bad: str, expect: str
) -> None:
    lines = [line("a"), line("b"), line("c"), bad, line("d")]
    source = write(tmp_path / "in.jsonl", lines)
    result = invoke(seeded, "memory", "import", str(source), "--batch-size", "2")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]
    assert expect in error, error
    # Lines 1-2 were the first batch: imported. Lines 3-4 were the failing one.
    assert "nothing from line 3 on was written; the 2 memories before it were imported" in error
    assert result.stdout == ""
    assert [h["key"] for h in ok_json(seeded, "memory", "search", "user:imp")] == ["b", "a"]


def test_a_line_that_is_not_utf8_is_named_and_its_batch_not_written(
    seeded: Path, tmp_path: Path
) -> None:
    lines = [line("a"), line("b"), line("c"), line("x").replace("x", "\\xff"), line("d")]
    data = "\n".join(lines).encode("utf-8").replace(b"\\xff", b"\xff")
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    result = invoke(seeded, "memory", "import", str(source), "--batch-size", "2")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "line 4: not valid UTF-8" in error, error
    assert "nothing from line 3 on was written; the 2 memories before it were imported" in error
    assert [h["key"] for h in ok_json(seeded, "memory", "search", "user:imp")] == ["b", "a"]


def test_a_byte_order_mark_before_the_first_line_is_skipped(seeded: Path, tmp_path: Path) -> None:
    """Some editors (and Windows PowerShell) start a UTF-8 file with a BOM."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + f"{line('a')}\n{line('b')}\n".encode())
    assert ok(seeded, "memory", "import", str(source)).stdout.strip() == "imported 2 memories"
    runner = CliRunner(
        env={"ABATHUR_DATABASE_URL": None, "ABATHUR_DEBUG": None}, **_SEPARATE_STDERR
    )
    result = runner.invoke(
        cli, ["--db", str(seeded), "memory", "import", "-"], input=source.read_bytes()
    )
    assert result.exit_code == 0, result.stderr
    assert [h["version"] for h in history(seeded, "a")] == [1, 2]


def test_a_bad_first_batch_writes_nothing(seeded: Path, tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", [line("a"), line("b", value=[1])])
    result = invoke(seeded, "memory", "import", str(source))
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "line 2: value" in error and error.endswith("(nothing was written)")
    assert ok_json(seeded, "memory", "search", "user:imp") == []


def test_import_options(seeded: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = invoke(seeded, "memory", "import", str(missing))
    assert result.exit_code == 2
    assert "No such file" in result.stderr
    empty = write(tmp_path / "empty.jsonl", [""])
    assert ok(seeded, "memory", "import", str(empty)).stdout.strip() == "imported 0 memories"
    result = invoke(seeded, "memory", "import", str(empty), "--batch-size", "0")
    assert result.exit_code == 2


async def test_default_batch_never_takes_the_exclusive_bulk_lock(
    db: Database, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --batch-size: 10,000 lines a batch on SQLite; on PostgreSQL
    at most the keys put_memories locks one by one (``MAX_KEY_LOCKS``), as
    a batch of more takes the bulk lock exclusively and holds every other
    writer of memories off while it runs."""
    sizes: list[int] = []
    put_memories = db.memory.put_memories

    async def recorded(items: list[dict[str, Any]], **options: Any) -> Any:
        sizes.append(len(items))
        return await put_memories(items, **options)

    monkeypatch.setattr(db.memory, "put_memories", recorded)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        source = io.StringIO("".join(line(f"k{i}", task_id=task_id) + "\n" for i in range(1_500)))
        assert await _import_lines(db, source, None, lambda _done, _position: None) == 1_500
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert sizes == ([1_500] if db.is_sqlite else [MAX_KEY_LOCKS, 1_500 - MAX_KEY_LOCKS])
    assert not [sql for sql in statements if f"pg_advisory_xact_lock({BULK_LOCK_ID})" in sql]
    assert any("pg_advisory_xact_lock_shared" in sql for sql in statements) != db.is_sqlite
