"""Migrated databases made once per test process and copied for each test.

Running every migration costs 0.5 s on SQLite and over a second on
PostgreSQL; with a thousand tests that take a migrated ``db`` it was most of
the suite's time. A copy costs a few milliseconds. Each copy is still brought
to head by ``initialize()`` afterwards (a check that finds nothing to do), so a
test sees exactly the schema the migrations make: the copy is of what they
made in this very run, never of a file kept between runs.

- SQLite: one migrated file, copied byte for byte (the last connection folded
  the WAL into it).
- PostgreSQL: one migrated schema, dumped once with ``pg_dump`` (definitions
  and rows: ``alembic_version``), replayed for each test under the test's own
  schema name in one round trip. Without ``pg_dump`` (or if it fails) each
  test migrates its schema as before.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from abathur.infrastructure.database import Database

_PLACEHOLDER = "abathur_template_schema_placeholder"


class MigratedTemplates:
    def __init__(self) -> None:
        self._sqlite: Path | None = None
        self._pg_sql: str | None = None
        self._pg_tried = False

    async def sqlite_copy(self, dest: Path) -> None:
        """Put a migrated SQLite database file at ``dest``."""
        if self._sqlite is None:
            folder = Path(tempfile.mkdtemp(prefix="abathur-template-"))
            atexit.register(shutil.rmtree, folder, True)
            path = folder / "template.db"
            database = Database(path)
            await database.initialize()
            await database.close()  # the last connection folds the WAL into the file;
            # were it left, initialize() on a copy would just migrate again
            self._sqlite = path
        shutil.copyfile(self._sqlite, dest)

    async def pg_create(self, admin: AsyncConnection, schema: str, url: str) -> bool:
        """Create ``schema`` migrated, through ``admin``; False when no dump
        could be made (the caller then creates and migrates it itself)."""
        if not self._pg_tried:
            self._pg_tried = True
            self._pg_sql = await _pg_template_sql(admin, url)
        if self._pg_sql is None:
            return False
        raw = await admin.get_raw_connection()
        # Several statements in one simple-protocol message: one round trip.
        await raw.driver_connection.execute(self._pg_sql.replace(_PLACEHOLDER, schema))  # type: ignore[union-attr]
        return True


async def _pg_template_sql(admin: AsyncConnection, url: str) -> str | None:
    template = f"abathur_template_{uuid.uuid4().hex[:12]}"
    await admin.exec_driver_sql(f'CREATE SCHEMA "{template}"')
    await admin.commit()
    try:
        database = Database(url, connect_args={"server_settings": {"search_path": template}})
        await database.initialize()
        await database.close()
        dumped = _pg_dump(url, template)
    finally:
        await admin.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{template}" CASCADE')
        await admin.commit()
    if dumped is None or template not in dumped:
        return None
    # Drop psql meta-commands (\restrict) and comments; qualified names and the
    # sequences' setval() literals carry the template's name, which is unique.
    lines = [
        line for line in dumped.splitlines() if not line.startswith(("\\", "--")) and line.strip()
    ]
    return "\n".join(lines).replace(template, _PLACEHOLDER)


def _pg_dump(url: str, schema: str) -> str | None:
    executable = shutil.which("pg_dump")
    if executable is None:
        return None
    parsed = make_url(url)
    command = [executable, "--schema", schema, "--inserts", "--no-owner", "--no-privileges"]
    command += ["--host", parsed.host or "localhost", "--port", str(parsed.port or 5432)]
    command += ["--username", parsed.username or "postgres", parsed.database or "postgres"]
    environment = dict(os.environ)
    if parsed.password is not None:
        environment["PGPASSWORD"] = str(parsed.password)
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    return done.stdout if done.returncode == 0 else None


TEMPLATES = MigratedTemplates()
