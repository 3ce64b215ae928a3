"""Durable state: the TaskStore contract and its SQL backends (SQLite, PostgreSQL)."""

from .base import SCHEMA_VERSION, TaskStore, WriteBatch
from .sql import SqlTaskStore


def open_store(url: str) -> SqlTaskStore:
    """Open (and migrate) the store at a SQLAlchemy URL: ``sqlite:///path`` or ``postgresql://``."""
    return SqlTaskStore(url)


__all__ = ["SCHEMA_VERSION", "SqlTaskStore", "TaskStore", "WriteBatch", "open_store"]
