"""The stores of the vendored PostgreSQL store tests (./test_pg_store.py,
./test_pg_async_store.py): LangGraph's own ``PostgresStore`` /
``AsyncPostgresStore`` (the control, each store on a fresh schema of
``ABATHUR_TEST_POSTGRES_URL`` instead of upstream's fresh database), or
``AbathurStore`` through the factories of ./abathur_stores.py."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from abathur.db.url import to_url
from tests.conformance.langgraph.abathur_stores import AsyncFactory, SyncFactory
from tests.conftest import PG_URL

PG_CONTROL = "langgraph-postgres"


def _control_dsn() -> tuple[str, str]:
    """A fresh schema's name and a libpq connection string whose search_path is it."""
    if not PG_URL:
        pytest.skip("ABATHUR_TEST_POSTGRES_URL is not set")
    base = to_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"t_lgpg_{uuid.uuid4().hex[:12]}"
    return schema, f"{base}?options={urllib.parse.quote(f'-c search_path={schema}')}"


def _admin(statement: str) -> None:
    from psycopg import Connection

    assert PG_URL
    base = to_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with Connection.connect(base, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _float_ttl(store: Any) -> None:
    """Upstream's fixture change: fractional TTL minutes in the control's schema."""
    store.MIGRATIONS = [
        (mig.replace("ttl_minutes INT;", "ttl_minutes FLOAT;") if isinstance(mig, str) else mig)
        for mig in store.MIGRATIONS
    ]


def _modes(mode: str) -> dict[str, Any]:
    if mode == "pipe":
        return {"pipeline": True}
    if mode == "pool":
        return {"pool_config": {"min_size": 1, "max_size": 10}}
    return {}


@contextmanager
def pg_store(implementation: str, mode: str = "default", *, ttl: Any = None) -> Iterator[Any]:
    """A sync store: the control in ``mode`` (upstream's default / pipe / pool
    connection), or abathur's (one kind of connection: ``default`` only)."""
    if implementation != PG_CONTROL:
        with SyncFactory(implementation).from_conn_string(":memory:", ttl=ttl) as store:
            yield store
        return
    from langgraph.store.postgres import PostgresStore

    schema, dsn = _control_dsn()
    _admin(f'CREATE SCHEMA "{schema}"')
    try:
        with PostgresStore.from_conn_string(dsn, ttl=ttl) as store:
            _float_ttl(store)
            store.setup()
        with PostgresStore.from_conn_string(dsn, ttl=ttl, **_modes(mode)) as store:
            yield store
    finally:
        _admin(f'DROP SCHEMA "{schema}" CASCADE')


@asynccontextmanager
async def pg_async_store(
    implementation: str, mode: str = "default", *, ttl: Any = None
) -> AsyncIterator[Any]:
    """The async counterpart of ``pg_store`` (the control's setup runs twice,
    the second time without its migration table, as upstream's fixture does)."""
    if implementation != PG_CONTROL:
        async with AsyncFactory(implementation).from_conn_string(":memory:", ttl=ttl) as store:
            yield store
        return
    from langgraph.store.postgres import AsyncPostgresStore

    schema, dsn = _control_dsn()
    _admin(f'CREATE SCHEMA "{schema}"')
    try:
        async with AsyncPostgresStore.from_conn_string(dsn, ttl=ttl) as store:
            _float_ttl(store)
            await store.setup()
            async with store._cursor() as cur:
                await cur.execute("DROP TABLE IF EXISTS store_migrations")
            await store.setup()  # idempotent migrations, as upstream checks
        async with AsyncPostgresStore.from_conn_string(dsn, ttl=ttl, **_modes(mode)) as store:
            yield store
    finally:
        _admin(f'DROP SCHEMA "{schema}" CASCADE')
