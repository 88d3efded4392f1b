"""The fast path's one seam: on releases it was not tested with, or when told
so, SQLite runs on SQLAlchemy's stock adapter and abathur still works."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest
import sqlalchemy

from abathur.db.sqlite import support
from abathur.infrastructure.database import Database


async def _works(path: Path) -> Database:
    db = Database(path)
    await db.initialize()
    task = await db.tasks.create_task("on whichever path")
    found = await db.tasks.get_task(task.id)
    assert found is not None and found.prompt == "on whichever path"
    await db.close()
    return db


async def test_the_installed_releases_run_the_fast_path(tmp_path: Path) -> None:
    assert support.fast_path_problem() is None
    assert (await _works(tmp_path / "a.db")).fast_path


@pytest.mark.parametrize("value", ["0", "off", "false"])
async def test_the_environment_turns_the_fast_path_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(support.ENVIRONMENT, value)
    assert not support.supports_fast_path()
    assert not (await _works(tmp_path / "a.db")).fast_path


@pytest.mark.parametrize("version", ["2.2.0", "3.0.0b1", "1.4.54"])
async def test_an_untested_sqlalchemy_release_gets_the_stock_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(sqlalchemy, "__version__", version)
    assert f"SQLAlchemy {version}" in (support.fast_path_problem() or "")
    assert not (await _works(tmp_path / "a.db")).fast_path


async def test_an_untested_aiosqlite_release_gets_the_stock_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiosqlite, "__version__", "0.23.0")
    assert "aiosqlite 0.23.0" in (support.fast_path_problem() or "")
    assert not (await _works(tmp_path / "a.db")).fast_path


async def test_a_missing_private_part_gets_the_stock_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if a release dropped a private attribute the fast path uses (deleting
    # a real one would break SQLAlchemy's own adapter too).
    monkeypatch.setattr(support, "_AIOSQLITE_NEEDS", (*support._AIOSQLITE_NEEDS, "_gone"))
    assert "missing: _gone" in (support.fast_path_problem() or "")
    assert not (await _works(tmp_path / "a.db")).fast_path
