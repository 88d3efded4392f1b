"""PostgreSQL functions of the current schema as ``pg_proc`` has them: what
the migration tests compare across upgrades and downgrades."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import bindparam, text

from abathur.infrastructure.database import Database


class PgFunction(NamedTuple):
    arguments: str  # pg_get_function_arguments: with defaults
    identity: str  # pg_get_function_identity_arguments
    body: str
    settings: list[str] | None  # proconfig: its own SET clauses


_FUNCTIONS = text(
    "SELECT p.proname, pg_get_function_arguments(p.oid), "
    "pg_get_function_identity_arguments(p.oid), p.prosrc, p.proconfig "
    "FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() AND p.proname IN :names"
).bindparams(bindparam("names", expanding=True))


async def pg_functions(db: Database, *names: str) -> dict[str, PgFunction]:
    """The functions of ``names`` that exist, by name."""
    async with db.transaction(write=False) as session:
        result = await session.execute(_FUNCTIONS, {"names": list(names)})
        return {
            str(name): PgFunction(
                str(arguments), str(identity), str(body), None if config is None else list(config)
            )
            for name, arguments, identity, body, config in result
        }
