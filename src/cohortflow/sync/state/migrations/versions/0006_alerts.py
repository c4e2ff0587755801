"""alerts: sync_incidents, sync_alert_outbox, sync_runs.alert_checked

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Runs recorded before alerts existed count as already judged: upgrading never alerts about history.
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("alert_checked", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("sync_runs") as batch:
        batch.alter_column("alert_checked", server_default=None)
    op.create_table(
        "sync_incidents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sync_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_run_id", sa.String(length=36), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_run_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_incidents")),
    )
    op.create_index("ix_sync_incidents_sync_kind", "sync_incidents", ["sync_name", "kind"])
    op.create_table(
        "sync_alert_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_alert_outbox")),
    )
    op.create_index("ix_sync_alert_outbox_sent_at", "sync_alert_outbox", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_alert_outbox_sent_at", table_name="sync_alert_outbox")
    op.drop_table("sync_alert_outbox")
    op.drop_index("ix_sync_incidents_sync_kind", table_name="sync_incidents")
    op.drop_table("sync_incidents")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("alert_checked")
