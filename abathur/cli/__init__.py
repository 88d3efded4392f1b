"""The ``abathur`` command line (click).

``abathur [--db URL] GROUP COMMAND ...``; the database is ``--db`` (a URL or
an SQLite file path), else ``ABATHUR_DATABASE_URL``, else ``abathur.db`` in
the current directory. Read commands take ``--json``. Exit code 0 on
success, 1 with one line on stderr on failure, 2 for usage errors, 141
without a message when the reader of stdout went away (``abathur ... | head``).
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from abathur.cli.context import AbathurGroup, AppContext, app
from abathur.cli.data_commands import audit_group, docs_group, memory_group, session_group
from abathur.cli.db_commands import db_group
from abathur.db.url import DEFAULT_URL

__all__ = ["cli", "main"]


@click.group(cls=AbathurGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_url",
    envvar="ABATHUR_DATABASE_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    help="Database URL (sqlite+aiosqlite:///file.db, postgresql+asyncpg://...) or SQLite path.",
)
@click.version_option(package_name="abathur")
@click.pass_context
def cli(ctx: click.Context, db_url: str) -> None:
    """abathur: sessions, versioned memory and a document index on SQLite or PostgreSQL."""
    given = ctx.get_parameter_source("db_url") == ParameterSource.COMMANDLINE
    if not db_url.strip():
        # Not a throwaway in-memory database that forgets every write on exit.
        raise click.ClickException(
            "--db must name a database: a file path or a URL "
            "(sqlite+aiosqlite:///FILE, postgresql+asyncpg://...), not an empty string"
        )
    ctx.obj = AppContext(db_url=db_url, db_url_given=given)


@cli.command("demo")
@click.option("--db", "demo_db", help="Run on this database instead of a fresh temporary file.")
@click.pass_context
def demo(ctx: click.Context, demo_db: str | None) -> None:
    """Run the session -> task -> memory workflow on a fresh database and show it.

    Uses a temporary SQLite file unless --db is given (here or before
    ``demo``); ABATHUR_DATABASE_URL is ignored so the demo never writes into
    a real database by accident.
    """
    from abathur.cli.demo import run_demo

    root = app(ctx)
    url = demo_db or (root.db_url if root.db_url_given else None)
    run_demo(url)


for group in (db_group, session_group, memory_group, audit_group, docs_group):
    cli.add_command(group)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point (``abathur = "abathur.cli:main"``)."""
    return cli.main(args=argv, prog_name="abathur")
