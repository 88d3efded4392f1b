"""Operations the Alembic revisions share.

SQLite cannot add or drop a foreign key or a column with ALTER TABLE, so
Alembic's batch mode copies the table. Its copy recreates the indexes from
reflection, which loses ``DESC`` on index columns. ``batch_alter_table`` here
saves the exact ``CREATE INDEX`` text first and replays it after the copy.

``revision_module`` loads another revision's module, for a revision that
builds on its frozen texts (a function's signature or body) or restores them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
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


def revision_module(here: str, filename: str) -> ModuleType:
    """The module of the revision in ``filename``, the file beside ``here``
    (the calling revision's ``__file__``)."""
    path = Path(here).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"abathur_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
