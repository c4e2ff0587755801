"""web app: sync_run_requests (request debugger), sync_web_users, sync_web_sessions, sync_rate_counters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_run_requests",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_run_requests")),
    )
    op.create_index("ix_sync_run_requests_run_seq", "sync_run_requests", ["run_id", "seq"])
    op.create_table(
        "sync_web_users",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_web_users")),
        sa.UniqueConstraint("email", name=op.f("uq_sync_web_users_email")),
    )
    op.create_table(
        "sync_web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", _BIGID, nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["sync_web_users.id"],
            name=op.f("fk_sync_web_sessions_user_id_sync_web_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_sync_web_sessions")),
    )
    op.create_index("ix_sync_web_sessions_user_id", "sync_web_sessions", ["user_id"])
    op.create_table(
        "sync_rate_counters",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sync_rate_counters")),
    )


def downgrade() -> None:
    op.drop_table("sync_rate_counters")
    op.drop_index("ix_sync_web_sessions_user_id", table_name="sync_web_sessions")
    op.drop_table("sync_web_sessions")
    op.drop_table("sync_web_users")
    op.drop_index("ix_sync_run_requests_run_seq", table_name="sync_run_requests")
    op.drop_table("sync_run_requests")
