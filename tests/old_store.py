"""A store as raytasks 0.1 wrote it: schema 1 made by ``create_all``, no Alembic table.

The DDL and rows are what 0.1's ``SqlTaskStore`` produced (its table definitions are
copied here, frozen), so the upgrade test opens a store the previous version wrote.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

_meta = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

tasks = sa.Table(
    "rt_tasks", _meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("max_retries", sa.Integer, nullable=False, default=0),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("depends_on", sa.Text, nullable=False, default="[]"),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("notify", sa.Text, nullable=False, default="[]"),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("result_uri", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("checkpoint", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("queued", sa.Boolean, nullable=False, default=False),
    sa.Column("lease_token", sa.BigInteger, nullable=False, default=0),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index("rt_tasks_status", "status"),
    sa.Index("rt_tasks_created", "created_at"),
    sa.Index("rt_tasks_owner", "owner"),
)
events = sa.Table(
    "rt_events", _meta,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table("rt_progress", _meta,
         sa.Column("task_id", sa.String(64), primary_key=True),
         sa.Column("payload", sa.Text, nullable=False),
         sa.Column("updated_at", sa.Float, nullable=False))
sa.Table("rt_task_types", _meta,
         sa.Column("name", sa.String(64), primary_key=True),
         sa.Column("blob", sa.LargeBinary, nullable=False),
         sa.Column("version", sa.Integer, nullable=False),
         sa.Column("updated_at", sa.Float, nullable=False))
sa.Table("rt_cursors", _meta,
         sa.Column("name", sa.String(200), primary_key=True),
         sa.Column("last_id", sa.BigInteger, nullable=False))
sa.Table("rt_deliveries", _meta,
         sa.Column("id", _ID, primary_key=True, autoincrement=True),
         sa.Column("channel", sa.String(200), nullable=False),
         sa.Column("target", sa.Text, nullable=False),
         sa.Column("event_id", sa.BigInteger, nullable=False),
         sa.Column("attempt", sa.Integer, nullable=False),
         sa.Column("outcome", sa.String(32), nullable=False),
         sa.Column("detail", sa.Text, nullable=True),
         sa.Column("at", sa.Float, nullable=False),
         sa.Index("rt_deliveries_channel", "channel", "outcome"))
schema = sa.Table("rt_schema", _meta,
                  sa.Column("version", sa.Integer, primary_key=True),
                  sa.Column("applied_at", sa.Float, nullable=False))


def _row(task_id: str, status: str, **over: object) -> dict[str, object]:
    now = time.time() - 3600
    row: dict[str, object] = {
        "id": task_id, "name": task_id, "task_type": "prediction", "status": status,
        "priority": 2, "queue": "default",
        "parameters": json.dumps({"stock_code": "000001.SZ", "days": 5}), "attempt": 0,
        "max_retries": 2, "timeout_s": 600.0, "depends_on": "[]", "idempotency_key": None,
        "tags": "", "owner": None, "notify": "[]", "cancel_requested": False, "queued": True,
        "lease_token": 0, "created_at": now, "updated_at": now, "result": None,
        "finished_at": None}
    row.update(over)
    return row


def write_v1_store(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        _meta.create_all(conn)
        conn.execute(schema.insert().values(version=1, applied_at=time.time()))
        conn.execute(tasks.insert(), [
            _row("v1-done", "COMPLETED", result="42", idempotency_key="old-key",
                 owner="alice", lease_token=1, finished_at=time.time()),
            _row("v1-queued", "PENDING", tags=",nightly,")])
        conn.execute(events.insert(), [{"task_id": "v1-done", "kind": "status",
                                        "payload": json.dumps({"status": "COMPLETED"}),
                                        "created_at": time.time()}])
    engine.dispose()
