"""cohort_members without foreign keys (their per-row checks dominated import cost)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cohort_members") as batch:
        batch.drop_constraint("fk_cohort_members_cohort_pk_cohorts", type_="foreignkey")
        batch.drop_constraint("fk_cohort_members_user_id_users", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("cohort_members") as batch:
        batch.create_foreign_key(
            "fk_cohort_members_cohort_pk_cohorts", "cohorts", ["cohort_pk"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key("fk_cohort_members_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE")
