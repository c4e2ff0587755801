"""cohort memberships without the index on user_id alone (one user's memberships probe the primary key)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_cohort_members_user_id", table_name="cohort_members")


def downgrade() -> None:
    op.create_index("ix_cohort_members_user_id", "cohort_members", ["user_id"])
