"""Repositories for the Milestone 1 tables that later work needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from abathur.domain.core import NewAgent, NewAuditEntry, NewTask
from abathur.errors import AlreadyExistsError, NotFoundError
from abathur.infrastructure.models import Agent, AuditEntry, Checkpoint, Session, Task
from abathur.infrastructure.namespaces import in_subtree
from abathur.infrastructure.prepared import Executor as Executor
from abathur.infrastructure.prepared import Prepared
from abathur.infrastructure.types import utcnow


def dialect_name(executor: Executor) -> str:
    bind = executor.bind if isinstance(executor, OrmSession) else executor
    assert bind is not None
    return bind.dialect.name


_INSERTS: dict[type[Any], tuple[Prepared, list[tuple[str, str]]]] = {}


def insert_row(session: Executor, row: Any) -> None:
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
    key = statement.first(session, values)
    assert key is not None  # an INSERT ... RETURNING that succeeded returns its row
    for column, value in zip(sa_inspect(model).primary_key, key, strict=True):
        setattr(row, column.key, value)


def is_duplicate_key(exc: IntegrityError) -> bool:
    """A UNIQUE or primary-key violation (SQLite: "UNIQUE constraint failed";
    PostgreSQL: "duplicate key value"), not a CHECK or foreign-key one."""
    message = str(exc.orig).lower()
    return "unique" in message or "duplicate" in message


def flush_new(session: OrmSession, row: Any, what: str) -> None:
    """Flush an INSERT, translating a duplicate key into AlreadyExistsError."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        if is_duplicate_key(exc):
            raise AlreadyExistsError(f"{what} already exists") from exc
        raise


_EXISTS: dict[str, Prepared] = {}


def _exists_query(model: type[Any]) -> Prepared:
    """``SELECT pk FROM table WHERE pk = :key``, built once per table."""
    table = model.__table__
    if table.name not in _EXISTS:
        key = table.primary_key.columns[0]
        _EXISTS[table.name] = Prepared(select(key).where(key == bindparam("key")))
    return _EXISTS[table.name]


def require(session: Executor, model: type[Any], key: Any, what: str) -> None:
    """Raise NotFoundError unless the row with primary key ``key`` exists."""
    found = _exists_query(model).scalar(session, {"key": key})
    if found is None:
        raise NotFoundError(f"{what} {key!r} not found")


class TaskRepository:
    def __init__(self, session: OrmSession):
        self.session = session

    def create(self, new: NewTask, task_id: str) -> Task:
        if new.parent_task_id is not None:
            require(self.session, Task, new.parent_task_id, "parent task")
        if new.session_id is not None:
            require(self.session, Session, new.session_id, "session")
        now = utcnow()
        row = Task(
            id=task_id,
            **new.model_dump(exclude={"id"}),
            submitted_at=now,
            last_updated_at=now,
        )
        flush_new(self.session, row, f"task {task_id!r}")
        return row

    def get(self, task_id: str) -> Task | None:
        return self.session.get(Task, task_id)

    def exists(self, task_id: str) -> bool:
        return _exists_query(Task).scalar(self.session, {"key": task_id}) is not None

    def list_for_session(self, session_id: str) -> Sequence[Task]:
        query = select(Task).where(Task.session_id == session_id).order_by(Task.submitted_at.desc())
        return (self.session.scalars(query)).all()


class AgentRepository:
    def __init__(self, session: OrmSession):
        self.session = session

    def create(self, new: NewAgent, agent_id: str) -> Agent:
        require(self.session, Task, new.task_id, "task")
        if new.session_id is not None:
            require(self.session, Session, new.session_id, "session")
        row = Agent(id=agent_id, **new.model_dump(exclude={"id"}), spawned_at=utcnow())
        flush_new(self.session, row, f"agent {agent_id!r}")
        return row

    def get(self, agent_id: str) -> Agent | None:
        return self.session.get(Agent, agent_id)


class CheckpointRepository:
    def __init__(self, session: OrmSession):
        self.session = session

    def save(self, task_id: str, iteration: int, state: Any, session_id: str | None) -> Checkpoint:
        require(self.session, Task, task_id, "task")
        row = Checkpoint(
            task_id=task_id,
            iteration=iteration,
            state=state,
            session_id=session_id,
            created_at=utcnow(),
        )
        flush_new(self.session, row, f"checkpoint {task_id!r}/{iteration}")
        return row

    def latest(self, task_id: str) -> Checkpoint | None:
        query = (
            select(Checkpoint)
            .where(Checkpoint.task_id == task_id)
            .order_by(Checkpoint.iteration.desc())
            .limit(1)
        )
        return self.session.scalar(query)


class AuditRepository:
    def __init__(self, session: Executor):
        self.session = session

    def append(self, entry: NewAuditEntry) -> AuditEntry:
        row = AuditEntry(**entry.model_dump(), timestamp=utcnow())
        insert_row(self.session, row)
        return row

    def for_task(self, task_id: str, limit: int = 100) -> Sequence[AuditEntry]:
        query = (
            select(AuditEntry)
            .where(AuditEntry.task_id == task_id)
            .order_by(AuditEntry.timestamp.desc(), AuditEntry.id.desc())
            .limit(limit)
        )
        return (self.session.scalars(query)).all()

    def tail(self, namespace_prefix: str | None = None, limit: int = 50) -> Sequence[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.timestamp.desc(), AuditEntry.id.desc())
        if namespace_prefix is not None:
            query = query.where(in_subtree(AuditEntry.memory_namespace, namespace_prefix))
        return (self.session.scalars(query.limit(limit))).all()
