"""messaging

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column(
            "definition", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_campaigns_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("workspace_id", "name", name="uq_campaigns_workspace_name"),
    )
    op.create_table(
        "campaign_segments",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_segments_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name=op.f("fk_campaign_segments_segment_id_segments")),
        sa.PrimaryKeyConstraint("campaign_id", "segment_id", name=op.f("pk_campaign_segments")),
    )
    with op.batch_alter_table("campaign_segments", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_segments_segment_id", ["segment_id"], unique=False)

    op.create_table(
        "campaign_sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("audience_size", sa.Integer(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_sends_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_sends")),
    )
    with op.batch_alter_table("campaign_sends", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_sends_campaign", ["campaign_id"], unique=False)
        batch_op.create_index("ix_campaign_sends_status_scheduled", ["status", "scheduled_at"], unique=False)

    op.create_table(
        "canvases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "definition", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("entry_segment_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_entry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_entry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_segment_id"], ["segments.id"], name=op.f("fk_canvases_entry_segment_id_segments")
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_canvases_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvases")),
        sa.UniqueConstraint("workspace_id", "name", name="uq_canvases_workspace_name"),
    )
    with op.batch_alter_table("canvases", schema=None) as batch_op:
        batch_op.create_index("ix_canvases_status", ["status"], unique=False)

    op.create_table(
        "campaign_deliveries",
        sa.Column("send_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"],
            ["campaign_sends.id"],
            name=op.f("fk_campaign_deliveries_send_id_campaign_sends"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_campaign_deliveries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("send_id", "user_id", name=op.f("pk_campaign_deliveries")),
    )
    with op.batch_alter_table("campaign_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_deliveries_send_status", ["send_id", "status"], unique=False)

    op.create_table(
        "canvas_deliveries",
        sa.Column("canvas_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["canvas_id"], ["canvases.id"], name=op.f("fk_canvas_deliveries_canvas_id_canvases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_canvas_deliveries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("canvas_id", "step_id", "user_id", name=op.f("pk_canvas_deliveries")),
    )
    op.create_table(
        "canvas_positions",
        sa.Column("canvas_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["canvas_id"], ["canvases.id"], name=op.f("fk_canvas_positions_canvas_id_canvases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_canvas_positions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("canvas_id", "user_id", name=op.f("pk_canvas_positions")),
    )
    with op.batch_alter_table("canvas_positions", schema=None) as batch_op:
        batch_op.create_index("ix_canvas_positions_due", ["canvas_id", "state", "due_at"], unique=False)

    op.create_table(
        "canvas_step_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("canvas_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["canvas_id"], ["canvases.id"], name=op.f("fk_canvas_step_events_canvas_id_canvases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_canvas_step_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_step_events")),
    )
    with op.batch_alter_table("canvas_step_events", schema=None) as batch_op:
        batch_op.create_index("ix_canvas_step_events_canvas_step", ["canvas_id", "step_id", "event"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("canvas_step_events", schema=None) as batch_op:
        batch_op.drop_index("ix_canvas_step_events_canvas_step")

    op.drop_table("canvas_step_events")
    with op.batch_alter_table("canvas_positions", schema=None) as batch_op:
        batch_op.drop_index("ix_canvas_positions_due")

    op.drop_table("canvas_positions")
    op.drop_table("canvas_deliveries")
    with op.batch_alter_table("campaign_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_deliveries_send_status")

    op.drop_table("campaign_deliveries")
    with op.batch_alter_table("canvases", schema=None) as batch_op:
        batch_op.drop_index("ix_canvases_status")

    op.drop_table("canvases")
    with op.batch_alter_table("campaign_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_sends_status_scheduled")
        batch_op.drop_index("ix_campaign_sends_campaign")

    op.drop_table("campaign_sends")
    with op.batch_alter_table("campaign_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_segments_segment_id")

    op.drop_table("campaign_segments")
    op.drop_table("campaigns")
