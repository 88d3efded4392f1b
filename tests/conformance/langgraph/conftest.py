"""Parametrization of the vendored LangGraph store suite (tests/conformance/langgraph/LICENSE, MIT).

Every test runs once per implementation (the autouse ``implementation``
fixture, parametrized here):

- ``sqlite``: LangGraph's own ``SqliteStore`` / ``AsyncSqliteStore``, the
  control, exactly as upstream runs it;
- ``abathur-sqlite`` / ``abathur-postgres``: ``AbathurStore``; the fixture
  rebinds the test module's ``SqliteStore`` / ``AsyncSqliteStore`` to the
  factories of ./abathur_stores.py, so every fixture and every store a test
  builds itself is ours. The PostgreSQL runs are skipped when
  ``ABATHUR_TEST_POSTGRES_URL`` is unset, like the rest of the suite.

- ``langgraph-postgres``: the control of test_pg_store.py / test_pg_async_store.py
  (langgraph-checkpoint-postgres 3.2.0's own tests), LangGraph's
  ``PostgresStore`` / ``AsyncPostgresStore`` on a fresh schema, built by those
  files' ``store`` fixtures through ./pg_stores.py, as are abathur's stores there.

Upstream's ``memory``/``file`` connection parameters mean two kinds of SQLite
connection; for abathur both would be the same fresh database, so the
abathur runs keep only ``memory`` (which gives them a fresh database file or
PostgreSQL schema).

Exceptions, each with its reason (listed in docs/integrations.md):
``CONTROL_ONLY`` (tests of LangGraph's SQLite internals), ``TTL_MODULES``
(test_ttl.py: 45 s of real sleeps per implementation), the control's vector
tests on a Python whose sqlite3 cannot load extensions, and ``XFAIL``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator

import pytest

from tests.conformance.langgraph.abathur_stores import (
    POSTGRES,
    SQLITE,
    TEMPLATES,
    AsyncFactory,
    SyncFactory,
)
from tests.conformance.langgraph.pg_stores import PG_CONTROL

CONTROL = "sqlite"
IMPLEMENTATIONS = [CONTROL, SQLITE, POSTGRES]
# The PostgreSQL store's files (test_pg_*.py, langgraph-checkpoint-postgres's own
# tests): their control is LangGraph's PostgresStore / AsyncPostgresStore
# (./pg_stores.py), run on ABATHUR_TEST_POSTGRES_URL.
PG_MODULES = {"test_pg_store", "test_pg_async_store"}
PG_IMPLEMENTATIONS = [PG_CONTROL, SQLITE, POSTGRES]
CONTROLS = {CONTROL, PG_CONTROL}

# Tests of LangGraph's SQLite store internals (its migrations, private helpers,
# the SQL text it generates, its connection and embeddings attributes).
CONTROL_ONLY = {
    "test_nonnull_migrations",
    "test_escape_glob_literal",
    "test_namespace_match_pattern",
    "test_list_namespaces_prefix_uses_indexable_condition",
}
# test_ttl.py sleeps about 45 s per implementation: it runs against abathur on
# SQLite only (upstream runs it against its own store in its CI), and on
# PostgreSQL too with ABATHUR_CONFORMANCE_TTL_POSTGRES=1. The TTL rules
# themselves (expiry, refresh, sweep) run on both backends, on a controlled
# clock, in tests/services/test_memory_retrieval.py.
TTL_MODULES = {"test_ttl"}
TTL_IMPLEMENTATIONS = [SQLITE] + (
    [POSTGRES] if os.environ.get("ABATHUR_CONFORMANCE_TTL_POSTGRES") == "1" else []
)

CAN_LOAD_EXTENSIONS = hasattr(sqlite3.Connection, "enable_load_extension")

# "module::test" -> reason, for every abathur run.
XFAIL: dict[str, str] = {
    "test_store::test_vector_store_initialization": (
        "reads SqliteStore internals: store.embeddings (the langchain Embeddings object "
        "LangGraph builds from the config) and store.conn (its sqlite3 connection)"
    ),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" not in metafunc.fixturenames:
        return
    name = metafunc.function.__name__
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if name in CONTROL_ONLY:
        params = [CONTROL]
    elif module in TTL_MODULES:
        params = TTL_IMPLEMENTATIONS
    elif module in PG_MODULES:
        params = PG_IMPLEMENTATIONS
    else:
        params = IMPLEMENTATIONS
    metafunc.parametrize("implementation", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "implementation" not in callspec.params:
            kept.append(item)
            continue
        implementation = callspec.params["implementation"]
        params = callspec.params
        # One kind of connection for abathur: upstream's ``file`` (SQLite) and
        # ``pipe`` / ``pool`` (PostgreSQL) runs would repeat its ``memory`` /
        # ``default`` run.
        duplicate = implementation not in CONTROLS and bool(
            {"file", "pipe", "pool"}
            & {params.get("store"), params.get("conn_string"), params.get("conn_type")}
        )
        if duplicate:
            dropped.append(item)
            continue
        kept.append(item)
        name = getattr(item, "originalname", item.name)
        if implementation in CONTROLS:
            if "fake_embeddings" in item.fixturenames and not CAN_LOAD_EXTENSIONS:  # type: ignore[attr-defined]
                item.add_marker(
                    pytest.mark.skip(
                        reason="control: LangGraph's SQLite vector store needs sqlite-vec, "
                        "and this Python's sqlite3 cannot load extensions"
                    )
                )
            continue
        module = item.module.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
        reason = XFAIL.get(f"{module}::{name}")
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def abathur_langgraph_templates() -> Iterator[None]:
    """Drop the run's migrated template databases at the end."""
    yield
    TEMPLATES.cleanup()


@pytest.fixture(autouse=True)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store implementation under test; for abathur, the module's store
    classes are rebound to abathur's factories."""
    name = str(getattr(request, "param", CONTROL))
    if name not in CONTROLS:
        module = request.module
        if hasattr(module, "SqliteStore"):
            monkeypatch.setattr(module, "SqliteStore", SyncFactory(name))
        if hasattr(module, "AsyncSqliteStore"):
            monkeypatch.setattr(module, "AsyncSqliteStore", AsyncFactory(name))
    return name
