"""abathur's side of the vendored ADK suite: AbathurSessionService on a fresh
database per test, SQLite (a file in the test's tmp_path) or PostgreSQL (a
schema of its own on ``ABATHUR_TEST_POSTGRES_URL``, dropped afterwards; the
PostgreSQL runs are skipped when the variable is unset, like the rest of the
suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from abathur.integrations.adk import AbathurSessionService
from tests.conftest import PG_URL, pg_schema

SQLITE = "ABATHUR_SQLITE"
POSTGRES = "ABATHUR_POSTGRES"


@asynccontextmanager
async def abathur_service(kind: str, tmp_path: Path) -> AsyncIterator[AbathurSessionService]:
    """A service that opens (and migrates) its own database on first use."""
    if kind == SQLITE:
        service = AbathurSessionService(tmp_path / "abathur.db")
        try:
            yield service
        finally:
            await service.close()
        return
    if not PG_URL:
        pytest.skip("ABATHUR_TEST_POSTGRES_URL is not set")
    async with pg_schema() as schema:
        service = AbathurSessionService(
            PG_URL, connect_args={"server_settings": {"search_path": schema}}
        )
        try:
            yield service
        finally:
            await service.close()
