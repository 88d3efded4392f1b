"""Database access: engine, models, repositories and services."""
