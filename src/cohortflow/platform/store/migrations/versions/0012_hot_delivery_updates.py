"""delivery rows updated in place: claims walk the primary key, no index on status, half-empty pages

A claim and an outcome each rewrote every index of the row because ``status`` was indexed; without that index
(claims walk the primary key from the worker's cursor) and with room left on each page, PostgreSQL makes both
updates HOT. ``fillfactor`` applies to pages written from now on.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FILLFACTOR = 50


def upgrade() -> None:
    with op.batch_alter_table("campaign_deliveries") as batch:
        batch.drop_index("ix_campaign_deliveries_send_status_user")
    with op.batch_alter_table("canvas_deliveries") as batch:
        batch.drop_index("ix_canvas_deliveries_step_status_user")
    if op.get_context().dialect.name == "postgresql":
        for table in ("campaign_deliveries", "canvas_deliveries"):
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in ("campaign_deliveries", "canvas_deliveries"):
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    with op.batch_alter_table("canvas_deliveries") as batch:
        batch.create_index("ix_canvas_deliveries_step_status_user", ["canvas_id", "step_id", "status", "user_id"])
    with op.batch_alter_table("campaign_deliveries") as batch:
        batch.create_index("ix_campaign_deliveries_send_status_user", ["send_id", "status", "user_id"])
