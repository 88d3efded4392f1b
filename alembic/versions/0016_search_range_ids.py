"""PostgreSQL: ``abathur_search_memories``' RANGE ranks row ids on the index,
then reads the rows of the page alone (issue 16).

Revision 0013's RANGE read every current live row of the subtree (a bitmap
heap scan of its namespaces), probed ``memory_expiry`` for each, and then sorted
the rows to keep ``p_limit`` of them: a page of 100 of a subtree of 1,000 read
1,000 rows, a subtree of 100,000 read 100,000. RANGE now ranks first:

1. the ids (with ``updated_at``) of the subtree's current live rows, from
   ``idx_memory_namespace_prefix`` (namespace, updated_at DESC, id DESC, partial
   on current live rows) by index-only scans, no row read: two arms, the root
   namespace (which the index yields in rank order, so its scan stops as soon
   as the page is complete) and the descendants' range (several namespaces,
   sorted on the two columns), merged in rank order (updated_at DESC, id DESC);
2. then, per id in that order, the row (primary key) and its key's expiry
   (primary key of ``memory_expiry``), dropping expired keys and, for a memory
   type or a filter, rows that do not match; LIMIT/OFFSET stop the pull after
   the page: about ``p_offset + p_limit`` rows are read (plus the expired and
   filtered-out ones before them).

With a memory type or a filter, RANGE probes at most K ranked ids (1,000,
or 16 times ``p_offset + p_limit``); if they did not fill the page and the
subtree holds more than K current live rows, 0013's RANGE (a read of the
whole subtree, cheaper than a probe per id when few rows match) gives the
page instead, in the same statement (one snapshot), behind a one-time filter.

Same rows, same order, same expiry semantics; WALK, the probes, the
signature, the result and the settings are 0013's. As in 0013 the memory type
is tested on its text (``|| ''``), so no plan joins the ranked ids to the
rows of the type instead of probing each row by id.

The downgrade creates 0013's function again, from 0013's own text.

Revision ID: 0016_search_range_ids
Revises: 0015_session_plans
"""

from __future__ import annotations

from types import ModuleType

from abathur.schema.migration_ops import revision_module
from alembic import op

revision = "0016_search_range_ids"
down_revision = "0015_session_plans"
branch_labels = None
depends_on = None

PREVIOUS = "0013_search_function.py"


def _previous() -> ModuleType:
    """Revision 0013's module (the function's signature, result, settings and body)."""
    return revision_module(__file__, PREVIOUS)


OLD = _previous()
FUNCTION = OLD.FUNCTION
SIGNATURE = OLD.SIGNATURE
ARGUMENT_TYPES = OLD.ARGUMENT_TYPES
RESULT = OLD.RESULT
SETTINGS = OLD.SETTINGS
ENTRY = OLD.ENTRY
LIVE = OLD.LIVE
WALK = OLD.WALK
TYPED = OLD.TYPED
NAMES = OLD.NAMES
VARIABLES = OLD.VARIABLES
DOLLARS = OLD.DOLLARS
USING = OLD.USING
PREPARED_TYPES = OLD.PREPARED_TYPES

RANKED_LIVE = "ranked.is_current AND NOT ranked.is_deleted"
# The statements, with placeholders as in 0013 ({root}...: a variable in the
# static statements, ``$1``... in the dynamic ones; {typed}; {filter}).
#
# ``ids``, the ranking (fenced by ``OFFSET 0``): the two arms, each in the
# order of idx_memory_namespace_prefix (its own ORDER BY, fenced: not
# flattened into the union), merged in rank order (a Merge Append). Under the
# function's ``enable_sort = off`` an arm's ORDER BY is what keeps it on an
# index-only scan of that index: a bitmap scan (which reads the rows' pages)
# would need a sort of its own. The root's arm is already in rank order (one
# namespace), so the merge reads it lazily and it stops with the page; the
# descendants' arm (several namespaces) is sorted on (updated_at, id).
#
# Then per id, in that order, the row: a LATERAL subquery (kept a subquery by
# its LIMIT) is a probe of the primary key per id, never a join that would
# read the table (or all rows of a type) on its own; the memory type and the
# filter are tested there, on the row read. Then the key's expiry, then
# LIMIT/OFFSET: the pull stops after the page.
RANGE = f"""
SELECT memory_entries.*, x.expires_at, x.ttl_seconds
  FROM (SELECT ids.id, ids.updated_at FROM (
            (SELECT ranked.id, ranked.updated_at FROM memory_entries AS ranked
              WHERE ranked.namespace = {{root}} COLLATE "C" AND {RANKED_LIVE}
              ORDER BY ranked.updated_at DESC, ranked.id DESC
             OFFSET 0)
            UNION ALL
            (SELECT ranked.id, ranked.updated_at FROM memory_entries AS ranked
              WHERE ranked.namespace >= {{lower}} COLLATE "C"
                AND ranked.namespace < {{upper}} COLLATE "C" AND {RANKED_LIVE}
              ORDER BY ranked.namespace, ranked.updated_at DESC, ranked.id DESC
             OFFSET 0)) AS ids
         ORDER BY ids.updated_at DESC, ids.id DESC
        OFFSET 0) AS ids
 CROSS JOIN LATERAL (
        SELECT {ENTRY} FROM memory_entries
         WHERE memory_entries.id = ids.id{{typed}}{{filter}}
         LIMIT 1) AS memory_entries
  LEFT JOIN LATERAL (
        SELECT e.expires_at, e.ttl_seconds FROM memory_expiry AS e
         WHERE e.namespace = memory_entries.namespace AND e.key = memory_entries.key
         LIMIT 1) AS x ON true
 WHERE x.expires_at IS NULL OR x.expires_at > {{now}}
 ORDER BY ids.updated_at DESC, ids.id DESC
 LIMIT {{limit}} OFFSET {{offset}}"""
# Tested on the row read by id, on its text (as 0013 did).
RANGE_TYPED = " AND memory_entries.memory_type || '' = {memory_type}"


# A memory type or a filter that few rows of a large subtree match would make
# RANGE probe every id of the subtree, one by one: slower than 0013's read of
# the subtree's pages in order. So the typed and filtered RANGE ranks and
# probes at most K ids (``fast``); only when that did not fill the page and the
# subtree holds more than K current live rows does 0013's RANGE run instead
# (``slow``, an uncorrelated condition: a one-time filter, so the branch not
# taken never runs). One statement, one snapshot: the two never disagree on
# the rows. K is SEARCH_CAP's 1,000, or 16 times the page (WALK_DENSITY): the
# probes are bounded by the walk's own bound.
K = "greatest(1000, least({limit} + {offset}, 576460752303423487) * 16)"
FAST = (
    RANGE.replace(
        "SELECT memory_entries.*, x.expires_at, x.ttl_seconds\n",
        "SELECT memory_entries.*, x.expires_at, x.ttl_seconds,\n"
        "       ids.updated_at AS rank_at, ids.id AS rank_id\n",
    )
    .replace("        OFFSET 0) AS ids\n CROSS", f"         LIMIT {K}) AS ids\n CROSS")
    .replace(" LIMIT {limit} OFFSET {offset}", " LIMIT {limit} + {offset}")
)
assert FAST.count("rank_at") == 1 and FAST.count(K) == 1 and "OFFSET {offset}" not in FAST


def _count(subtree: str) -> str:
    return f"""(SELECT count(*) FROM (
            SELECT 1 FROM memory_entries AS ranked WHERE {subtree} AND {RANKED_LIVE}
             ORDER BY ranked.namespace, ranked.updated_at DESC, ranked.id DESC
             LIMIT {K} + 1) AS candidates)"""


SLOW = (
    "((SELECT count(*) FROM fast) < {limit} + {offset} AND "
    + _count('ranked.namespace = {root} COLLATE "C"')
    + " + "
    + _count('ranked.namespace >= {lower} COLLATE "C" AND ranked.namespace < {upper} COLLATE "C"')
    + f" > {K})"
)
COLUMNS = ", ".join(
    f"fast.{name}"
    for name in (
        "id", "namespace", "key", "value", "memory_type", "version", "is_deleted", "metadata",
        "created_by", "updated_by", "created_at", "updated_at", "is_current", "expires_at",
        "ttl_seconds",
    )
)  # fmt: skip
GATED = f"""
WITH fast AS MATERIALIZED ({FAST}),
gate AS MATERIALIZED (SELECT {SLOW} AS slow)
(SELECT {COLUMNS} FROM fast
  WHERE NOT (SELECT gate.slow FROM gate)
  ORDER BY fast.rank_at DESC, fast.rank_id DESC
 OFFSET {{offset}})
UNION ALL
({OLD.RANGE.replace("{filter}", "{filter} AND (SELECT gate.slow FROM gate)")})"""


def _static(template: str, typed: bool) -> str:
    if template is RANGE and typed:
        template = GATED
    condition = (TYPED if template is WALK else RANGE_TYPED).format(**VARIABLES) if typed else ""
    return template.format(**VARIABLES, typed=condition, filter="")


def _dynamic(template: str, typed: bool) -> str:
    """The statement as a format() string: ``%1$s`` is the filter."""
    if template is RANGE:
        template = GATED
    condition = (TYPED if template is WALK else RANGE_TYPED).format(**DOLLARS) if typed else ""
    sql = template.format(**DOLLARS, typed=condition, filter=" AND (%1$s)")
    assert "$q$" not in sql and sql.count("%") == sql.count("%1$s") >= 1
    return sql


def _branch(typed: bool) -> str:
    return f"""
        IF p_filter IS NULL THEN
            IF walk THEN
                RETURN QUERY {_static(WALK, typed)};
            ELSE
                RETURN QUERY {_static(RANGE, typed)};
            END IF;
            RETURN;
        END IF;
        IF walk THEN
            statement := format($q${_dynamic(WALK, typed)}$q$, p_filter);
        ELSE
            statement := format($q${_dynamic(RANGE, typed)}$q$, p_filter);
        END IF;"""


BODY = f"""
#variable_conflict use_column
DECLARE
    walk boolean;
    statement text;
    prepared text;
BEGIN
    IF p_filter IS NOT NULL THEN
        walk := {OLD._probe(OLD.ROOT)} + {OLD._probe(OLD.BELOW)} >= p_cap;
    END IF;
    IF p_memory_type IS NULL THEN
        IF walk IS NOT FALSE THEN
            walk := {OLD._recent(False)} >= p_limit + p_offset;
        END IF;
        {_branch(False)}
    ELSE
        IF walk IS NOT FALSE THEN
            walk := {OLD._recent(True)} >= p_limit + p_offset;
        END IF;
        {_branch(True)}
    END IF;
    -- A filtered statement: prepared once per connection and filter shape.
    prepared := 'abathur_search_' || md5(statement);
    IF NOT EXISTS (SELECT 1 FROM pg_prepared_statements AS s WHERE s.name = prepared) THEN
        EXECUTE format('PREPARE %I ({PREPARED_TYPES}) AS %s', prepared, statement);
    END IF;
    RETURN QUERY EXECUTE format('EXECUTE %I (%L, %L, %L, %L, %L, %L, %L, %L)', prepared,
        {USING});
END
"""


def _replace(body: str) -> None:
    op.execute(
        f"CREATE OR REPLACE FUNCTION {FUNCTION}({SIGNATURE}) RETURNS TABLE ({RESULT}) "
        f"LANGUAGE plpgsql VOLATILE {SETTINGS} AS $function${body}$function$"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _replace(BODY)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _replace(OLD.BODY)
