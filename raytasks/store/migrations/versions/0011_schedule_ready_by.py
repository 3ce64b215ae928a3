"""Schema 11: a schedule's ``ready_by``, the local time of day (HH:MM) each run's task is
due by.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column: ALTER TABLE ... ADD COLUMN on both backends; old schedules have none
    op.add_column("rt_schedules", sa.Column("ready_by", sa.String(5), nullable=True))
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 11, "applied_at": time.time()}])
