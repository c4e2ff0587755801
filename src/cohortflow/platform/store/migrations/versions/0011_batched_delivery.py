"""batched delivery: per-row claims shared by several workers, one pending "send now" per campaign, Canvas
re-entry, frequency caps

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ONE_IMMEDIATE = "immediate AND status IN ('scheduled', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("campaign_deliveries") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_until", TS, nullable=True))
        batch.drop_index("ix_campaign_deliveries_send_status")
        batch.create_index("ix_campaign_deliveries_send_status_user", ["send_id", "status", "user_id"])
    with op.batch_alter_table("campaign_sends") as batch:
        batch.add_column(sa.Column("immediate", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index(
        "uq_campaign_sends_one_immediate",
        "campaign_sends",
        ["campaign_id"],
        unique=True,
        sqlite_where=sa.text(ONE_IMMEDIATE),
        postgresql_where=sa.text(ONE_IMMEDIATE),
    )
    with op.batch_alter_table("canvas_deliveries") as batch:
        batch.add_column(sa.Column("entry", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_until", TS, nullable=True))
        batch.drop_constraint("pk_canvas_deliveries", type_="primary")
        batch.create_primary_key("pk_canvas_deliveries", ["canvas_id", "step_id", "user_id", "entry"])
        batch.create_index("ix_canvas_deliveries_step_status_user", ["canvas_id", "step_id", "status", "user_id"])
    with op.batch_alter_table("canvas_positions") as batch:
        batch.add_column(sa.Column("entries", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("exited_at", TS, nullable=True))
    op.create_table(
        "frequency_caps",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("max_messages", sa.Integer(), nullable=False),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_frequency_caps_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "channel", name=op.f("pk_frequency_caps")),
    )
    op.create_table(
        "message_receipts",
        sa.Column("id", BIG, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_message_receipts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_receipts")),
    )
    op.create_index("ix_message_receipts_user_channel_at", "message_receipts", ["user_id", "channel", "at"])
    op.create_index("ix_message_receipts_source", "message_receipts", ["source"])


def downgrade() -> None:
    op.drop_table("message_receipts")
    op.drop_table("frequency_caps")
    with op.batch_alter_table("canvas_positions") as batch:
        batch.drop_column("exited_at")
        batch.drop_column("entries")
    op.execute("DELETE FROM canvas_deliveries WHERE entry > 1")
    with op.batch_alter_table("canvas_deliveries") as batch:
        batch.drop_index("ix_canvas_deliveries_step_status_user")
        batch.drop_constraint("pk_canvas_deliveries", type_="primary")
        batch.create_primary_key("pk_canvas_deliveries", ["canvas_id", "step_id", "user_id"])
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("entry")
    op.drop_index("uq_campaign_sends_one_immediate", table_name="campaign_sends")
    with op.batch_alter_table("campaign_sends") as batch:
        batch.drop_column("immediate")
    with op.batch_alter_table("campaign_deliveries") as batch:
        batch.drop_index("ix_campaign_deliveries_send_status_user")
        batch.create_index("ix_campaign_deliveries_send_status", ["send_id", "status"])
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
