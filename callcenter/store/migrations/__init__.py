"""Alembic migrations; run them with ``callcenter db upgrade`` (see docs/database.md)."""
