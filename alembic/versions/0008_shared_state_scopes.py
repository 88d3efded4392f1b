"""Shared state scopes: ``app:`` and ``user:`` state keys move to ``shared_state``.

Before this revision every session kept its own copy of its ``app:`` and
``user:`` keys. Now an ``app:`` key is one row for every session of the app
(``user_id = ''``) and a ``user:`` key one row for every session of
(app_name, user_id).

Upgrade moves the keys out of ``sessions.state``: where sessions of one app
(or one app and user) disagree on a key, the session written last wins
(``last_update_time``, then the session id, so the result never depends on
the scan order). The row's ``updated_at`` is that session's
``last_update_time``.

Downgrade copies every shared row back into the state of every session of its
app (``app:``) or its app and user (``user:``), then drops the table: every
session again sees the value it saw before the downgrade. Sessions created
after the upgrade get the keys too, as they saw them.

The values move through Python (``JSONDocument``), not the databases' JSON
functions: SQLite's ``json_each`` turns numbers into doubles, which would
change big integers and some floats.

Revision ID: 0008_shared_state_scopes
Revises: 0007_memory_embeddings
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from abathur.schema.ddl import json_valid
from abathur.schema.types import JSONDocument, UTCDateTime
from alembic import op

revision = "0008_shared_state_scopes"
down_revision = "0007_memory_embeddings"
branch_labels = None
depends_on = None

APP, USER = "app:", "user:"
SCOPE = (
    "(user_id = '' AND substr(key, 1, 4) = 'app:') "
    "OR (user_id <> '' AND substr(key, 1, 5) = 'user:')"
)

SESSIONS = sa.table(
    "sessions",
    sa.column("id", sa.Text()),
    sa.column("app_name", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("state", JSONDocument()),
    sa.column("last_update_time", UTCDateTime()),
)
SHARED = sa.table(
    "shared_state",
    sa.column("app_name", sa.Text()),
    sa.column("user_id", sa.Text()),
    sa.column("key", sa.Text()),
    sa.column("value", JSONDocument()),
    sa.column("updated_at", UTCDateTime()),
)


def _is_shared(key: str) -> bool:
    return key.startswith((APP, USER))


def upgrade() -> None:
    op.create_table(
        "shared_state",
        sa.Column("app_name", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", JSONDocument(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(SCOPE, name=op.f("ck_shared_state_scope")),
        json_valid("value", op.f("ck_shared_state_value_json")),
        sa.PrimaryKeyConstraint("app_name", "user_id", "key", name=op.f("pk_shared_state")),
    )
    conn = op.get_bind()
    newest: dict[tuple[str, str, str], tuple[Any, datetime]] = {}
    moved: list[tuple[str, dict[str, Any]]] = []
    rows = conn.execute(
        sa.select(
            SESSIONS.c.id,
            SESSIONS.c.app_name,
            SESSIONS.c.user_id,
            SESSIONS.c.state,
            SESSIONS.c.last_update_time,
        ).order_by(SESSIONS.c.last_update_time, SESSIONS.c.id)
    )
    for sid, app_name, user_id, state, updated in rows:
        if not isinstance(state, dict) or not any(_is_shared(k) for k in state):
            continue
        for key, value in state.items():
            if _is_shared(key):
                owner = "" if key.startswith(APP) else user_id
                newest[(app_name, owner, key)] = (value, updated)  # later rows win
        moved.append((sid, {k: v for k, v in state.items() if not _is_shared(k)}))
    if newest:
        conn.execute(
            SHARED.insert(),
            [
                {"app_name": a, "user_id": u, "key": k, "value": v, "updated_at": t}
                for (a, u, k), (v, t) in sorted(newest.items())
            ],
        )
    for sid, kept in moved:
        conn.execute(SESSIONS.update().where(SESSIONS.c.id == sid).values(state=kept))


def downgrade() -> None:
    conn = op.get_bind()
    by_scope: dict[tuple[str, str], dict[str, Any]] = {}
    for app_name, user_id, key, value in conn.execute(
        sa.select(SHARED.c.app_name, SHARED.c.user_id, SHARED.c.key, SHARED.c.value)
    ):
        by_scope.setdefault((app_name, user_id), {})[key] = value
    apps = sorted({app for app, _user in by_scope})
    for app_name in apps:
        for sid, user_id, state in conn.execute(
            sa.select(SESSIONS.c.id, SESSIONS.c.user_id, SESSIONS.c.state).where(
                SESSIONS.c.app_name == app_name
            )
        ).all():
            shared = {**by_scope.get((app_name, ""), {}), **by_scope.get((app_name, user_id), {})}
            if shared:
                merged = {**(state if isinstance(state, dict) else {}), **shared}
                conn.execute(SESSIONS.update().where(SESSIONS.c.id == sid).values(state=merged))
    op.drop_table("shared_state")
