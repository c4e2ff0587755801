"""The technology partner registry (hightouch, census, ...) and partner API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import utcnow
from cohortflow.keys import IssuedKey, digests_match, hash_key, issue_key
from cohortflow.platform.errors import AlreadyExists, AuthenticationFailed, InvalidRequest, NotFound
from cohortflow.platform.store.schema import partners
from cohortflow.wire.cohort_import import Messages

PARTNER_KEY_KIND = "cfpartner"
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
    key = issue_key(PARTNER_KEY_KIND)
    label = (display_name or name.strip()).strip()
    label = label[:1].upper() + label[1:] if label.islower() else label
    try:
        with conn.begin_nested():
            pk = conn.execute(
                insert(partners)
                .values(
                    name=normalized,
                    display_name=label,
                    api_key_hash=key.digest,
                    api_key_prefix=key.display_prefix,
                    created_at=utcnow(),
                )
                .returning(partners.c.id)
            ).scalar_one()
    except IntegrityError as exc:
        raise AlreadyExists(f"partner {normalized!r} already exists") from exc
    return NewPartner(partner=Partner(id=int(pk), name=normalized, display_name=label), api_key=key)


def get_partner(conn: Connection, name: str) -> Partner:
    row = conn.execute(select(partners).where(partners.c.name == name.strip().lower())).first()
    if row is None:
        raise NotFound(f"partner {name!r} does not exist")
    return _row_to_partner(row)


def list_partners(conn: Connection) -> list[Partner]:
    return [_row_to_partner(r) for r in conn.execute(select(partners).order_by(partners.c.name))]


def authenticate_partner(conn: Connection, path_partner: str, partner_api_key: object) -> Partner:
    """Check ``partner_api_key`` and that it belongs to the partner named in the path.

    An unknown or malformed key is ``Invalid Partner API key``; a real key of another partner is
    ``Unauthorized access`` (it authenticates, but not for this path).
    """
    if not isinstance(partner_api_key, str) or not partner_api_key:
        raise AuthenticationFailed(Messages.INVALID_PARTNER_API_KEY)
    digest = hash_key(partner_api_key)
    row = conn.execute(select(partners).where(partners.c.api_key_hash == digest)).first()
    if row is None or not digests_match(row.api_key_hash, digest):
        raise AuthenticationFailed(Messages.INVALID_PARTNER_API_KEY)
    if row.name != path_partner:
        raise AuthenticationFailed(Messages.UNAUTHORIZED)
    return _row_to_partner(row)
