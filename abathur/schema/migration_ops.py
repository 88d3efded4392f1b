"""Operations the Alembic revisions share.

SQLite cannot add or drop a foreign key or a column with ALTER TABLE, so
Alembic's batch mode copies the table. Its copy recreates the indexes from
reflection, which loses ``DESC`` on index columns. ``batch_alter_table`` here
saves the exact ``CREATE INDEX`` text first and replays it after the copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.operations import BatchOperations

from alembic import op


@contextmanager
def batch_alter_table(table: str, **kwargs: Any) -> Iterator[BatchOperations]:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        with op.batch_alter_table(table, **kwargs) as batch:
            yield batch
        return
    saved = bind.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    ).all()
    with op.batch_alter_table(table, **kwargs) as batch:
        yield batch
    for name, sql in saved:
        op.execute(f'DROP INDEX IF EXISTS "{name}"')
        op.execute(sql)
