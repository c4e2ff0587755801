"""Bearer tokens of the sync service's REST API: issued by ``cohortflow sync token create``, stored hashed.

A token is 256 random bits (:func:`cohortflow.keys.issue_key`), so its SHA-256 digest is enough: it is looked
up by digest and shown in full only once, at creation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from cohortflow.clock import as_utc
from cohortflow.keys import hash_key, issue_key, masked
from cohortflow.sync.errors import InvalidInput, Unauthenticated, UnknownObject
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_api_tokens

TOKEN_KIND = "cfsync"
# Writing last_used_at on every request would make each API call a write; a minute's precision is plenty.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    masked: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: object) -> TokenInfo:
    r: object = row
    return TokenInfo(
        id=r.id,  # type: ignore[attr-defined]
        name=r.name,  # type: ignore[attr-defined]
        masked=masked(r.display_prefix),  # type: ignore[attr-defined]
        created_at=as_utc(r.created_at),  # type: ignore[attr-defined]
        last_used_at=as_utc(r.last_used_at) if r.last_used_at else None,  # type: ignore[attr-defined]
        revoked_at=as_utc(r.revoked_at) if r.revoked_at else None,  # type: ignore[attr-defined]
    )


def create_token(store: StateStore, name: str) -> tuple[TokenInfo, str]:
    """A new token named ``name``; returns its record and the plain token (shown once)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a token needs a name of 1 to 200 characters (what it is for, e.g. 'airflow')")
    issued = issue_key(TOKEN_KIND)
    token_id = uuid.uuid4().hex
    with store.transaction() as conn:
        conn.execute(
            sync_api_tokens.insert().values(
                id=token_id,
                name=name,
                token_hash=issued.digest,
                display_prefix=issued.display_prefix,
                created_at=store.clock(),
            )
        )
        row = conn.execute(select(sync_api_tokens).where(sync_api_tokens.c.id == token_id)).one()
    return _info(row), issued.plain


def list_tokens(store: StateStore) -> list[TokenInfo]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(sync_api_tokens).order_by(sync_api_tokens.c.created_at)).all()
    return [_info(r) for r in rows]


def revoke_token(store: StateStore, key: str) -> TokenInfo:
    """Revoke by id or by the masked prefix ``list`` shows (with or without the ellipsis)."""
    prefix = key.rstrip("…").strip()
    with store.transaction() as conn:
        rows = conn.execute(
            select(sync_api_tokens).where(
                or_(sync_api_tokens.c.id == prefix, sync_api_tokens.c.display_prefix == prefix)
            )
        ).all()
        if len(rows) != 1:
            raise UnknownObject(f"no single API token {key!r} (cohortflow sync token list shows them)")
        row = rows[0]
        if row.revoked_at is None:
            conn.execute(update(sync_api_tokens).where(sync_api_tokens.c.id == row.id).values(revoked_at=store.clock()))
        row = conn.execute(select(sync_api_tokens).where(sync_api_tokens.c.id == row.id)).one()
    return _info(row)


def authenticate(store: StateStore, plain: str | None) -> TokenInfo:
    """The active token ``plain`` names, or :class:`Unauthenticated`."""
    if not plain:
        raise Unauthenticated(
            "missing bearer token: send 'Authorization: Bearer <token>' (cohortflow sync token create)"
        )
    digest = hash_key(plain)
    with store.engine.connect() as conn:
        row = conn.execute(select(sync_api_tokens).where(sync_api_tokens.c.token_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API token")
    now = store.clock()
    if row.last_used_at is None or now - as_utc(row.last_used_at) > LAST_USED_PRECISION:
        with store.transaction() as conn:
            conn.execute(update(sync_api_tokens).where(sync_api_tokens.c.id == row.id).values(last_used_at=now))
    return _info(row)
