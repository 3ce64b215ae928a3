"""The store's tables at the current schema revision (Alembic migrations lead here)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tasks = sa.Table(
    "rt_tasks",
    metadata,
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
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    # keys are unique per owner: "" for tasks without one (trusted clients)
    sa.Column("idempotency_scope", sa.String(200), nullable=False, server_default=""),
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
    sa.Column("enqueued_at", sa.Float, nullable=True),
    sa.Column("lease_request", sa.String(64), nullable=True),
    sa.Column("lease_executor", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    # the most CPU seconds an attempt may use (None: no limit); what the last attempt that
    # reported used (CPU seconds, peak resident memory in bytes)
    sa.Column("max_cpu_s", sa.Float, nullable=True),
    sa.Column("cpu_s", sa.Float, nullable=True),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True),
    # when it must have finished; the work its parameters declare; attempts preempted
    sa.Column("deadline", sa.Float, nullable=True),
    sa.Column("work_units", sa.BigInteger, nullable=True),
    sa.Column("preemptions", sa.Integer, nullable=False, server_default="0", default=0),
    # what its result came from (JSON: raytasks.lineage); the key of its cached result;
    # the task whose result it took from the cache; the task it runs again
    sa.Column("lineage", sa.Text, nullable=True),
    sa.Column("cache_key", sa.String(64), nullable=True),
    sa.Column("cached_from", sa.String(64), nullable=True),
    sa.Column("rerun_of", sa.String(64), nullable=True),
    sa.Index("rt_tasks_status", "status"),
    sa.Index("rt_tasks_created_id", "created_at", "id"),
    sa.Index("rt_tasks_owner_created", "owner", "created_at", "id"),
    sa.Index("rt_tasks_status_created", "status", "created_at", "id"),
    sa.Index("rt_tasks_owner_status_created", "owner", "status", "created_at", "id"),
    sa.Index("rt_tasks_finished", "finished_at"),
    sa.Index("rt_tasks_idempotency", "idempotency_scope", "idempotency_key", unique=True),
    sa.Index("rt_tasks_cache_key", "cache_key", "finished_at"),
)

events = sa.Table(
    "rt_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("rt_events_created", "created_at"),
)

progress = sa.Table(
    "rt_progress",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

task_types = sa.Table(
    "rt_task_types",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

cursors = sa.Table(
    "rt_cursors",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)

deliveries = sa.Table(
    "rt_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("rt_deliveries_channel", "channel", "outcome"),
)

schema = sa.Table(
    "rt_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

schedules = sa.Table(
    "rt_schedules",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # template, rule, timezone, end, catch-up
    sa.Column("ready_by", sa.String(5), nullable=True),  # local HH:MM each run is due by
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("last_run_at", sa.Float, nullable=True),
    sa.Column("next_run_at", sa.Float, nullable=True),
    sa.Column("last_task_id", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("rt_schedules_owner", "owner"),
)

logs = sa.Table(
    "rt_logs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("stream", sa.String(16), nullable=False),  # stdout, stderr, a log level, raytasks
    sa.Column("line", sa.Text, nullable=False),
    sa.Index("rt_logs_task", "task_id", "attempt", "id"),
    sa.Index("rt_logs_at", "at"),
)

#: What each attempt that reported used, written in its report's fenced commit.
attempts = sa.Table(
    "rt_attempts",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("lease_token", sa.BigInteger, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=True),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True),
    sa.Column("reported_at", sa.Float, nullable=False),
    # why it ended (its error's reason: timeout, preempted, ...), how long its handler
    # ran, and the run time predicted for it when it was queued
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("run_s", sa.Float, nullable=True),
    sa.Column("estimate_s", sa.Float, nullable=True),
)

#: CPU seconds each owner's attempts used, and how many were preempted, per UTC day (""
#: for tasks without an owner): what ``QuotaSettings.max_cpu_s_per_day`` is held against
#: at the lease, and ``max_preempted_per_day`` when the scheduler picks a victim.
usage = sa.Table(
    "rt_usage",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("preempted", sa.Integer, nullable=False, server_default="0", default=0),
)

#: Model versions the registries hold, each written by the training attempt that held the
#: lease when it saved the model (the digest a load checks the file against: whoever can
#: write the registry's folder cannot forge it). ``key`` is ``<owner dir>/<registry>/<id>``.
models = sa.Table(
    "rt_models",
    metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("registry", sa.String(128), nullable=False),
    sa.Column("model_id", sa.String(128), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Lineage environments (raytasks' version, the code's hash, the libraries': what every task
#: of a type shares on one install), by digest: a task's ``lineage`` names its own
#: (``raytasks.lineage.environment``). Written once each, never changed.
environments = sa.Table(
    "rt_environments",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Tasks a client committed itself (the direct intake) that the manager has not adopted
#: yet: written in the task's own transaction, deleted once the manager holds the task.
intake = sa.Table(
    "rt_intake",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Dashboard sessions, shared by every server on the store. ``id`` is the SHA-256 of the
#: cookie (the cookie itself is never stored); ``token_sha256`` binds the session to the
#: token that opened it, which must still be accepted on every request.
sessions = sa.Table(
    "rt_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("rt_sessions_owner", "owner", "created_at"),
    sa.Index("rt_sessions_token", "token_sha256"),
    sa.Index("rt_sessions_expires", "expires_at"),
)

#: The audit trail, append-only: who (owner and token id, from which address, in which
#: request) did what to whose object. Rows leave only by age (``api.audit_retention_s``).
audit = sa.Table(
    "rt_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(16), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("target_owner", sa.String(200), nullable=True),
    sa.Column("detail", sa.String(400), nullable=True),
    sa.Index("rt_audit_at", "at"),
    sa.Index("rt_audit_owner", "owner", "id"),
    sa.Index("rt_audit_target_owner", "target_owner", "id"),
)
