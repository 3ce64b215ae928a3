"""Schema 2: idempotency keys scoped to their owner; leases and queue times survive restarts.

- ``idempotency_scope`` (the owner, "" for none): keys are unique per owner, not globally;
- ``enqueued_at``: when the task last entered its queue, so aging survives a restart;
- ``lease_request``/``lease_executor``: the call and executor that hold the lease, so a
  retried ``report_and_lease`` gets its leases back and a cancel reaches the executor;
- an index on event time, for retention.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    new_columns = [
        sa.Column("idempotency_scope", sa.String(200), nullable=False, server_default=""),
        sa.Column("enqueued_at", sa.Float, nullable=True),
        sa.Column("lease_request", sa.String(64), nullable=True),
        sa.Column("lease_executor", sa.String(200), nullable=True),
    ]
    if bind.dialect.name == "sqlite":
        # SQLite cannot drop the unnamed UNIQUE(idempotency_key): rebuild the table
        # from a copy of its definition without it
        old = sa.Table("rt_tasks", sa.MetaData(), autoload_with=bind)
        for column in old.columns:
            column.unique = False
        old.constraints = {c for c in old.constraints
                           if not isinstance(c, sa.UniqueConstraint)}
        with op.batch_alter_table("rt_tasks", recreate="always", copy_from=old) as batch:
            for column in new_columns:
                batch.add_column(column)
    else:
        op.drop_constraint("rt_tasks_idempotency_key_key", "rt_tasks", type_="unique")
        for column in new_columns:
            op.add_column("rt_tasks", column)
    tasks = sa.table("rt_tasks", sa.column("owner", sa.String), sa.column("queued", sa.Boolean),
                     sa.column("status", sa.String), sa.column("created_at", sa.Float),
                     sa.column("updated_at", sa.Float),
                     sa.column("idempotency_scope", sa.String),
                     sa.column("enqueued_at", sa.Float))
    op.execute(tasks.update().where(tasks.c.owner.is_not(None))
               .values(idempotency_scope=tasks.c.owner))
    op.execute(tasks.update().where(tasks.c.queued.is_(True))
               .where(tasks.c.status.in_(["PENDING", "RUNNING"]))
               .values(enqueued_at=tasks.c.updated_at))
    op.create_index("rt_tasks_idempotency", "rt_tasks", ["idempotency_scope", "idempotency_key"],
                    unique=True)
    op.create_index("rt_tasks_status", "rt_tasks", ["status"], if_not_exists=True)
    op.create_index("rt_tasks_created", "rt_tasks", ["created_at"], if_not_exists=True)
    op.create_index("rt_tasks_owner", "rt_tasks", ["owner"], if_not_exists=True)
    op.create_index("rt_events_created", "rt_events", ["created_at"])
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 2, "applied_at": time.time()}])
