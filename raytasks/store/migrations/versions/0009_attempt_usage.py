"""Schema 9: what each attempt used (CPU seconds, peak memory) and per-owner CPU by day.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable columns: ALTER TABLE ... ADD COLUMN on both backends, no table rebuilt
    op.add_column("rt_tasks", sa.Column("max_cpu_s", sa.Float, nullable=True))
    op.add_column("rt_tasks", sa.Column("cpu_s", sa.Float, nullable=True))
    op.add_column("rt_tasks", sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True))
    op.create_table(
        "rt_attempts",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("lease_token", sa.BigInteger, primary_key=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cpu_s", sa.Float, nullable=True),
        sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True),
        sa.Column("reported_at", sa.Float, nullable=False),
    )
    op.create_table(
        "rt_usage",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("cpu_s", sa.Float, nullable=False),
    )
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 9, "applied_at": time.time()}])
