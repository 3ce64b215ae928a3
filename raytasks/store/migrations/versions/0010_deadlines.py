"""Schema 10: deadlines, the work a task declares (what run times are predicted from) and
how many of its attempts were preempted (they do not count against its retries); each
attempt's reason, run time and the run time predicted for it; preemptions per owner and
day (what ``max_preempted_per_day`` is held against).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable or defaulted columns: ALTER TABLE ... ADD COLUMN on both backends
    op.add_column("rt_tasks", sa.Column("deadline", sa.Float, nullable=True))
    op.add_column("rt_tasks", sa.Column("work_units", sa.BigInteger, nullable=True))
    op.add_column("rt_tasks", sa.Column("preemptions", sa.Integer, nullable=False,
                                        server_default="0"))
    op.add_column("rt_attempts", sa.Column("reason", sa.String(32), nullable=True))
    op.add_column("rt_attempts", sa.Column("run_s", sa.Float, nullable=True))
    op.add_column("rt_attempts", sa.Column("estimate_s", sa.Float, nullable=True))
    op.add_column("rt_usage", sa.Column("preempted", sa.Integer, nullable=False,
                                        server_default="0"))
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 10, "applied_at": time.time()}])
