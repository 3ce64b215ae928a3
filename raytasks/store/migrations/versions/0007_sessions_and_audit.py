"""Schema 7: dashboard sessions kept in the store (shared by every server, ended with
their token) and the audit trail.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "rt_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("rt_sessions_owner", "rt_sessions", ["owner", "created_at"])
    op.create_index("rt_sessions_token", "rt_sessions", ["token_sha256"])
    op.create_index("rt_sessions_expires", "rt_sessions", ["expires_at"])
    op.create_table(
        "rt_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("token_id", sa.String(16), nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("target_owner", sa.String(200), nullable=True),
        sa.Column("detail", sa.String(400), nullable=True),
    )
    op.create_index("rt_audit_at", "rt_audit", ["at"])
    op.create_index("rt_audit_owner", "rt_audit", ["owner", "id"])
    op.create_index("rt_audit_target_owner", "rt_audit", ["target_owner", "id"])
    schema = sa.table("rt_schema", sa.column("version", sa.Integer),
                      sa.column("applied_at", sa.Float))
    op.bulk_insert(schema, [{"version": 7, "applied_at": time.time()}])
