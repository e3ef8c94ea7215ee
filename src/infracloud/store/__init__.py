"""Persistence: SQLAlchemy 2 models, sessions and Alembic migrations."""

from infracloud.store.db import Database

__all__ = ["Database"]
