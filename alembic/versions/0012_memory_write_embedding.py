"""PostgreSQL: a memory write with its embedding in one statement.

Revision 0010's ``abathur_write_memory`` wrote a version without its
embedding, so on PostgreSQL a write with an embedder (``add_memory`` and the
others with ``index`` on) still ran the multi-statement unit of work (BEGIN,
task check, lock, latest read, version, expiry, embedding, audit row,
COMMIT). This revision replaces the function with one taking three more
arguments, the embedding of the new version:

- ``p_embedding_model`` (NULL: no embedding to store, as in 0010);
- ``p_embedding_fields`` and ``p_embedding_vectors``, two arrays of the same
  length: each embedded field and its vector as ``memory_embeddings`` stores
  it (little-endian float32, ``repositories.embeddings.to_blob``), whose
  ``dims`` is its length in bytes / 4.

The rows are inserted right after the version, as the Python unit does
(``_store_embedding``); everything else is 0010's body unchanged. The old
signature is dropped (a call always names all arguments); the downgrade drops
the new one and creates 0010's function again, from 0010's own text. No
table changes, no data moves.

The body is frozen here, like every revision; a change is a new revision.

Revision ID: 0012_memory_write_embedding
Revises: 0011_session_append_function
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012_memory_write_embedding"
down_revision = "0011_session_append_function"
branch_labels = None
depends_on = None

FUNCTION = "abathur_write_memory"
# repositories.memory.BULK_LOCK_ID when this revision was written (a test
# checks that they still agree).
BULK_LOCK_ID = -0x6162617468757221
SIGNATURE = (
    "p_rule text, p_task_id text, p_lock_id bigint, p_namespace text, p_key text, "
    "p_value jsonb, p_memory_type text, p_metadata jsonb, p_by text, p_now timestamptz, "
    "p_expires_at timestamptz, p_ttl_seconds double precision, p_audit_extra jsonb, "
    "p_embedding_model text, p_embedding_fields text[], p_embedding_vectors bytea[]"
)
ARGUMENT_TYPES = (
    "text, text, bigint, text, text, jsonb, text, jsonb, text, timestamptz, timestamptz, "
    "double precision, jsonb, text, text[], bytea[]"
)
PREVIOUS = "0010_memory_write_function.py"

BODY = f"""
DECLARE
    latest record;
    known boolean;
    live boolean;
    had_expiry boolean;
    written memory_entries;
BEGIN
    PERFORM 1 FROM tasks WHERE tasks.id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task not found' USING ERRCODE = 'AB001';
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock_id)
        FROM (SELECT pg_advisory_xact_lock_shared({BULK_LOCK_ID})) AS bulk;
    SELECT m.version, m.is_deleted, m.memory_type, m.metadata, m.created_by, m.created_at,
           x.expires_at
      INTO latest
      FROM memory_entries AS m
      LEFT JOIN memory_expiry AS x ON x.namespace = m.namespace AND x.key = m.key
     WHERE m.namespace = p_namespace AND m.key = p_key AND m.is_current;
    known := FOUND;
    had_expiry := known AND latest.expires_at IS NOT NULL;
    IF had_expiry AND latest.expires_at <= p_now THEN
        IF NOT latest.is_deleted THEN
            UPDATE memory_entries SET is_deleted = true
             WHERE namespace = p_namespace AND key = p_key AND NOT is_deleted;
            latest.is_deleted := true;
        END IF;
        DELETE FROM memory_expiry WHERE namespace = p_namespace AND key = p_key;
        had_expiry := false;
    END IF;
    live := known AND NOT latest.is_deleted;
    IF p_rule = 'create' AND live THEN
        RAISE EXCEPTION 'memory already exists' USING ERRCODE = 'AB003',
            DETAIL = latest.version::text;
    END IF;
    IF p_rule = 'update' AND NOT live THEN
        RAISE EXCEPTION 'memory not found' USING ERRCODE = 'AB002';
    END IF;
    IF known THEN
        UPDATE memory_entries SET is_current = false
         WHERE namespace = p_namespace AND key = p_key AND is_current;
    END IF;
    IF live THEN
        INSERT INTO memory_entries (namespace, key, value, memory_type, version, is_deleted,
                                    metadata, created_by, updated_by, created_at, updated_at,
                                    is_current)
        VALUES (p_namespace, p_key, p_value, latest.memory_type, latest.version + 1, false,
                COALESCE(p_metadata, latest.metadata, '{{}}'::jsonb), latest.created_by, p_by,
                latest.created_at, p_now, true)
        RETURNING * INTO written;
    ELSE
        INSERT INTO memory_entries (namespace, key, value, memory_type, version, is_deleted,
                                    metadata, created_by, updated_by, created_at, updated_at,
                                    is_current)
        VALUES (p_namespace, p_key, p_value, p_memory_type,
                CASE WHEN known THEN latest.version + 1 ELSE 1 END, false,
                COALESCE(p_metadata, '{{}}'::jsonb), p_by, p_by, p_now, p_now, true)
        RETURNING * INTO written;
    END IF;
    IF p_embedding_model IS NOT NULL THEN
        INSERT INTO memory_embeddings AS stored (memory_entry_id, model, dims, field, vector)
        SELECT written.id, p_embedding_model, length(given.vector) / 4, given.field,
               given.vector
          FROM unnest(p_embedding_fields, p_embedding_vectors) AS given(field, vector);
    END IF;
    IF p_expires_at IS NULL THEN
        IF had_expiry THEN
            DELETE FROM memory_expiry WHERE namespace = p_namespace AND key = p_key;
        END IF;
    ELSIF had_expiry THEN
        UPDATE memory_expiry SET expires_at = p_expires_at, ttl_seconds = p_ttl_seconds
         WHERE namespace = p_namespace AND key = p_key;
    ELSE
        INSERT INTO memory_expiry (namespace, key, expires_at, ttl_seconds)
        VALUES (p_namespace, p_key, p_expires_at, p_ttl_seconds);
    END IF;
    IF live THEN
        INSERT INTO audit (timestamp, task_id, action_type, action_data, result,
                           memory_operation_type, memory_namespace, memory_entry_id)
        VALUES (p_now, p_task_id, 'memory_update',
                jsonb_build_object('key', p_key, 'version', written.version,
                                   'updated_by', p_by) || p_audit_extra,
                'success', 'update', p_namespace, written.id);
    ELSE
        INSERT INTO audit (timestamp, task_id, action_type, action_data, result,
                           memory_operation_type, memory_namespace, memory_entry_id)
        VALUES (p_now, p_task_id, 'memory_create',
                jsonb_build_object('key', p_key, 'version', written.version,
                                   'created_by', p_by, 'memory_type', written.memory_type)
                    || p_audit_extra,
                'success', 'create', p_namespace, written.id);
    END IF;
    RETURN written;
END
"""


def _previous() -> ModuleType:
    """Revision 0010's module (its signature and frozen body), for the downgrade."""
    path = Path(__file__).with_name(PREVIOUS)
    spec = importlib.util.spec_from_file_location("abathur_revision_0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    previous = _previous()
    op.execute(f"DROP FUNCTION {FUNCTION}({previous.ARGUMENT_TYPES})")
    op.execute(
        f"CREATE FUNCTION {FUNCTION}({SIGNATURE}) RETURNS memory_entries "
        f"LANGUAGE plpgsql VOLATILE AS $function${BODY}$function$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    previous = _previous()
    op.execute(f"DROP FUNCTION {FUNCTION}({ARGUMENT_TYPES})")
    op.execute(
        f"CREATE FUNCTION {FUNCTION}({previous.SIGNATURE}) RETURNS memory_entries "
        f"LANGUAGE plpgsql VOLATILE AS $function${previous.BODY}$function$"
    )
