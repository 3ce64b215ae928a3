"""Schema 3: indexes for keyset pages and retention on a store of millions of tasks.

``(created_at, id)``, ``(owner, created_at, id)`` and ``(status, created_at, id)`` serve
the newest-first listings (all, one owner's, one status) as index ranges; ``finished_at``
serves retention. They replace the single-column created and owner indexes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("rt_tasks_created_id", "rt_tasks", ["created_at", "id"])
    op.create_index("rt_tasks_owner_created", "rt_tasks", ["owner", "created_at", "id"])
    op.create_index("rt_tasks_status_created", "rt_tasks", ["status", "created_at", "id"])
    op.create_index("rt_tasks_finished", "rt_tasks", ["finished_at"])
    op.drop_index("rt_tasks_created", "rt_tasks")
    op.drop_index("rt_tasks_owner", "rt_tasks")
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 3, "applied_at": time.time()}])
