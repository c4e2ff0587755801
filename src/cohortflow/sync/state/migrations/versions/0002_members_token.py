"""sync_states.members_token: identifies the membership a columnar snapshot copies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_states") as batch:
        batch.add_column(sa.Column("members_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_states") as batch:
        batch.drop_column("members_token")
