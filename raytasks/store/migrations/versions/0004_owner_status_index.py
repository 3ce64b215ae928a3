"""Schema 4: an (owner, status, created_at, id) index for "my failed tasks"-style listings.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("rt_tasks_owner_status_created", "rt_tasks",
                    ["owner", "status", "created_at", "id"])
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 4, "applied_at": time.time()}])
