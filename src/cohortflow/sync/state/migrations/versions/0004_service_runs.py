"""sync serve: queued runs in sync_runs (options, trigger, cancel, worker), sync_schedules, sync_workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("reconcile", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("retry_rejected", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("trigger", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("sync_runs") as batch:
        batch.alter_column("reconcile", server_default=None)
        batch.alter_column("retry_rejected", server_default=None)
    op.create_index("ix_sync_runs_status", "sync_runs", ["status"])
    op.create_table(
        "sync_schedules",
        sa.Column("sync_name", sa.String(length=200), nullable=False),
        sa.Column("schedule", sa.String(length=500), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_run_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sync_name", name=op.f("pk_sync_schedules")),
    )
    op.create_table(
        "sync_workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_workers")),
    )


def downgrade() -> None:
    op.drop_table("sync_workers")
    op.drop_table("sync_schedules")
    op.drop_index("ix_sync_runs_status", table_name="sync_runs")
    with op.batch_alter_table("sync_runs") as batch:
        for column in ("worker_id", "cancel_requested_at", "requested_at", "trigger", "retry_rejected", "reconcile"):
            batch.drop_column(column)
