"""PostgreSQL: ``abathur_write_memory`` plans its statements once per
connection (issue 16: the server time of a memory write).

abathur's connections set ``plan_cache_mode = force_custom_plan``
(``db/engine.py``), and a function's statements inherit the session's
setting: every call of revision 0012's function planned each statement it
ran (the task check, the locks, the latest read, the flip of ``is_current``,
the version, the audit row) and the foreign-key checks of the audit row, for
its own values, about 0.2 ms of a write's server time. Each of those
statements is an equality lookup on a key (``idx_memory_current_key``, a
primary key) or an INSERT: its plan does not depend on the values, so a
generic plan, made at the function's first call on a connection and kept, is
the plan a custom one would be. The function now carries its own settings,
as ``abathur_search_memories`` does (revision 0013):

- ``plan_cache_mode = force_generic_plan``: each statement is planned once per
  connection (and again only when a table's definition or statistics change);
- ``enable_seqscan = off``: a plan made while a table is small (a new
  database, before ANALYZE) is an index plan all the same, since it is kept.

The body, the signature and the result are 0012's, unchanged. Fewer
statements (the task check in the locks' statement, the flip by ``ctid``, the
flip, version and audit row in one statement of CTEs) were measured and
rejected: no faster (docs/design_decisions.md, "PostgreSQL memory write:
where the server time goes").

The downgrade removes the settings (0012's function exactly).

Revision ID: 0014_memory_write_lean
Revises: 0013_search_function
"""

from __future__ import annotations

from types import ModuleType

from abathur.schema.migration_ops import revision_module
from alembic import op

revision = "0014_memory_write_lean"
down_revision = "0013_search_function"
branch_labels = None
depends_on = None

FUNCTION = "abathur_write_memory"
SETTINGS = "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"
# pg_proc.proconfig once upgraded (a test compares).
CONFIG = ["plan_cache_mode=force_generic_plan", "enable_seqscan=off"]
PREVIOUS = "0012_memory_write_embedding.py"


def _previous() -> ModuleType:
    """Revision 0012's module (the function's argument types)."""
    return revision_module(__file__, PREVIOUS)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {FUNCTION}({_previous().ARGUMENT_TYPES}) {SETTINGS}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION {FUNCTION}({_previous().ARGUMENT_TYPES}) RESET ALL")
