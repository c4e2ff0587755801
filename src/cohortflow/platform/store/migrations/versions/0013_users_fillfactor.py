"""users pages keep room for updated versions, so updates that change no indexed column are HOT

A sync's next run rewrites the profiles whose attributes changed, usually custom attributes or columns no index
names. With every page full, PostgreSQL writes the new version on another page and a new entry in each of the
five users indexes; with a tenth of each page free it keeps the version on the page and writes no index entry
(a HOT update, about half of PostgreSQL's work per updated row in ``bench/bench_users_track.py``).
``fillfactor`` applies to pages written from now on: existing pages get the room as ``VACUUM`` frees it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FILLFACTOR = 90


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE users SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE users RESET (fillfactor)")
