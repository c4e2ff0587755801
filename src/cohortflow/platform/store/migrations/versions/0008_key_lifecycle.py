"""key lifecycle: partner API keys in their own table (two live during a rotation), operator tokens, app keys'
last use

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("display_prefix", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_used_at", _TS),
        sa.Column("revoked_at", _TS),
    ]


def upgrade() -> None:
    op.create_table(
        "partner_api_keys",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("partner_id", _ID, nullable=False),
        *_key_columns(),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_partner_api_keys_partner_id_partners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_partner_api_keys_key_hash")),
    )
    op.create_index("ix_partner_api_keys_partner_id", "partner_api_keys", ["partner_id"])
    # Every partner keeps the key it has: its digest moves, so partners notice nothing.
    op.execute(
        "INSERT INTO partner_api_keys (partner_id, key_hash, display_prefix, created_at) "
        "SELECT id, api_key_hash, api_key_prefix, created_at FROM partners"
    )
    with op.batch_alter_table("partners") as batch_op:
        batch_op.drop_constraint("uq_partners_api_key_hash", type_="unique")
        batch_op.drop_column("api_key_hash")
        batch_op.drop_column("api_key_prefix")

    op.create_table(
        "operator_tokens",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *_key_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_tokens")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_operator_tokens_key_hash")),
    )
    with op.batch_alter_table("app_keys") as batch_op:
        batch_op.add_column(sa.Column("last_used_at", _TS))


def downgrade() -> None:
    with op.batch_alter_table("app_keys") as batch_op:
        batch_op.drop_column("last_used_at")
    op.drop_table("operator_tokens")
    with op.batch_alter_table("partners") as batch_op:
        batch_op.add_column(sa.Column("api_key_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("api_key_prefix", sa.String(32), nullable=True))
    # The newest live key of each partner becomes its one key again (a partner without one keeps a dead digest).
    op.execute(
        "UPDATE partners SET "
        "api_key_hash = (SELECT k.key_hash FROM partner_api_keys k WHERE k.partner_id = partners.id "
        "ORDER BY k.revoked_at IS NULL DESC, k.id DESC LIMIT 1), "
        "api_key_prefix = (SELECT k.display_prefix FROM partner_api_keys k WHERE k.partner_id = partners.id "
        "ORDER BY k.revoked_at IS NULL DESC, k.id DESC LIMIT 1)"
    )
    with op.batch_alter_table("partners") as batch_op:
        batch_op.alter_column("api_key_hash", nullable=False)
        batch_op.alter_column("api_key_prefix", nullable=False)
        batch_op.create_unique_constraint("uq_partners_api_key_hash", ["api_key_hash"])
    op.drop_index("ix_partner_api_keys_partner_id", table_name="partner_api_keys")
    op.drop_table("partner_api_keys")
