"""What every repository shares: prepared inserts, existence checks, duplicate keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, orm, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError

from abathur.db.errors import is_duplicate_key
from abathur.db.sqlite.prepared import Executor, Prepared
from abathur.errors import AlreadyExistsError, NotFoundError


def dialect_name(executor: Executor) -> str:
    bind = executor.bind if isinstance(executor, orm.Session) else executor
    assert bind is not None
    return bind.dialect.name


_INSERTS: dict[type[Any], tuple[Prepared, list[tuple[str, str]]]] = {}


def insert_row(executor: Executor, row: Any) -> None:
    """INSERT the attributes set on ``row`` and take its primary key from RETURNING.

    One Core statement, built once per model: the unit of work (``add`` +
    ``flush``) does the same with several times the Python overhead, and rows
    written here (memory versions, audit entries, checkpoints) are complete
    when built. Unset (None) attributes are left to the column's default.
    ``row`` stays outside the ORM session.
    """
    model = type(row)
    if model not in _INSERTS:
        mapper = sa_inspect(model)
        table = mapper.local_table
        columns = [(prop.key, prop.columns[0].name) for prop in mapper.column_attrs]
        insert = table.insert().returning(*table.primary_key.columns)
        _INSERTS[model] = (Prepared(insert), columns)
    statement, columns = _INSERTS[model]
    state = row.__dict__
    values = {column: state[attr] for attr, column in columns if state.get(attr) is not None}
    key = statement.first(executor, values)
    assert key is not None  # an INSERT ... RETURNING that succeeded returns its row
    for column, value in zip(sa_inspect(model).primary_key, key, strict=True):
        setattr(row, column.key, value)


def flush_new(session: orm.Session, row: Any, what: str) -> None:
    """Flush an INSERT, translating a duplicate key into AlreadyExistsError."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        if is_duplicate_key(exc):
            raise AlreadyExistsError(f"{what} already exists") from exc
        raise


_EXISTS: dict[str, Prepared] = {}


def exists_query(model: type[Any]) -> Prepared:
    """``SELECT pk FROM table WHERE pk = :key``, built once per table."""
    table = model.__table__
    if table.name not in _EXISTS:
        key = table.primary_key.columns[0]
        _EXISTS[table.name] = Prepared(select(key).where(key == bindparam("key")))
    return _EXISTS[table.name]


def require(executor: Executor, model: type[Any], key: Any, what: str) -> None:
    """Raise NotFoundError unless the row with primary key ``key`` exists."""
    found = exists_query(model).scalar(executor, {"key": key})
    if found is None:
        raise NotFoundError(f"{what} {key!r} not found")
