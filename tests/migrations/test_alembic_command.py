"""The operator's path: the `alembic` command itself, on a file database with data."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def alembic(db: Path, *args: str) -> str:
    env = {**os.environ, "ABATHUR_DATABASE_URL": f"sqlite:///{db}"}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_alembic_upgrade_downgrade_round_trip_keeps_milestone1_rows(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    alembic(db, "upgrade", "0001_milestone1_core")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO tasks (id, prompt, status, input_data, submitted_at, last_updated_at, "
            "session_id) VALUES ('t1', 'p', 'pending', '{}', '2026-01-01', '2026-01-01', 's1')"
        )
    alembic(db, "upgrade", "head")
    assert "head" in alembic(db, "current")
    alembic(db, "downgrade", "0001_milestone1_core")
    assert "0001_milestone1_core" in alembic(db, "current")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, session_id FROM tasks").fetchall() == [("t1", "s1")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "sessions" not in tables and "memory_entries" not in tables
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    alembic(db, "upgrade", "head")
    alembic(db, "downgrade", "base")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables <= {"alembic_version", "sqlite_sequence"}
