"""Cohort membership export (extension, not in Braze): one page of a cohort's members with their identifiers.

Keyset pagination on the member's internal user id: each page is one range scan of the ``cohort_members``
primary key ``(cohort_pk, user_id)`` starting after the cursor, joined to ``users`` by its primary key, so a
page costs the same at the start and at the end of a 1M-member cohort (an ``OFFSET`` would rescan every
earlier member). The page's aliases and devices are then read with one query each, by ``user_id`` indexes.

The cursor is the last user id of the page, wrapped so clients treat it as opaque and so that a future change
of the ordering can be told apart (the ``v1`` tag).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from sqlalchemy import BigInteger, Connection, select

from cohortflow.platform.bounds import INT64_MAX
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.matching import in_batch
from cohortflow.platform.store.schema import cohort_members, cohorts, user_aliases, user_devices, users
from cohortflow.wire.cohort_export import CohortMembersPage, ExportedMember, ExportMessages
from cohortflow.wire.cohort_import import Alias

_CURSOR_TAG = "v1:"


def encode_cursor(last_user_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_TAG}{last_user_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The user id a page ends at; anything this module did not produce is a 400."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidRequest(ExportMessages.CURSOR_INVALID) from None
    number = text.removeprefix(_CURSOR_TAG)
    # Past a BIGINT the id would fail in the driver (a 500) rather than here.
    if not text.startswith(_CURSOR_TAG) or not number.isdigit() or len(number) > 19 or int(number) > INT64_MAX:
        raise InvalidRequest(ExportMessages.CURSOR_INVALID)
    return int(number)


def export_members(
    conn: Connection,
    workspace_id: str,
    partner_id: int,
    cohort_id: str,
    *,
    cursor: str | None,
    limit: int,
) -> CohortMembersPage:
    """One page of the cohort's members after ``cursor``, in user id order; ``exists=False`` for a cohort never
    created."""
    after = decode_cursor(cursor) if cursor is not None else 0
    pk = conn.execute(
        select(cohorts.c.id).where(
            cohorts.c.workspace_id == workspace_id,
            cohorts.c.partner_id == partner_id,
            cohorts.c.cohort_id == cohort_id,
        )
    ).scalar_one_or_none()
    if pk is None:
        return CohortMembersPage(cohort_id=cohort_id, exists=False, members=[], next_cursor=None)
    # One row more than the page tells whether another page follows without a count.
    rows = conn.execute(
        select(users.c.id, users.c.external_id)
        .select_from(cohort_members)
        .join(users, users.c.id == cohort_members.c.user_id)
        .where(cohort_members.c.cohort_pk == pk, cohort_members.c.user_id > after)
        .order_by(cohort_members.c.user_id)
        .limit(limit + 1)
    ).all()
    page, more = rows[:limit], len(rows) > limit
    aliases = _aliases(conn, [int(r.id) for r in page])
    devices = _devices(conn, [int(r.id) for r in page if r.external_id is None])
    members = [
        ExportedMember(
            external_id=r.external_id,
            aliases=aliases.get(int(r.id), []),
            device_ids=devices.get(int(r.id), []),
        )
        for r in page
    ]
    next_cursor = encode_cursor(int(page[-1].id)) if more else None
    return CohortMembersPage(cohort_id=cohort_id, exists=True, members=members, next_cursor=next_cursor)


def _aliases(conn: Connection, user_ids: Sequence[int]) -> dict[int, list[Alias]]:
    if not user_ids:
        return {}
    found: dict[int, list[Alias]] = {}
    rows = conn.execute(
        select(user_aliases.c.user_id, user_aliases.c.alias_name, user_aliases.c.alias_label)
        .where(in_batch(conn, user_aliases.c.user_id, user_ids, BigInteger))
        .order_by(user_aliases.c.user_id, user_aliases.c.alias_label)
    )
    for user_id, name, label in rows:
        found.setdefault(int(user_id), []).append(Alias(alias_name=name, alias_label=label))
    return found


def _devices(conn: Connection, user_ids: Sequence[int]) -> dict[int, list[str]]:
    if not user_ids:
        return {}
    found: dict[int, list[str]] = {}
    rows = conn.execute(
        select(user_devices.c.user_id, user_devices.c.device_id)
        .where(in_batch(conn, user_devices.c.user_id, user_ids, BigInteger))
        .order_by(user_devices.c.user_id, user_devices.c.device_id)
    )
    for user_id, device_id in rows:
        found.setdefault(int(user_id), []).append(str(device_id))
    return found
