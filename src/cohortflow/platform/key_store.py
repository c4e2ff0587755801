"""What every stored key table shares: lookup by digest, naming a key by id or masked prefix, and last-used times.

Each key table (``rest_api_keys``, ``app_keys``, ``partner_api_keys``, ``data_import_keys``,
``operator_tokens``) has ``id``, ``key_hash`` (unique), ``display_prefix``, ``created_at``, ``last_used_at`` and a
"dead since" column (``revoked_at``; ``invalidated_at`` for data import keys, Braze's word). Issuing and
hashing are in :mod:`cohortflow.keys`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Select, Table, bindparam, insert, or_, select, update

from cohortflow.clock import as_utc, utcnow
from cohortflow.keys import IssuedKey, digests_match, hash_key, issue_key, masked
from cohortflow.platform.errors import NotFound

# Writing last_used_at on every request would make hot paths (imports, /users/track) contend on the key row
# and turn every read-only request into a write; a minute is precise enough to tell a used key from a dead one.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as listings show it: never the key, only its masked prefix."""

    id: int
    masked_key: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def state(self) -> str:
        return "active" if self.active else "revoked"


def _ended(table: Table) -> Any:
    return table.c.invalidated_at if "invalidated_at" in table.c else table.c.revoked_at


def key_info(row: Any) -> KeyInfo:
    ended = getattr(row, "revoked_at", None) or getattr(row, "invalidated_at", None)
    return KeyInfo(
        id=int(row.id),
        masked_key=masked(row.display_prefix),
        name=str(getattr(row, "name", "") or ""),
        created_at=as_utc(row.created_at),
        last_used_at=as_utc(row.last_used_at) if row.last_used_at is not None else None,
        revoked_at=as_utc(ended) if ended is not None else None,
    )


def insert_key(conn: Connection, table: Table, kind: str, **values: Any) -> tuple[KeyInfo, IssuedKey]:
    """Issue a key of ``kind`` and store its digest in ``table`` with ``values`` (its owner, its name)."""
    key = issue_key(kind)
    key_id = conn.execute(
        insert(table)
        .values(key_hash=key.digest, display_prefix=key.display_prefix, created_at=utcnow(), **values)
        .returning(table.c.id)
    ).scalar_one()
    row = conn.execute(select(table).where(table.c.id == key_id)).one()
    return key_info(row), key


def find_live(conn: Connection, table: Table, plain: object, *columns: Any, joined: Any = None) -> Row[Any] | None:
    """The live row whose digest is ``plain``'s (with ``id``, ``last_used_at`` and ``columns``), or None.

    Looked up by the unique digest index, then compared in constant time. ``joined`` is ``table`` joined to the
    owner table that ``columns`` come from, so authentication stays one query.
    """
    if not isinstance(plain, str) or not plain:
        return None
    digest = hash_key(plain)
    query = _live_key_query(table, columns) if joined is None else _live_key_select(table, columns, joined)
    row = conn.execute(query, {"digest": digest}).first()
    if row is None or not digests_match(row.key_hash, digest):
        return None
    return row


def _live_key_select(table: Table, columns: tuple[Any, ...], joined: Any) -> Select[Any]:
    return (
        select(table.c.id, table.c.key_hash, table.c.last_used_at, *columns)
        .select_from(table if joined is None else joined)
        .where(table.c.key_hash == bindparam("digest"), _ended(table).is_(None))
    )


@functools.lru_cache(maxsize=64)
def _live_key_query(table: Table, columns: tuple[Any, ...]) -> Select[Any]:
    # Built once per key table and columns: on SQLite, building a statement took longer than running it, and
    # every API request authenticates.
    return _live_key_select(table, columns, None)


def use_is_stale(row: Any, now: datetime | None = None) -> bool:
    """Whether a use of the key ``row`` (from :func:`find_live`) is worth recording (see ``touch_last_used``)."""
    return row.last_used_at is None or as_utc(row.last_used_at) < (now or utcnow()) - LAST_USED_RESOLUTION


def touch_last_used(conn: Connection, table: Table, row: Any, now: datetime | None = None) -> None:
    """Record a use of the key ``row`` (from :func:`find_live`) at most once per :data:`LAST_USED_RESOLUTION`."""
    now = now or utcnow()
    stale = now - LAST_USED_RESOLUTION
    if not use_is_stale(row, now):
        return
    # The condition again in SQL: of concurrent requests that all saw a stale time, one writes.
    conn.execute(
        update(table)
        .where(table.c.id == row.id, or_(table.c.last_used_at.is_(None), table.c.last_used_at < stale))
        .values(last_used_at=now)
    )


def live_key_by_ref(
    conn: Connection, table: Table, scope: Sequence[ColumnElement[bool]], key_ref: str, what: str
) -> Row[Any]:
    """The live key of ``scope`` named by ``key_ref``: its id, or its masked prefix (with or without the ``…``)."""
    ref = key_ref.strip().rstrip("…")
    match = table.c.display_prefix == ref
    if ref.isdigit():
        match = or_(match, table.c.id == int(ref))
    rows = conn.execute(select(table).where(*scope, _ended(table).is_(None), match)).all()
    if not rows:
        raise NotFound(f"no active {what} {key_ref!r}")
    if len(rows) > 1:
        raise NotFound(f"{key_ref!r} names more than one key; use the key id")
    return rows[0]


def end_key(conn: Connection, table: Table, key_id: int) -> KeyInfo:
    """Revoke (invalidate) one key now; the next request with it is refused."""
    conn.execute(update(table).where(table.c.id == key_id).values({_ended(table).key: utcnow()}))
    return key_info(conn.execute(select(table).where(table.c.id == key_id)).one())


def list_keys(conn: Connection, table: Table, scope: Sequence[ColumnElement[bool]]) -> list[KeyInfo]:
    query = select(table).where(*scope).order_by(table.c.created_at, table.c.id)
    return [key_info(row) for row in conn.execute(query)]


def live_count(conn: Connection, table: Table, scope: Sequence[ColumnElement[bool]]) -> int:
    return len(conn.execute(select(table.c.id).where(*scope, _ended(table).is_(None))).all())
