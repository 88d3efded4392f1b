"""The planner's statistics of tables: how many rows they last counted, and
ANALYZE to count again (on PostgreSQL with VACUUM).

- ``counted_rows``: PostgreSQL's ``pg_class.reltuples`` (one catalog row
  per table, found by ``to_regclass`` under the connection's search_path;
  ``-1`` there, never analyzed, is None here); SQLite's row count in
  ``sqlite_stat1`` (the largest first number of its ``stat`` column, one
  row per index: a partial index holds fewer rows), None when
  the table has no row there or there is no ``sqlite_stat1`` at all.
- ``analyze``: on PostgreSQL ``VACUUM (ANALYZE)`` of the tables, what its
  autovacuum does by itself some time after a bulk insert: ANALYZE samples a
  fixed number of rows (300 x ``default_statistics_target``) whatever the
  table's size, and VACUUM marks the pages written all-visible in the
  visibility map (it skips those already marked, so it reads about the
  pages of the rows loaded), without which no index-only scan is one: each
  row's visibility is read from the table (a warm query search over 10,000
  memories: p50 16 ms before, 11 ms after; docs/design_decisions.md). Both hold
  a SHARE UPDATE EXCLUSIVE lock, which blocks no read or write. VACUUM
  cannot run in a transaction block: the connection must be in autocommit
  (``Storage.outside_transaction``). On SQLite, which has no visibility
  map, ``ANALYZE`` alone; it reads every entry of every index: ``PRAGMA
  analysis_limit`` is set to 0 (no limit) for the statement and put back
  after. A limit makes the row
  counts of ``sqlite_stat1`` estimates (a partial index of 10,000 rows
  counted 13,350, a full one 10,106, at a limit of 1,000) that flip the
  search's range onto another index: plans would depend on the sample.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, text

from abathur.db.sqlite.prepared import Executor
from abathur.repositories.base import dialect_name

# Rows SQLite's ANALYZE reads per index (``PRAGMA analysis_limit``; 0: all):
# see the module's docstring and docs/design_decisions.md ("Statistics after
# a bulk load").
SQLITE_ANALYSIS_LIMIT = 0

_PG_COUNTED = text(
    "SELECT t.name, c.reltuples FROM unnest(CAST(:tables AS text[])) AS t(name)"
    " JOIN pg_class c ON c.oid = to_regclass(t.name)"
)
_SQLITE_HAS_STAT1 = text(
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
)
_SQLITE_COUNTED = text("SELECT tbl, stat FROM sqlite_stat1 WHERE tbl IN :tables").bindparams(
    bindparam("tables", expanding=True)
)


def counted_rows(executor: Executor, tables: Sequence[str]) -> dict[str, float | None]:
    """The rows each table held when its statistics were last gathered
    (None: never gathered)."""
    counted: dict[str, float | None] = dict.fromkeys(tables)
    if dialect_name(executor) == "postgresql":
        for name, rows in executor.execute(_PG_COUNTED, {"tables": list(tables)}):
            counted[name] = None if rows < 0 else float(rows)
        return counted
    if executor.execute(_SQLITE_HAS_STAT1).first() is None:
        return counted
    for name, stat in executor.execute(_SQLITE_COUNTED, {"tables": list(tables)}):
        # One row per index, led by the rows it holds: a partial index holds
        # fewer, every other one all of the table's.
        first = str(stat).split(" ", 1)[0]
        if first.isdigit():
            counted[name] = max(float(first), counted[name] or 0.0)
    return counted


def analyze(executor: Executor, tables: Sequence[str]) -> None:
    """ANALYZE ``tables`` (names of this schema's tables, never user input);
    on PostgreSQL VACUUM (ANALYZE), outside any transaction block."""
    names = [_checked(name) for name in tables]
    if not names:
        return
    if dialect_name(executor) == "postgresql":
        executor.execute(text(f"VACUUM (ANALYZE) {', '.join(names)}"))
        return
    before = executor.execute(text("PRAGMA analysis_limit")).scalar()
    executor.execute(text(f"PRAGMA analysis_limit = {SQLITE_ANALYSIS_LIMIT}"))
    try:
        for name in names:
            executor.execute(text(f"ANALYZE {name}"))
    finally:
        executor.execute(text(f"PRAGMA analysis_limit = {int(before or 0)}"))


def _checked(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {name!r}")
    return name
