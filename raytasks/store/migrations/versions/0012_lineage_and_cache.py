"""Schema 12: a task's lineage (what its result came from), the cache key it was looked up
or stored under, the task a cached result came from, and the task a re-run repeats.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable columns: ALTER TABLE ... ADD COLUMN on both backends; old tasks have none
    op.add_column("rt_tasks", sa.Column("lineage", sa.Text, nullable=True))
    op.add_column("rt_tasks", sa.Column("cache_key", sa.String(64), nullable=True))
    op.add_column("rt_tasks", sa.Column("cached_from", sa.String(64), nullable=True))
    op.add_column("rt_tasks", sa.Column("rerun_of", sa.String(64), nullable=True))
    op.create_index("rt_tasks_cache_key", "rt_tasks", ["cache_key", "finished_at"])
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 12, "applied_at": time.time()}])
