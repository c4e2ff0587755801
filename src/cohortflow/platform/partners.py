"""The technology partner registry (hightouch, census, ...) and partner API keys.

A partner authenticates with any of its live keys. Rotation is two steps so that no request fails during the
change: :func:`rotate_partner_key` issues a new key while the old one keeps working (at most two live keys),
the partner moves to it, then :func:`revoke_partner_key` ends the old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import utcnow
from cohortflow.keys import IssuedKey
from cohortflow.platform import key_store
from cohortflow.platform.errors import AlreadyExists, AuthenticationFailed, InvalidRequest, NotFound
from cohortflow.platform.key_store import KeyInfo
from cohortflow.platform.store.schema import partner_api_keys, partners
from cohortflow.wire.cohort_import import Messages

PARTNER_KEY_KIND = "cfpartner"
MAX_LIVE_PARTNER_KEYS = 2
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class Partner:
    id: int
    name: str
    display_name: str


@dataclass(frozen=True)
class NewPartner:
    partner: Partner
    api_key: IssuedKey


def _row_to_partner(row: object) -> Partner:
    return Partner(id=int(row.id), name=str(row.name), display_name=str(row.display_name))  # type: ignore[attr-defined]


def create_partner(conn: Connection, name: str, display_name: str | None = None) -> NewPartner:
    """Register a partner; ``name`` is its URL path segment (``/partners/{name}/...``)."""
    normalized = name.strip().lower()
    if not _NAME.match(normalized):
        raise InvalidRequest(
            "partner name must be 1-100 characters of lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    label = (display_name or name.strip()).strip()
    label = label[:1].upper() + label[1:] if label.islower() else label
    try:
        with conn.begin_nested():
            pk = conn.execute(
                insert(partners)
                .values(name=normalized, display_name=label, created_at=utcnow())
                .returning(partners.c.id)
            ).scalar_one()
    except IntegrityError as exc:
        raise AlreadyExists(f"partner {normalized!r} already exists") from exc
    _info, key = key_store.insert_key(conn, partner_api_keys, PARTNER_KEY_KIND, partner_id=pk)
    return NewPartner(partner=Partner(id=int(pk), name=normalized, display_name=label), api_key=key)


def get_partner(conn: Connection, name: str, *, for_update: bool = False) -> Partner:
    """The partner named ``name``; ``for_update`` locks its row (PostgreSQL) so key changes run one at a time."""
    query = select(partners).where(partners.c.name == name.strip().lower())
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"partner {name!r} does not exist")
    return _row_to_partner(row)


def list_partners(conn: Connection) -> list[Partner]:
    return [_row_to_partner(r) for r in conn.execute(select(partners).order_by(partners.c.name))]


def authenticate_partner(conn: Connection, path_partner: str, partner_api_key: object) -> Partner:
    """Check ``partner_api_key`` and that it belongs to the partner named in the path.

    An unknown, revoked or malformed key is ``Invalid Partner API key``; a live key of another partner is
    ``Unauthorized access`` (it authenticates, but not for this path). Records the key's use (at most once a
    minute), so an operator can see when a rotated-out key stopped being used.
    """
    row = key_store.find_live(
        conn,
        partner_api_keys,
        partner_api_key,
        partners.c.id.label("partner_pk"),
        partners.c.name,
        partners.c.display_name,
        joined=partner_api_keys.join(partners, partners.c.id == partner_api_keys.c.partner_id),
    )
    if row is None:
        raise AuthenticationFailed(Messages.INVALID_PARTNER_API_KEY)
    if row.name != path_partner:
        raise AuthenticationFailed(Messages.UNAUTHORIZED)
    key_store.touch_last_used(conn, partner_api_keys, row)
    return Partner(id=int(row.partner_pk), name=str(row.name), display_name=str(row.display_name))


def list_partner_keys(conn: Connection, partner_name: str) -> list[KeyInfo]:
    partner = get_partner(conn, partner_name)
    return key_store.list_keys(conn, partner_api_keys, [partner_api_keys.c.partner_id == partner.id])


def rotate_partner_key(conn: Connection, partner_name: str) -> tuple[KeyInfo, IssuedKey]:
    """Issue a new key; the current one keeps working until :func:`revoke_partner_key` ends it."""
    partner = get_partner(conn, partner_name, for_update=True)
    scope = [partner_api_keys.c.partner_id == partner.id]
    # A third live key would mean an unfinished rotation: finish it before starting another.
    if key_store.live_count(conn, partner_api_keys, scope) >= MAX_LIVE_PARTNER_KEYS:
        raise InvalidRequest(
            f"partner {partner.name!r} already has {MAX_LIVE_PARTNER_KEYS} live keys (a rotation in progress): "
            "revoke the old one before rotating again"
        )
    return key_store.insert_key(conn, partner_api_keys, PARTNER_KEY_KIND, partner_id=partner.id)


def revoke_partner_key(conn: Connection, partner_name: str, key_ref: str) -> KeyInfo:
    """Revoke one of the partner's live keys (by id or masked prefix); its next request gets 401."""
    partner = get_partner(conn, partner_name, for_update=True)
    scope = [partner_api_keys.c.partner_id == partner.id]
    row = key_store.live_key_by_ref(conn, partner_api_keys, scope, key_ref, f"partner API key of {partner.name!r}")
    # Without a live key every customer's sync with this partner stops at once; rotate first.
    if key_store.live_count(conn, partner_api_keys, scope) <= 1:
        raise InvalidRequest(
            f"{key_ref!r} is the last live key of partner {partner.name!r}: rotate the key first, then revoke "
            "the old one"
        )
    return key_store.end_key(conn, partner_api_keys, int(row.id))
