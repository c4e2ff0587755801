"""segments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# Segment filters on custom attribute dates read ISO-8601 strings out of JSON. A plain cast would abort the
# whole segment query on one malformed value (PostgreSQL 15 has no pg_input_is_valid), so the cast is wrapped
# in a function that returns NULL instead: such a value simply matches no date condition. A value without
# an offset is UTC, as on SQLite (julianday), whatever the session's TimeZone.
_TRY_TIMESTAMPTZ = r"""
CREATE OR REPLACE FUNCTION cohortflow_try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value ~* '\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(z|[+-]\d{2}(:?\d{2})?)$' THEN
        RETURN value::timestamptz;
    END IF;
    RETURN value::timestamp AT TIME ZONE 'UTC';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "filter", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_segments_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index("ix_segments_workspace_created", ["workspace_id", "created_at"], unique=False)
    # Country is the attribute segments filter on most (the "cohort X AND country = FR"). With id as
    # the last key, one index range yields a workspace's users of a country as sorted ids: PostgreSQL counts
    # "cohort AND country" as a merge of two index-only scans (this one and cohort_members' primary key)
    # without reading the users table at all. See BENCHMARKS.md, "Segments".
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("ix_users_workspace_country", ["workspace_id", "country", "id"], unique=False)
    if op.get_context().dialect.name == "postgresql":
        op.execute(_TRY_TIMESTAMPTZ)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cohortflow_try_timestamptz(text)")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_workspace_country")
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index("ix_segments_workspace_created")
    op.drop_table("segments")
