"""Schema 5: schedules, and task logs per attempt.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "rt_schedules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("last_run_at", sa.Float, nullable=True),
        sa.Column("next_run_at", sa.Float, nullable=True),
        sa.Column("last_task_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("rt_schedules_owner", "rt_schedules", ["owner"])
    op.create_table(
        "rt_logs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("rt_logs_task", "rt_logs", ["task_id", "attempt", "id"])
    op.create_index("rt_logs_at", "rt_logs", ["at"])
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 5, "applied_at": time.time()}])
