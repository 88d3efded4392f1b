"""The declarative schema: table models, column types, DDL helpers shared with
the Alembic revisions."""
