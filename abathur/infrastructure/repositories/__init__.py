"""Repositories own the SQL. They flush, never commit: the service owns the transaction."""
