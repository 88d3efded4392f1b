"""``abathur db``: migrations, health checks and backups."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Connection

from abathur.cli.context import app, emit, json_option, run_with_db
from abathur.db.migrate import script_directory
from abathur.db.url import is_memory_url, to_url
from abathur.errors import AlreadyExistsError, ConfigurationError, DatabaseError, NotFoundError
from abathur.infrastructure.database import Database


@click.group("db", cls=click.Group)
def db_group() -> None:
    """Migrations, health checks and backups of the database."""


def _missing_file(ctx: click.Context) -> str | None:
    """The SQLite file the command names, if it does not exist: opening it
    would create an empty one (a typo would leave a stray file behind)."""
    url = to_url(app(ctx).db_url)
    if url.get_backend_name() != "sqlite" or is_memory_url(url) or url.query.get("uri"):
        return None
    assert url.database is not None
    return None if Path(url.database).exists() else url.database


def _refuse_missing_file(ctx: click.Context) -> None:
    missing = _missing_file(ctx)
    if missing is not None:
        raise NotFoundError(f"database file {missing!r} not found")


def _revision(ctx: click.Context) -> str | None:
    """The database's revision; None for a SQLite file not created yet."""
    if _missing_file(ctx) is not None:
        return None
    return run_with_db(ctx, lambda db: db.current_revision(), prepare=False)


# Revisions may be relative, ``-1``: not options.
_REVISION_ARGUMENT = {"ignore_unknown_options": True}


@db_group.command("upgrade", context_settings=_REVISION_ARGUMENT)
@click.argument("revision", default="head")
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database up to REVISION (default: head; ``+1`` one step)."""

    async def work(db: Database) -> str | None:
        await db.upgrade(revision)
        return await db.current_revision()

    current = run_with_db(ctx, work, prepare=False)
    click.echo(f"database at revision {current}")


@db_group.command("downgrade", context_settings=_REVISION_ARGUMENT)
@click.argument("revision")
@click.pass_context
def downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database down to REVISION (``-1`` one step; ``base``
    removes every table)."""
    _refuse_missing_file(ctx)

    async def work(db: Database) -> str | None:
        await db.downgrade(revision)
        return await db.current_revision()

    current = run_with_db(ctx, work, prepare=False)
    click.echo(f"database at revision {current or 'base (empty)'}")


@db_group.command("current")
@json_option
@click.pass_context
def current(ctx: click.Context, as_json: bool) -> None:
    """Show the database's revision and the newest one this code knows."""
    revision = _revision(ctx)
    head = script_directory().get_current_head()
    data = {"revision": revision, "head": head, "up_to_date": revision == head}

    def human(d: dict[str, Any]) -> None:
        note = "up to date" if d["up_to_date"] else f"head is {d['head']}"
        click.echo(f"{d['revision'] or 'base (empty database)'} ({note})")

    emit(data, as_json, human)


@db_group.command("history")
@json_option
@click.pass_context
def history(ctx: click.Context, as_json: bool) -> None:
    """List the migrations, oldest first, marking the database's current one."""
    revision = _revision(ctx)
    data = [
        {
            "revision": rev.revision,
            "down_revision": rev.down_revision,
            "description": (rev.doc or "").strip().splitlines()[0] if rev.doc else "",
            "current": rev.revision == revision,
        }
        for rev in reversed(list(script_directory().walk_revisions()))
    ]

    def human(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            mark = "*" if row["current"] else " "
            click.echo(f"{mark} {row['revision']}  {row['description']}")

    emit(data, as_json, human)


def _drift(connection: Connection) -> list[str]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from abathur.schema.models import Base

    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [_describe_diff(d) for d in compare_metadata(context, Base.metadata)]


def _describe_diff(diff: Any) -> str:
    if isinstance(diff, list):
        return "; ".join(_describe_diff(d) for d in diff)
    if isinstance(diff, tuple) and diff:
        parts = [str(diff[0])]
        for item in diff[1:]:
            name = getattr(item, "name", None)
            if name is not None:
                parts.append(str(name))
            elif isinstance(item, str):
                parts.append(item)
        return " ".join(parts[:4])
    return str(diff)


async def _check(db: Database) -> dict[str, Any]:
    integrity = await db.integrity_check()
    foreign_keys = await db.validate_foreign_keys()
    async with db.engine.connect() as conn:
        drift = await conn.run_sync(_drift)
    revision = await db.current_revision()
    head = script_directory().get_current_head()
    return {
        "revision": revision,
        "head": head,
        "integrity": integrity,
        "foreign_key_violations": foreign_keys,
        "drift": drift,
        "ok": integrity == "ok" and not foreign_keys and not drift and revision == head,
    }


@db_group.command("check")
@json_option
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Integrity check, foreign key check and schema drift against the models.

    Exits 1 when anything is wrong (including a database not at head).
    """
    _refuse_missing_file(ctx)
    report = run_with_db(ctx, _check, prepare=False)

    def human(r: dict[str, Any]) -> None:
        revision_ok = r["revision"] == r["head"]
        click.echo(f"revision:     {r['revision'] or 'base'}"
                   + ("" if revision_ok else f" (head is {r['head']})"))  # fmt: skip
        click.echo(f"integrity:    {r['integrity']}")
        fks = r["foreign_key_violations"]
        click.echo(f"foreign keys: {'ok' if not fks else f'{len(fks)} violation(s)'}")
        for violation in fks:
            click.echo(f"  {violation}")
        drift = r["drift"]
        click.echo(f"drift:        {f'{len(drift)} difference(s)' if drift else 'none'}")
        for difference in r["drift"]:
            click.echo(f"  {difference}")
        click.echo("ok" if r["ok"] else "PROBLEMS FOUND")

    emit(report, as_json, human)
    if not report["ok"]:
        ctx.exit(1)


def _vacuum_into(source: str, target: str) -> str:
    """Copy ``source`` to ``target`` in one read transaction; the copy's integrity check."""
    connection = sqlite3.connect(source, timeout=30)
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("VACUUM INTO ?", (target,))
    finally:
        connection.close()
    copy = sqlite3.connect(target)
    try:
        return str(copy.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        copy.close()


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def backup(ctx: click.Context, file: Path) -> None:
    """Write a consistent copy of a live SQLite database to FILE.

    Uses ``VACUUM INTO``: one read transaction, so writers carry on (WAL) and
    the copy is a single point in time, compacted. FILE must not exist yet.
    PostgreSQL databases are backed up with ``pg_dump`` instead.
    """

    async def work(db: Database) -> tuple[str, str]:
        if not db.is_sqlite:
            raise ConfigurationError(
                "db backup copies SQLite databases; for PostgreSQL use pg_dump "
                "(e.g. pg_dump --format=custom --file=FILE DBURL)"
            )
        if db.is_memory or not db.url.database:
            raise ConfigurationError("an in-memory database has nothing to back up")
        source = Path(db.url.database)
        if not await asyncio.to_thread(source.is_file):
            raise NotFoundError(f"database file {str(source)!r} not found")
        if await asyncio.to_thread(file.exists):
            raise AlreadyExistsError(f"{str(file)!r} already exists; refusing to overwrite it")
        try:
            integrity = await asyncio.to_thread(_vacuum_into, str(source), str(file))
        except sqlite3.Error as exc:
            raise DatabaseError(f"backup failed: {exc}") from exc
        return str(source), integrity

    source, integrity = run_with_db(ctx, work, prepare=False)
    size = file.stat().st_size
    click.echo(f"backed up {source} to {file} ({size} bytes, integrity {integrity})")
    if integrity != "ok":
        ctx.exit(1)
