"""PostgreSQL: one memory write in one statement, ``abathur_write_memory``.

``add_memory``, ``update_memory`` and ``put_memory`` on PostgreSQL call this
PL/pgSQL function as a single statement in an implicit (autocommit)
transaction: one round trip instead of eight (BEGIN, the task check, the
key's lock, the latest read, the move of ``is_current``, the version, the
audit row, COMMIT). It does what the Python unit of work does, in the same
order and with the same locks, so that it serialises with that path and with
``put_memories``:

1. the task must exist (else SQLSTATE ``AB001``);
2. the shared side of the bulk lock, then the key's advisory lock (the id is
   computed by the caller, ``MemoryRepository.key_lock_id``);
3. the key's current version with its expiry, read after the lock (a fresh
   snapshot per statement under READ COMMITTED); a key past its expiry is
   soft-deleted and its expiry dropped first;
4. the rule: ``create`` on a live key raises ``AB003`` (DETAIL: its
   version), ``update`` on a missing or deleted key ``AB002``;
5. the previous current row loses ``is_current``, the next version is
   inserted, the expiry set, changed or cleared, and one audit row written.

An error anywhere rolls the whole statement back; the caller maps the codes to
the same ``abathur.errors`` exceptions and messages as the SQLite path. SQLite
has no such function (its unit of work runs in-process).

The body is frozen here, like every revision; a change is a new revision.

Revision ID: 0010_memory_write_function
Revises: 0009_memory_current_version
"""

from __future__ import annotations

from alembic import op

revision = "0010_memory_write_function"
down_revision = "0009_memory_current_version"
branch_labels = None
depends_on = None

FUNCTION = "abathur_write_memory"
# repositories.memory.BULK_LOCK_ID when this revision was written (a test
# checks that they still agree).
BULK_LOCK_ID = -0x6162617468757221
SIGNATURE = (
    "p_rule text, p_task_id text, p_lock_id bigint, p_namespace text, p_key text, "
    "p_value jsonb, p_memory_type text, p_metadata jsonb, p_by text, p_now timestamptz, "
    "p_expires_at timestamptz, p_ttl_seconds double precision, p_audit_extra jsonb"
)
ARGUMENT_TYPES = (
    "text, text, bigint, text, text, jsonb, text, jsonb, text, timestamptz, timestamptz, "
    "double precision, jsonb"
)

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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {FUNCTION}({SIGNATURE}) RETURNS memory_entries "
        f"LANGUAGE plpgsql VOLATILE AS $function${BODY}$function$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {FUNCTION}({ARGUMENT_TYPES})")
