"""Data import keys: per (workspace, partner) secrets a customer gives a partner (Braze's "data import key").

A partner is *enabled* for a workspace while the workspace holds at least one live key for it. Several
keys may be live at once so a customer can rotate: create a new key, move the partner to it, invalidate
the old one. Invalidation takes effect at the next request, since every request checks the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from cohortflow.clock import as_utc, utcnow
from cohortflow.keys import IssuedKey, issue_key, masked
from cohortflow.platform import key_store
from cohortflow.platform.errors import AuthenticationFailed
from cohortflow.platform.partners import Partner, get_partner
from cohortflow.platform.store.schema import data_import_keys
from cohortflow.platform.workspaces import get_workspace
from cohortflow.wire.cohort_import import Messages, mask_secret

IMPORT_KEY_KIND = "cfdik"


@dataclass(frozen=True)
class ImportKeyInfo:
    id: int
    workspace_id: str
    partner: str
    masked_key: str
    created_at: datetime
    last_used_at: datetime | None
    invalidated_at: datetime | None

    @property
    def active(self) -> bool:
        return self.invalidated_at is None


@dataclass(frozen=True)
class ImportKeyGrant:
    """What an authenticated client secret grants: one workspace, for one partner."""

    key_id: int
    workspace_id: str
    partner_id: int


def create_import_key(conn: Connection, workspace_id: str, partner_name: str) -> tuple[ImportKeyInfo, IssuedKey]:
    get_workspace(conn, workspace_id)
    partner = get_partner(conn, partner_name)
    key = issue_key(IMPORT_KEY_KIND)
    now = utcnow()
    key_id = conn.execute(
        insert(data_import_keys)
        .values(
            workspace_id=workspace_id,
            partner_id=partner.id,
            key_hash=key.digest,
            display_prefix=key.display_prefix,
            created_at=now,
        )
        .returning(data_import_keys.c.id)
    ).scalar_one()
    info = ImportKeyInfo(int(key_id), workspace_id, partner.name, masked(key.display_prefix), now, None, None)
    return info, key


def list_import_keys(
    conn: Connection, workspace_id: str, partner_name: str, *, include_invalidated: bool = True
) -> list[ImportKeyInfo]:
    get_workspace(conn, workspace_id)
    partner = get_partner(conn, partner_name)
    query = (
        select(data_import_keys)
        .where(data_import_keys.c.workspace_id == workspace_id, data_import_keys.c.partner_id == partner.id)
        .order_by(data_import_keys.c.created_at, data_import_keys.c.id)
    )
    if not include_invalidated:
        query = query.where(data_import_keys.c.invalidated_at.is_(None))
    return [_info(row, partner) for row in conn.execute(query)]


def _info(row: object, partner: Partner) -> ImportKeyInfo:
    r = row
    return ImportKeyInfo(
        id=int(r.id),  # type: ignore[attr-defined]
        workspace_id=str(r.workspace_id),  # type: ignore[attr-defined]
        partner=partner.name,
        masked_key=masked(r.display_prefix),  # type: ignore[attr-defined]
        created_at=as_utc(r.created_at),  # type: ignore[attr-defined]
        last_used_at=as_utc(r.last_used_at) if r.last_used_at else None,  # type: ignore[attr-defined]
        invalidated_at=as_utc(r.invalidated_at) if r.invalidated_at else None,  # type: ignore[attr-defined]
    )


def invalidate_import_key(conn: Connection, workspace_id: str, partner_name: str, key_ref: str) -> ImportKeyInfo:
    """Invalidate one live key, named by its id or its displayed prefix (with or without the ellipsis)."""
    partner = get_partner(conn, partner_name)
    scope = [data_import_keys.c.workspace_id == workspace_id, data_import_keys.c.partner_id == partner.id]
    what = f"data import key for partner {partner.name!r} in {workspace_id!r}:"
    row = key_store.live_key_by_ref(conn, data_import_keys, scope, key_ref, what)
    key_store.end_key(conn, data_import_keys, int(row.id))
    return _info(conn.execute(select(data_import_keys).where(data_import_keys.c.id == row.id)).one(), partner)


def authenticate_client_secret(conn: Connection, partner: Partner, client_secret: object) -> ImportKeyGrant:
    """Resolve a ``client_secret`` (data import key) to the workspace it opens, for ``partner`` only."""
    row = key_store.find_live(
        conn, data_import_keys, client_secret, data_import_keys.c.workspace_id, data_import_keys.c.partner_id
    )
    if row is None:
        raise AuthenticationFailed(Messages.INVALID_CLIENT_SECRET)
    if int(row.partner_id) != partner.id:
        assert isinstance(client_secret, str)
        raise AuthenticationFailed(Messages.PARTNER_NOT_ENABLED.format(masked_secret=mask_secret(client_secret)))
    key_store.touch_last_used(conn, data_import_keys, row)
    return ImportKeyGrant(key_id=int(row.id), workspace_id=str(row.workspace_id), partner_id=partner.id)


def partner_enabled(conn: Connection, workspace_id: str, partner_id: int) -> bool:
    return (
        conn.execute(
            select(data_import_keys.c.id)
            .where(
                data_import_keys.c.workspace_id == workspace_id,
                data_import_keys.c.partner_id == partner_id,
                data_import_keys.c.invalidated_at.is_(None),
            )
            .limit(1)
        ).first()
        is not None
    )
