"""Alembic migrations of the store (run by :mod:`raytasks.store.migrate`, not by hand)."""
