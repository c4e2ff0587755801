"""``/users/export/ids``: profiles by identifier, with their aliases, devices, cohorts and event summaries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from sqlalchemy import Connection, func, select

from cohortflow.clock import as_utc
from cohortflow.platform import identity
from cohortflow.platform.cohorts import in_workspace_cohorts
from cohortflow.platform.store.schema import (
    cohort_members,
    cohorts,
    partners,
    user_aliases,
    user_events,
    user_purchases,
    users,
)
from cohortflow.platform.user_requests import (
    TOO_MANY_ALIASES,
    BrazeId,
    DeviceId,
    ExternalId,
    NonEmpty,
    RequestBody,
    UserAlias,
    check_total_size,
    validation_error,
)

# -------------------------------------------------------------------------------------------------------- export

EXPORT_FIELDS: tuple[str, ...] = (
    "braze_id",
    "external_id",
    "user_aliases",
    "created_at",
    "random_bucket",
    *identity.PROFILE_COLUMNS,
    "custom_attributes",
    "custom_events",
    "purchases",
    "total_revenue",
    "devices",
    "cohorts",
)


class ExportRequest(RequestBody):
    """``POST /users/export/ids``: up to 50 external_ids and user_aliases together; at most one of device_id,
    email_address and phone; ``braze_id`` alone or with the others."""

    model_config = ConfigDict(extra="forbid")

    external_ids: list[ExternalId] | None = None
    user_aliases: list[UserAlias] | None = None
    device_id: DeviceId | None = None
    braze_id: BrazeId | None = None
    email_address: NonEmpty | None = None
    phone: NonEmpty | None = None
    fields_to_export: list[str] | None = Field(
        default=None, description=f"Fields to return (default: all). One of: {', '.join(EXPORT_FIELDS)}."
    )

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        check_total_size(data, ("external_ids", "user_aliases"), TOO_MANY_ALIASES)
        return data

    @model_validator(mode="after")
    def _identifiers(self) -> Self:
        single = [n for n in ("device_id", "email_address", "phone") if getattr(self, n) is not None]
        if len(single) > 1:
            raise validation_error(
                "identifier", f"only one of device_id, email_address or phone per request (got {', '.join(single)})"
            )
        if not (self.external_ids or self.user_aliases or self.braze_id or single):
            raise validation_error(
                "empty",
                "the request must name users by external_ids, user_aliases, device_id, braze_id, email_address "
                "or phone",
            )
        if self.fields_to_export is not None:
            unknown = [f for f in self.fields_to_export if f not in EXPORT_FIELDS]
            if unknown:
                raise validation_error(
                    "fields_to_export",
                    f"fields_to_export has unsupported field(s) {', '.join(map(repr, unknown))}; "
                    f"supported: {', '.join(EXPORT_FIELDS)}",
                )
        return self


class EventSummary(BaseModel):
    name: str
    first: datetime
    last: datetime
    count: int


class ExportedDevice(BaseModel):
    device_id: str
    created_at: datetime
    last_seen_at: datetime


class CohortMembership(BaseModel):
    partner: str
    cohort_id: str
    name: str


class ExportedUser(BaseModel):
    """A user profile; fields that are empty or not requested are left out (Braze's convention)."""

    braze_id: str | None = None
    external_id: str | None = None
    user_aliases: list[UserAlias] | None = None
    created_at: datetime | None = None
    random_bucket: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    country: str | None = None
    home_city: str | None = None
    language: str | None = None
    gender: str | None = None
    dob: str | None = None
    time_zone: str | None = None
    email_subscribe: str | None = None
    push_subscribe: str | None = None
    custom_attributes: dict[str, Any] | None = None
    custom_events: list[EventSummary] | None = None
    purchases: list[EventSummary] | None = None
    total_revenue: float | None = Field(default=None, description="Sum of price x quantity over all purchases.")
    devices: list[ExportedDevice] | None = None
    cohorts: list[CohortMembership] | None = Field(default=None, description="Partner cohorts the user belongs to.")


class ExportResponse(BaseModel):
    message: str = "success"
    users: list[ExportedUser]
    invalid_user_ids: list[str] | None = Field(
        default=None, description="Identifiers (other than aliases) that named no user."
    )
    invalid_user_aliases: list[UserAlias] | None = Field(default=None, description="Aliases that named no user.")


def export_ids(conn: Connection, workspace_id: str, request: ExportRequest) -> ExportResponse:
    order: list[int] = []
    invalid: list[str] = []
    invalid_aliases: list[UserAlias] = []

    def found(uids: Iterable[int]) -> None:
        for uid in uids:
            if uid not in order:
                order.append(uid)

    for ext in request.external_ids or []:
        uid = identity.find_by_external_id(conn, workspace_id, ext)
        found([uid]) if uid is not None else invalid.append(ext)
    for alias in request.user_aliases or []:
        uid = identity.find_by_alias(conn, workspace_id, alias.key())
        found([uid]) if uid is not None else invalid_aliases.append(alias)
    if request.braze_id is not None:
        uid = identity.find_by_braze_id(conn, workspace_id, request.braze_id)
        found([uid]) if uid is not None else invalid.append(request.braze_id)
    if request.device_id is not None:
        uid = identity.find_by_device(conn, workspace_id, request.device_id)
        found([uid]) if uid is not None else invalid.append(request.device_id)
    if request.email_address is not None:
        uids = identity.find_by_email(conn, workspace_id, request.email_address)
        found(uids) if uids else invalid.append(request.email_address)
    if request.phone is not None:
        uids = identity.find_by_phone(conn, workspace_id, request.phone)
        found(uids) if uids else invalid.append(request.phone)

    wanted = set(request.fields_to_export) if request.fields_to_export is not None else set(EXPORT_FIELDS)
    return ExportResponse(
        users=_export_users(conn, workspace_id, order, wanted),
        invalid_user_ids=invalid or None,
        invalid_user_aliases=invalid_aliases or None,
    )


def export_users(conn: Connection, workspace_id: str, user_ids: list[int]) -> list[ExportedUser]:
    """Whole profiles of the workspace's users ``user_ids`` (every export field), in that order."""
    return _export_users(conn, workspace_id, user_ids, set(EXPORT_FIELDS))


def _export_users(conn: Connection, workspace_id: str, user_ids: list[int], wanted: set[str]) -> list[ExportedUser]:
    if not user_ids:
        return []
    rows = {
        int(r["id"]): dict(r)
        for r in conn.execute(
            select(users).where(users.c.workspace_id == workspace_id, users.c.id.in_(user_ids))
        ).mappings()
    }
    aliases: dict[int, list[UserAlias]] = {}
    if "user_aliases" in wanted:
        for r in conn.execute(
            select(user_aliases.c.user_id, user_aliases.c.alias_label, user_aliases.c.alias_name)
            .where(user_aliases.c.user_id.in_(user_ids))
            .order_by(user_aliases.c.alias_label)
        ):
            aliases.setdefault(int(r.user_id), []).append(UserAlias(alias_name=r.alias_name, alias_label=r.alias_label))
    devices = {uid: identity.devices_of(conn, uid) for uid in user_ids} if "devices" in wanted else {}
    events = _summaries(conn, user_events, user_events.c.name, user_ids) if "custom_events" in wanted else {}
    buys = _summaries(conn, user_purchases, user_purchases.c.product_id, user_ids) if "purchases" in wanted else {}
    revenue: dict[int, float] = {}
    if "total_revenue" in wanted:
        for uid, total in conn.execute(
            select(user_purchases.c.user_id, func.sum(user_purchases.c.price * user_purchases.c.quantity))
            .where(user_purchases.c.user_id.in_(user_ids))
            .group_by(user_purchases.c.user_id)
        ):
            revenue[int(uid)] = float(total)
    memberships: dict[int, list[CohortMembership]] = {}
    if "cohorts" in wanted:
        for m in conn.execute(
            select(cohort_members.c.user_id, partners.c.name.label("partner"), cohorts.c.cohort_id, cohorts.c.name)
            .join(cohorts, cohorts.c.id == cohort_members.c.cohort_pk)
            .join(partners, partners.c.id == cohorts.c.partner_id)
            .where(cohort_members.c.user_id.in_(user_ids), in_workspace_cohorts(conn, workspace_id))
            .order_by(partners.c.name, cohorts.c.cohort_id)
        ):
            memberships.setdefault(int(m.user_id), []).append(
                CohortMembership(partner=m.partner, cohort_id=m.cohort_id, name=m.name)
            )

    out = []
    for uid in user_ids:
        row = rows.get(uid)
        if row is None:
            continue
        data: dict[str, Any] = {}
        for name in ("braze_id", "external_id", "random_bucket", *identity.PROFILE_COLUMNS):
            if name in wanted:
                data[name] = row[name]
        if "created_at" in wanted:
            data["created_at"] = as_utc(row["created_at"])
        if "custom_attributes" in wanted and row["custom_attributes"]:
            data["custom_attributes"] = row["custom_attributes"]
        if aliases.get(uid):
            data["user_aliases"] = aliases[uid]
        if devices.get(uid):
            data["devices"] = [ExportedDevice(**d) for d in devices[uid]]
        if events.get(uid):
            data["custom_events"] = events[uid]
        if buys.get(uid):
            data["purchases"] = buys[uid]
        if uid in revenue:
            data["total_revenue"] = revenue[uid]
        if memberships.get(uid):
            data["cohorts"] = memberships[uid]
        out.append(ExportedUser(**data))
    return out


def _summaries(conn: Connection, table: Any, name_column: Any, user_ids: list[int]) -> dict[int, list[EventSummary]]:
    out: dict[int, list[EventSummary]] = {}
    for uid, name, first, last, count in conn.execute(
        select(table.c.user_id, name_column, func.min(table.c.time), func.max(table.c.time), func.count())
        .where(table.c.user_id.in_(user_ids))
        .group_by(table.c.user_id, name_column)
        .order_by(table.c.user_id, name_column)
    ):
        out.setdefault(int(uid), []).append(
            EventSummary(name=name, first=as_utc(first), last=as_utc(last), count=int(count))
        )
    return out
