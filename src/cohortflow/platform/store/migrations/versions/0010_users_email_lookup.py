"""users found by email address (lower-cased) without reading every user of the workspace

The dashboard's *Users* search and ``/users/export/ids`` with ``email_address`` compare ``lower(email)``; without an
index that is a scan of the workspace's users (about 180 ms at 1M users, seconds at 10M).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_workspace_email_lower", "users", ["workspace_id", sa.text("lower(email)")])


def downgrade() -> None:
    op.drop_index("ix_users_workspace_email_lower", table_name="users")
