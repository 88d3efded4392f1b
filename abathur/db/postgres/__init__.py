"""The PostgreSQL fast path: hot statements sent to asyncpg directly, in autocommit (``direct``)."""
