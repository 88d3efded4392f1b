"""Alembic environment for abathur.

Run by the ``alembic`` command (URL from ``ABATHUR_DATABASE_URL``, default the
embedded SQLite file ``./abathur.db``) and by ``Database.upgrade()``, which
passes its own connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection

from abathur.db.engine import create_engine
from abathur.db.migrate import migration_connection
from abathur.db.url import default_url, to_url
from abathur.errors import MigrationError
from abathur.schema.models import Base
from alembic import context

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
# Serialises concurrent migrators on PostgreSQL (SQLite uses BEGIN IMMEDIATE).
PG_MIGRATION_LOCK = 0x61626174  # "abat"


def do_run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        # SQLite's DDL is transactional: one transaction for the whole run, so
        # the foreign-key check below can still roll everything back.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if not is_sqlite:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
        context.run_migrations()
        if is_sqlite:
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise MigrationError(
                    f"migration would leave {len(violations)} foreign-key violations, "
                    f"first: {tuple(violations[0])}; rolled back"
                )


async def run_async_migrations() -> None:
    engine = create_engine(to_url(default_url()))
    try:
        async with migration_connection(engine) as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = to_url(default_url())
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)
