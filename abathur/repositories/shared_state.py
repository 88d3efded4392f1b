"""SharedStateRepository: the SQL of the shared state scopes (``shared_state``).

One row per key: an ``app:`` key under (app_name, ''), a ``user:`` key under
(app_name, user_id). A write is an upsert per key (``INSERT ... ON CONFLICT
DO UPDATE``): atomic on its own, so writers of different keys never touch
each other's rows and writers of one key end with the last one's value,
whichever sessions they write through. Rows are written in primary key order,
so two PostgreSQL transactions upserting the same keys lock them in the same
order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from abathur.db.sqlite.prepared import Executor, Prepared
from abathur.domain.clock import utcnow
from abathur.domain.sessions import APP_PREFIX, AppSharedState
from abathur.repositories.base import dialect_name
from abathur.schema.models import Session, SharedState
from abathur.strict_json import JSONText

SHARED: Table = SharedState.__table__  # type: ignore[assignment]
APP_SCOPE = ""  # the user_id of an app: row

# The rows a session of (app, user) sees: the app's and the user's, by primary key.
READ = Prepared(
    select(SharedState.key.label("key"), SharedState.value.label("value")).where(
        SharedState.app_name == bindparam("app_name"),
        SharedState.user_id.in_([literal_column("''"), bindparam("user_id")]),
    )
)

# Every row of an app, by the primary key's first column (``list_sessions``
# across users: one read for all of them).
READ_APP = Prepared(
    select(
        SharedState.user_id.label("user_id"),
        SharedState.key.label("key"),
        SharedState.value.label("value"),
    ).where(SharedState.app_name == bindparam("app_name"))
)


def _read_key(user_id: Any) -> Prepared:
    """One key as a session sees it: (the session's id, the value or NULL);
    no row when there is no session."""
    joined = Session.__table__.outerjoin(
        SHARED,
        and_(
            SharedState.app_name == Session.app_name,
            SharedState.user_id == user_id,
            SharedState.key == bindparam("key"),
        ),
    )
    return Prepared(
        select(Session.id.label("id"), SharedState.value.label("value"))
        .select_from(joined)
        .where(Session.id == bindparam("id"))
    )


READ_APP_KEY = _read_key(literal_column("''"))
READ_USER_KEY = _read_key(Session.user_id)


def _upsert(dialect: str) -> Prepared:
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = insert(SHARED)
    return Prepared(
        statement.on_conflict_do_update(
            index_elements=[SHARED.c.app_name, SHARED.c.user_id, SHARED.c.key],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
    )


UPSERTS = {"sqlite": _upsert("sqlite"), "postgresql": _upsert("postgresql")}


def scope_user(key: str, user_id: str) -> str:
    """The ``user_id`` column of ``key``'s row for a session of ``user_id``."""
    return APP_SCOPE if key.startswith(APP_PREFIX) else user_id


class SharedStateRepository:
    def __init__(self, executor: Executor):
        self.executor = executor

    def read(self, app_name: str, user_id: str | None) -> dict[str, Any]:
        """The shared keys a session of (app, user) sees; ``user_id=None``: the app's only."""
        rows = READ.all(
            self.executor,
            {"app_name": app_name, "user_id": APP_SCOPE if user_id is None else user_id},
        )
        return {row.key: row.value for row in rows}

    def read_app(self, app_name: str) -> AppSharedState:
        """Every shared key of ``app_name``: its ``app:`` keys and each user's
        ``user:`` keys, in one statement."""
        app: dict[str, Any] = {}
        users: dict[str, dict[str, Any]] = {}
        for row in READ_APP.all(self.executor, {"app_name": app_name}):
            scope = app if row.user_id == APP_SCOPE else users.setdefault(row.user_id, {})
            scope[row.key] = row.value
        return {"app": app, "users": users}

    def read_key(self, session_id: str, key: str) -> Any | None:
        """The value of a shared ``key`` as session ``session_id`` sees it; None
        when unset or when there is no such session."""
        statement = READ_APP_KEY if key.startswith(APP_PREFIX) else READ_USER_KEY
        row = statement.first(self.executor, {"id": session_id, "key": key})
        return None if row is None else row.value

    def write(
        self,
        app_name: str,
        user_id: str,
        delta: Mapping[str, JSONText],
        now: datetime | None = None,
    ) -> None:
        """Upsert ``delta``'s keys (values as ``check_json`` text) for a session
        of (app, user), in primary key order."""
        if not delta:
            return
        at = utcnow() if now is None else now
        rows = sorted(
            (
                {
                    "app_name": app_name,
                    "user_id": scope_user(key, user_id),
                    "key": key,
                    "value": value,
                    "updated_at": at,
                }
                for key, value in delta.items()
            ),
            key=lambda r: (r["user_id"], r["key"]),
        )
        UPSERTS[dialect_name(self.executor)].execute_many(self.executor, rows)
