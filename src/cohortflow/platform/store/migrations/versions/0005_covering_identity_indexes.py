"""identity lookups as unique indexes that carry the user id (index-only matching on PostgreSQL)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (table, name, key columns, column the matching reads)
_INDEXES = (
    ("users", "uq_users_workspace_external_id", ["workspace_id", "external_id"], "id"),
    ("user_aliases", "uq_user_aliases_label_name", ["workspace_id", "alias_label", "alias_name"], "user_id"),
    ("user_devices", "uq_user_devices_workspace_device", ["workspace_id", "device_id"], "user_id"),
)


def upgrade() -> None:
    # One transaction (DDL is transactional on both databases): no other session sees the table unguarded.
    for table, name, columns, carried in _INDEXES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="unique")
        op.create_index(name, table, columns, unique=True, postgresql_include=[carried])


def downgrade() -> None:
    for table, name, columns, _carried in _INDEXES:
        op.drop_index(name, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.create_unique_constraint(name, columns)
