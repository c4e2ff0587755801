"""sync_batches (uncertain batches); sync_failures keeps only rejections, with a run count

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_CHUNK = 1000


def upgrade() -> None:
    op.create_table(
        "sync_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sync_name", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("op", sa.String(length=6), nullable=False),
        sa.Column("ids", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_batches")),
    )
    op.create_index("ix_sync_batches_sync_name", "sync_batches", ["sync_name"])
    with op.batch_alter_table("sync_failures") as batch:
        batch.add_column(sa.Column("runs", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sync_failures") as batch:
        batch.alter_column("runs", server_default=None)
    # Earlier versions mixed transient failures (possibly applied) with rejections in sync_failures and did
    # not say which is which: every such identity becomes uncertain, which is always safe (the next plan
    # sends it its desired state; a real rejection comes back as one).
    conn = op.get_bind()
    failures = sa.table(
        "sync_failures",
        sa.column("sync_name"),
        sa.column("kind"),
        sa.column("label"),
        sa.column("value"),
        sa.column("run_id"),
    )
    batches = sa.table(
        "sync_batches",
        sa.column("id"),
        sa.column("sync_name"),
        sa.column("run_id"),
        sa.column("op"),
        sa.column("ids"),
        sa.column("size"),
        sa.column("status"),
        sa.column("reason"),
        sa.column("created_at"),
    )
    rows = conn.execute(
        sa.select(
            failures.c.sync_name, failures.c.kind, failures.c.label, failures.c.value, failures.c.run_id
        ).order_by(failures.c.sync_name)
    ).all()
    now = datetime.now(UTC)
    by_sync: dict[str, list[tuple[list[str], str]]] = {}
    for sync_name, kind, label, value, run_id in rows:
        by_sync.setdefault(sync_name, []).append(([kind, label, value], run_id))
    for sync_name, items in by_sync.items():
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            conn.execute(
                batches.insert().values(
                    id=uuid.uuid4().hex,
                    sync_name=sync_name,
                    run_id=chunk[0][1],
                    op="carried",
                    ids=orjson.dumps([i for i, _ in chunk]).decode(),
                    size=len(chunk),
                    status="failed",
                    reason="recorded as failed before uncertain batches existed",
                    created_at=now,
                )
            )
    conn.execute(sa.delete(failures))


def downgrade() -> None:
    with op.batch_alter_table("sync_failures") as batch:
        batch.drop_column("first_failed_at")
        batch.drop_column("runs")
    op.drop_index("ix_sync_batches_sync_name", table_name="sync_batches")
    op.drop_table("sync_batches")
