"""Segments: saved filter trees, their size and members, always evaluated at call time.

A segment stores only its definition. Sizes, previews and send audiences run the compiled filter against the
current tables each time, so a cohort import or a profile update shows up in the very next evaluation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.segments.compiler import DEFAULT_EMAIL_SUBSCRIPTION, cohort_pks, compile_filter
from cohortflow.platform.segments.filters import (
    CUSTOM_OPERATORS,
    STANDARD_ATTRIBUTES,
    STANDARD_OPERATORS,
    FilterNode,
    OrGroup,
    PartnerCohortFilter,
    dump_filter,
    parse_filter,
)
from cohortflow.platform.store.lookup import row_in_workspace
from cohortflow.platform.store.schema import cohort_members, cohorts, data_import_keys, partners, segments, users

MAX_NAME_LENGTH = 200
MAX_PREVIEW = 1000
# A plausible address (something@something.something, no spaces) in plain LIKE, which both databases
# support; addresses are validated on the way in, this only keeps junk out of the reachable count.
EMAIL_LIKE = "%_@_%._%"

# What a preview shows of each member: identifiers and the fields people check a segment against.
PREVIEW_COLUMNS = (
    users.c.braze_id,
    users.c.external_id,
    users.c.email,
    users.c.first_name,
    users.c.last_name,
    users.c.country,
    users.c.email_subscribe,
    users.c.random_bucket,
)


@dataclass(frozen=True)
class Segment:
    id: str
    workspace_id: str
    name: str
    filter: FilterNode
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "filter": dump_filter(self.filter),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class SegmentSize:
    total: int
    reachable_email: int
    reachable_webhook: int

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "reachable_email": self.reachable_email,
            "reachable_webhook": self.reachable_webhook,
        }


def email_reachable() -> ColumnElement[bool]:
    """A plausible address and not unsubscribed (unset means subscribed)."""
    return and_(
        users.c.email.is_not(None),
        users.c.email.like(EMAIL_LIKE),
        users.c.email.not_like("% %"),
        func.coalesce(users.c.email_subscribe, DEFAULT_EMAIL_SUBSCRIPTION) != "unsubscribed",
    )


def webhook_reachable() -> ColumnElement[bool]:
    """Webhooks address users by external_id, so only identified users can receive one."""
    return users.c.external_id.is_not(None)


def audience_query(workspace_id: str, clauses: list[ColumnElement[bool]]) -> Select[Any]:
    """``users.id`` of the workspace's users matching every clause (from :func:`compile_filter`)."""
    return select(users.c.id).where(users.c.workspace_id == workspace_id, *clauses)


def _clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("segment name must be a non-empty string")
    cleaned = name.strip()
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"segment name must be at most {MAX_NAME_LENGTH} characters")
    return cleaned


def validate_filter(conn: Connection, workspace_id: str, filter_data: object) -> FilterNode:
    """Parse a definition and check that it compiles here (its cohorts exist in this workspace)."""
    node = parse_filter(filter_data)
    compile_filter(conn, workspace_id, node, now=utcnow())
    return node


def _row_to_segment(row: Any) -> Segment:
    return Segment(
        id=str(row.id),
        workspace_id=str(row.workspace_id),
        name=str(row.name),
        filter=parse_filter(row.filter),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def create_segment(conn: Connection, workspace_id: str, name: str, filter_data: object) -> Segment:
    cleaned = _clean_name(name)
    node = validate_filter(conn, workspace_id, filter_data)
    now = utcnow()
    segment_id = f"seg_{uuid.uuid4().hex}"
    conn.execute(
        insert(segments).values(
            id=segment_id,
            workspace_id=workspace_id,
            name=cleaned,
            filter=dump_filter(node),
            created_at=now,
            updated_at=now,
        )
    )
    return Segment(segment_id, workspace_id, cleaned, node, now, now)


def get_segment(conn: Connection, workspace_id: str, segment_id: str) -> Segment:
    return _row_to_segment(row_in_workspace(conn, segments, workspace_id, segment_id, "segment"))


def list_segments(conn: Connection, workspace_id: str) -> list[Segment]:
    rows = conn.execute(
        select(segments).where(segments.c.workspace_id == workspace_id).order_by(segments.c.created_at, segments.c.id)
    )
    return [_row_to_segment(r) for r in rows]


def update_segment(
    conn: Connection,
    workspace_id: str,
    segment_id: str,
    *,
    name: str | None = None,
    filter_data: object | None = None,
) -> Segment:
    """Change the name and/or the definition; what is not given stays as it is."""
    current = get_segment(conn, workspace_id, segment_id)
    if name is None and filter_data is None:
        raise InvalidRequest("nothing to update: give a name, a filter or both")
    new_name = _clean_name(name) if name is not None else current.name
    node = validate_filter(conn, workspace_id, filter_data) if filter_data is not None else current.filter
    now = utcnow()
    conn.execute(
        update(segments)
        .where(segments.c.workspace_id == workspace_id, segments.c.id == segment_id)
        .values(name=new_name, filter=dump_filter(node), updated_at=now)
    )
    return Segment(segment_id, workspace_id, new_name, node, current.created_at, now)


def delete_segment(conn: Connection, workspace_id: str, segment_id: str) -> None:
    get_segment(conn, workspace_id, segment_id)
    try:
        with conn.begin_nested():
            conn.execute(delete(segments).where(segments.c.workspace_id == workspace_id, segments.c.id == segment_id))
    except IntegrityError as exc:
        # A campaign or Canvas that targets the segment keeps it alive.
        raise InvalidRequest(
            f"segment {segment_id!r} is still used by a campaign or Canvas; remove it there first"
        ) from exc


def segment_clause(conn: Connection, workspace_id: str, segment_id: str, *, now: datetime) -> ColumnElement[bool]:
    """The segment's membership condition, compiled against the current data."""
    return compile_filter(conn, workspace_id, get_segment(conn, workspace_id, segment_id).filter, now=now)


def filter_size(conn: Connection, workspace_id: str, node: FilterNode, *, now: datetime) -> SegmentSize:
    """Exact counts for a filter: all its users, those reachable by email and by webhook (one query)."""
    cohort_filters = _included_cohorts(node)
    clause: ColumnElement[bool]
    if cohort_filters is not None and len(cohort_filters) > 1:
        # "In A or in B ...": one semi-join on the union of memberships instead of one subplan per cohort.
        pks = sorted(set(cohort_pks(conn, workspace_id, cohort_filters)))
        clause = users.c.id.in_(select(cohort_members.c.user_id).where(cohort_members.c.cohort_pk.in_(pks)))
    else:
        clause = compile_filter(conn, workspace_id, node, now=now)
    row = conn.execute(
        select(
            func.count().label("total"),
            func.count().filter(email_reachable()).label("email"),
            func.count().filter(webhook_reachable()).label("webhook"),
        ).where(users.c.workspace_id == workspace_id, clause)
    ).one()
    return SegmentSize(total=int(row.total), reachable_email=int(row.email), reachable_webhook=int(row.webhook))


def _included_cohorts(node: FilterNode) -> list[PartnerCohortFilter] | None:
    """The cohorts of a filter that is "in cohort A" or "in A or in B or ...", else None."""
    if isinstance(node, PartnerCohortFilter):
        return [node] if node.operator == "includes" else None
    if isinstance(node, OrGroup) and all(
        isinstance(c, PartnerCohortFilter) and c.operator == "includes" for c in node.filters
    ):
        return [c for c in node.filters if isinstance(c, PartnerCohortFilter)]
    return None


def filter_count(conn: Connection, workspace_id: str, node: FilterNode, *, now: datetime) -> int:
    """The exact number of users ``node`` selects, by the cheapest exact route (no reachability counts).

    A filter that is only cohort membership ("in A", "in A or in B") is counted in ``cohort_members`` alone,
    without reading ``users``: a cohort's members are users of the cohort's workspace by construction (imports
    match users of that workspace; merges move memberships and deletions remove them). At 10M users that is
    ~0.1 s for a 1M-member cohort instead of a scan of the workspace's users. Anything else is counted with the
    compiled filter, like :func:`filter_size` without its per-channel columns.
    """
    cohort_filters = _included_cohorts(node)
    if cohort_filters is not None:
        pks = sorted(set(cohort_pks(conn, workspace_id, cohort_filters)))
        members = select(cohort_members.c.user_id).where(cohort_members.c.cohort_pk.in_(pks))
        if len(pks) == 1:
            return int(conn.execute(select(func.count()).select_from(members.subquery())).scalar_one())
        distinct = members.distinct().subquery()
        return int(conn.execute(select(func.count()).select_from(distinct)).scalar_one())
    clause = compile_filter(conn, workspace_id, node, now=now)
    return int(conn.execute(select(func.count()).where(users.c.workspace_id == workspace_id, clause)).scalar_one())


def segment_size(conn: Connection, workspace_id: str, segment_id: str, *, now: datetime) -> SegmentSize:
    """Exact counts: all members, members reachable by email, members reachable by webhook."""
    return filter_size(conn, workspace_id, get_segment(conn, workspace_id, segment_id).filter, now=now)


def preview_members(
    conn: Connection, workspace_id: str, segment_id: str, *, limit: int = 100, now: datetime
) -> list[dict[str, Any]]:
    """Up to ``limit`` members (lowest user ids first, so the same data previews the same way)."""
    if not 1 <= limit <= MAX_PREVIEW:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PREVIEW}")
    clause = segment_clause(conn, workspace_id, segment_id, now=now)
    rows = conn.execute(
        select(*PREVIEW_COLUMNS).where(users.c.workspace_id == workspace_id, clause).order_by(users.c.id).limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def filter_catalogue(conn: Connection, workspace_id: str) -> dict[str, Any]:
    """What a segment editor offers in this workspace.

    One "<Partner> Cohorts" filter per partner connected to the workspace (it holds a data import key for
    the partner, or the partner imported cohorts here), listing that partner's cohorts; then every other
    filter type with its operators.
    """
    connected = select(data_import_keys.c.partner_id).where(data_import_keys.c.workspace_id == workspace_id)
    imported = select(cohorts.c.partner_id).where(cohorts.c.workspace_id == workspace_id)
    partner_rows = conn.execute(
        select(partners.c.id, partners.c.name, partners.c.display_name)
        .where(or_(partners.c.id.in_(connected), partners.c.id.in_(imported)))
        .order_by(partners.c.display_name, partners.c.name)
    ).all()
    cohort_rows = conn.execute(
        select(cohorts.c.partner_id, cohorts.c.cohort_id, cohorts.c.name)
        .where(cohorts.c.workspace_id == workspace_id)
        .order_by(cohorts.c.name, cohorts.c.cohort_id)
    ).all()
    by_partner: dict[int, list[dict[str, str]]] = {}
    for row in cohort_rows:
        by_partner.setdefault(int(row.partner_id), []).append({"cohort_id": row.cohort_id, "name": row.name})
    cohort_filters = [
        {
            "type": "partner_cohort",
            "name": f"{p.display_name} Cohorts",
            "partner": p.name,
            "operators": ["includes", "does_not_include"],
            "cohorts": by_partner.get(int(p.id), []),
        }
        for p in partner_rows
    ]
    return {
        "filters": [
            *cohort_filters,
            {"type": "custom_attribute", "name": "Custom Attribute", "operators": dict(CUSTOM_OPERATORS)},
            {
                "type": "standard_attribute",
                "name": "Profile Attribute",
                "attributes": {
                    name: {"kind": kind, "operators": list(STANDARD_OPERATORS[kind])}
                    for name, kind in STANDARD_ATTRIBUTES.items()
                },
            },
            {"type": "identity", "name": "Identified or Anonymous", "states": ["identified", "anonymous"]},
            {"type": "has_email", "name": "Has Email Address", "values": [True, False]},
            {
                "type": "email_subscription",
                "name": "Email Subscription Status",
                "states": ["subscribed", "opted_in", "unsubscribed"],
            },
            {"type": "custom_event", "name": "Performed Custom Event", "fields": ["event", "min_count", "within_days"]},
            {"type": "purchase", "name": "Made Purchase", "fields": ["product_id", "min_count", "within_days"]},
            {
                "type": "random_bucket",
                "name": "Random Bucket Number",
                "operators": ["equals", "not_equals", "less_than", "greater_than"],
                "range": [0, 9999],
            },
            {"type": "and", "name": "All of"},
            {"type": "or", "name": "Any of"},
            {"type": "not", "name": "Not"},
        ]
    }


def _cohort_filters(node: Any) -> list[PartnerCohortFilter]:
    if isinstance(node, PartnerCohortFilter):
        return [node]
    children = getattr(node, "filters", None) or ([node.filter] if hasattr(node, "filter") else [])
    return [found for child in children for found in _cohort_filters(child)]


def segments_using_cohort(conn: Connection, workspace_id: str, partner: str, cohort_id: str) -> list[Segment]:
    """The workspace's segments whose filter names this partner cohort (includes or does not include)."""
    return [
        segment
        for segment in list_segments(conn, workspace_id)
        if any(f.partner == partner and f.cohort_id == cohort_id for f in _cohort_filters(segment.filter))
    ]
