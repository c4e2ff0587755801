"""Partner cohorts: naming and renaming them, applying membership changes, serializing imports, listing.

A cohort is keyed by (workspace, partner, the partner's ``cohort_id``). Its size is counted from
``cohort_members``, never stored, so it cannot drift.

Imports into one cohort are serialized. On PostgreSQL the cohort row is locked (``SELECT ... FOR UPDATE``,
created first with ``INSERT ... ON CONFLICT DO NOTHING`` on first use); on SQLite the whole database has one
writer (``BEGIN IMMEDIATE``). Callers run imports in :func:`~cohortflow.platform.store.locking.bounded_transaction`,
so a wait longer than ``cohort_lock_wait_seconds`` becomes :class:`ResourceLocked` (423, retryable) and the
request changes nothing.
Within the lock a request's changes are applied set-wise, in request order, in one transaction together with
its audit row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Connection,
    any_,
    cast,
    delete,
    func,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.types import UserDefinedType

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform import audit
from cohortflow.platform.errors import NotFound
from cohortflow.platform.matching import batch_source, batch_value, in_batch, resolve_changes
from cohortflow.platform.store.locking import lock_workspace_memberships
from cohortflow.platform.store.schema import TS, cohort_members, cohorts, partners
from cohortflow.platform.store.upsert import upsert_insert
from cohortflow.wire.cohort_import import CohortChange, ImportCounts


@dataclass(frozen=True)
class CohortInfo:
    pk: int
    partner: str
    cohort_id: str
    name: str
    size: int
    created_at: datetime
    last_import_at: datetime | None


def in_workspace_cohorts(conn: Connection, workspace_id: str) -> ColumnElement[bool]:
    """``cohort_members`` rows of the workspace's cohorts, shaped to drive the primary key.

    Memberships have no index on ``user_id`` alone (each import would pay one random index insertion per
    added member for it, ~20% of the import's cost). Finding one user's memberships instead probes the
    primary key ``(cohort_pk, user_id)`` once per cohort of the workspace: combine this with a ``user_id``
    condition. On PostgreSQL the cohorts travel as one array, so the plan is an index scan whatever the
    statistics say; SQLite walks an ``IN`` list on the key's first column the same way.
    """
    in_workspace = cohorts.c.workspace_id == workspace_id
    if conn.dialect.name == "postgresql":
        aggregated = select(func.array_agg(cohorts.c.id)).where(in_workspace).scalar_subquery()
        return cohort_members.c.cohort_pk == any_(cast(aggregated, ARRAY(BigInteger)))
    return cohort_members.c.cohort_pk.in_(select(cohorts.c.id).where(in_workspace))


def _lock_cohort(
    conn: Connection,
    workspace_id: str,
    partner_id: int,
    cohort_id: str,
    *,
    name_if_new: str,
    partner_created_at: datetime | None,
    now: datetime,
) -> tuple[int, bool]:
    """Lock the cohort row for the rest of the transaction, creating it on first use; ``(pk, created)``."""
    key = (cohorts.c.workspace_id == workspace_id, cohorts.c.partner_id == partner_id, cohorts.c.cohort_id == cohort_id)
    locked = select(cohorts.c.id).where(*key).with_for_update()
    pk = conn.execute(locked).scalar_one_or_none()
    if pk is not None:
        return int(pk), False
    created = conn.execute(
        upsert_insert(conn, cohorts)
        .values(
            workspace_id=workspace_id,
            partner_id=partner_id,
            cohort_id=cohort_id,
            name=name_if_new,
            partner_created_at=partner_created_at,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "partner_id", "cohort_id"])
        .returning(cohorts.c.id)
    ).scalar_one_or_none()
    if created is not None:
        return int(created), True
    # Another transaction created it between our SELECT and INSERT (and has committed by now).
    return int(conn.execute(locked).scalar_one()), False


def name_cohort(
    conn: Connection,
    workspace_id: str,
    partner_id: int,
    cohort_id: str,
    name: str,
    partner_created_at: datetime,
    *,
    now: datetime | None = None,
) -> int:
    """``/cohorts``: create the cohort, or rename it. Returns its pk.

    The partner's ``created_at`` is kept from the first call that sent one: some clients send a new one with
    every batch, and that must not look like a new cohort.
    """
    now = now or utcnow()
    created_at = as_utc(partner_created_at)
    pk, created = _lock_cohort(
        conn, workspace_id, partner_id, cohort_id, name_if_new=name, partner_created_at=created_at, now=now
    )
    if not created:
        conn.execute(
            update(cohorts)
            .where(cohorts.c.id == pk)
            .values(
                name=name,
                partner_created_at=func.coalesce(cohorts.c.partner_created_at, created_at),
                updated_at=now,
            )
        )
    return pk


def _add_members(conn: Connection, cohort_pk: int, user_ids: Sequence[int], now: datetime) -> int:
    source = batch_source(conn, user_ids)
    rows = select(literal(cohort_pk, BigInteger), batch_value(conn, source, BigInteger), literal(now, TS))
    if conn.dialect.name == "sqlite":
        # SQLite needs a WHERE to tell an upsert's ON CONFLICT from a join's ON.
        rows = rows.where(true())
    inserted = conn.execute(
        upsert_insert(conn, cohort_members)
        .from_select(["cohort_pk", "user_id", "added_at"], rows)
        .on_conflict_do_nothing()
        .returning(cohort_members.c.user_id)
    )
    return len(inserted.all())


class _Tid(UserDefinedType[Any]):
    """PostgreSQL's row address type, for the delete below."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "TID"


def _remove_members(conn: Connection, cohort_pk: int, user_ids: Sequence[int]) -> int:
    if conn.dialect.name != "postgresql":
        deleted = conn.execute(
            delete(cohort_members)
            .where(
                cohort_members.c.cohort_pk == cohort_pk, in_batch(conn, cohort_members.c.user_id, user_ids, BigInteger)
            )
            .returning(cohort_members.c.user_id)
        )
        return len(deleted.all())
    # ``cohort_pk = :pk AND user_id = ANY(:ids)`` lets the planner scan the cohort's whole index range and
    # filter when its statistics undercount the cohort (a cohort that grew since the last ANALYZE): 20 ms and
    # climbing with the cohort's size instead of 2 ms. Finding the rows with one LATERAL index probe per user
    # and deleting them by row address pins the cheap plan.
    batch = batch_source(conn, user_ids)
    m = cohort_members.alias("m")
    probe = (
        select(literal_column("m.ctid").label("address"))
        .select_from(m)
        .where(m.c.cohort_pk == cohort_pk, m.c.user_id == batch_value(conn, batch, BigInteger))
        .limit(1)
        .lateral()
    )
    rows = select(func.array_agg(probe.c.address)).select_from(batch).join(probe, true()).scalar_subquery()
    deleted = conn.execute(
        delete(cohort_members)
        .where(literal_column("cohort_members.ctid") == any_(cast(rows, ARRAY(_Tid()))))
        .returning(cohort_members.c.user_id)
    )
    return len(deleted.all())


def import_changes(
    conn: Connection,
    workspace_id: str,
    partner_id: int,
    cohort_id: str,
    changes: Sequence[CohortChange],
    *,
    unmatched_sample_size: int,
    now: datetime | None = None,
) -> ImportCounts:
    """``/cohorts/users``: apply ``changes`` in order to the cohort (created on first use) and audit it.

    Unknown identifiers are skipped and counted, never creating a user. Adding a member or removing a non-member
    counts as ``unchanged``. Call inside :func:`~cohortflow.platform.store.locking.bounded_transaction`.

    A request naming no identifier at all (``cohort_changes: []``, or only empty lists) is how connectors check
    their credentials: it writes nothing, so a probe with a made-up ``cohort_id`` leaves no phantom cohort in the
    segment filter's dropdown and no audit row.
    """
    if not any(change.identifier_count for change in changes):
        return ImportCounts()
    now = now or utcnow()
    # No user this import matches can be removed before it commits (merges and deletions wait for it).
    lock_workspace_memberships(conn, workspace_id, exclusive=False)
    # Matching reads only users, so it runs before the cohort lock to keep the lock short.
    resolved = resolve_changes(conn, workspace_id, changes)
    pk, _created = _lock_cohort(
        conn, workspace_id, partner_id, cohort_id, name_if_new=cohort_id, partner_created_at=None, now=now
    )
    added = removed = unchanged = 0
    # Consecutive objects of the same direction commute, so each run is one statement.
    for should_remove, run in groupby(resolved, key=lambda r: r.should_remove):
        named = [user_id for r in run for user_id in r.user_ids]
        # Sorted: index pages are then touched in key order, and row locks are always taken in one order.
        distinct = sorted(set(named))
        if not distinct:
            continue
        if should_remove:
            changed = _remove_members(conn, pk, distinct)
            removed += changed
        else:
            changed = _add_members(conn, pk, distinct, now)
            added += changed
        unchanged += len(named) - changed
    received = sum(r.received for r in resolved)
    matched = sum(len(r.user_ids) for r in resolved)
    # added + removed + unchanged == matched
    outcome = ImportCounts(
        received=received,
        matched=matched,
        unmatched=received - matched,
        added=added,
        removed=removed,
        unchanged=unchanged,
    )
    conn.execute(update(cohorts).where(cohorts.c.id == pk).values(last_import_at=now, updated_at=now))
    sample = [identifier for r in resolved for identifier in r.unmatched][:unmatched_sample_size]
    audit.record_import(
        conn,
        workspace_id=workspace_id,
        partner_id=partner_id,
        cohort_pk=pk,
        at=now,
        unmatched_sample=sample,
        **outcome.model_dump(),
    )
    return outcome


def _size() -> Any:
    return (
        select(func.count())
        .select_from(cohort_members)
        .where(cohort_members.c.cohort_pk == cohorts.c.id)
        .scalar_subquery()
        .label("size")
    )


def _info_query() -> Any:
    return select(
        cohorts.c.id,
        partners.c.name.label("partner"),
        cohorts.c.cohort_id,
        cohorts.c.name,
        _size(),
        cohorts.c.created_at,
        cohorts.c.last_import_at,
    ).join(partners, partners.c.id == cohorts.c.partner_id)


def _to_info(row: Any) -> CohortInfo:
    return CohortInfo(
        pk=int(row.id),
        partner=str(row.partner),
        cohort_id=str(row.cohort_id),
        name=str(row.name),
        size=int(row.size),
        created_at=as_utc(row.created_at),
        last_import_at=as_utc(row.last_import_at) if row.last_import_at is not None else None,
    )


def list_cohorts(conn: Connection, workspace_id: str, partner_name: str | None = None) -> list[CohortInfo]:
    """The workspace's cohorts (of one partner if named), oldest first."""
    query = _info_query().where(cohorts.c.workspace_id == workspace_id)
    if partner_name is not None:
        query = query.where(partners.c.name == partner_name.strip().lower())
    query = query.order_by(partners.c.name, cohorts.c.created_at, cohorts.c.id)
    return [_to_info(row) for row in conn.execute(query)]


def get_cohort(conn: Connection, workspace_id: str, partner_name: str, cohort_id: str) -> CohortInfo:
    row = conn.execute(
        _info_query().where(
            cohorts.c.workspace_id == workspace_id,
            partners.c.name == partner_name.strip().lower(),
            cohorts.c.cohort_id == cohort_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"no cohort {cohort_id!r} of partner {partner_name!r} in workspace {workspace_id!r}")
    return _to_info(row)


def member_user_ids(conn: Connection, cohort_pk: int) -> set[int]:
    """Every member's user id (for checks and small cohorts; segments query ``cohort_members`` directly)."""
    query = select(cohort_members.c.user_id).where(cohort_members.c.cohort_pk == cohort_pk)
    return {int(u) for u in conn.execute(query).scalars()}
