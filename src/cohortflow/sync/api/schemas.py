"""Request and response bodies of the REST API, in Hightouch's shape: camelCase fields, lists as
``{"data": [...], "hasMore": false}``, an object's ``id`` and ``slug`` (here both its name in ``cohortflow.yaml``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cohortflow.sync.audiences.service import AudienceOverlap, AudienceSize, AudienceUse
from cohortflow.sync.config import DestinationConfig, ModelConfig, SourceConfig
from cohortflow.sync.errors import InvalidInput
from cohortflow.sync.runs import RunRecord
from cohortflow.sync.service import SyncOverview, destination_label, destination_settings, json_row, match_rate

T = TypeVar("T")


class Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class Listing(Camel, Generic[T]):
    data: list[T]
    has_more: bool = False


class Message(Camel):
    message: str


class TestResult(Camel):
    ok: bool = True
    message: str


class Source(Camel):
    id: str
    slug: str
    name: str
    type: str
    configuration: dict[str, Any] = Field(description="Where the source is; credentials in URLs are masked.")

    @classmethod
    def of(cls, name: str, config: SourceConfig, location: str) -> Source:
        return cls(id=name, slug=name, name=name, type=config.type, configuration={"location": location})


class Model(Camel):
    id: str
    slug: str
    name: str
    source_id: str
    query_type: str = Field(description="raw_sql or table")
    raw: dict[str, str] | None = None
    table: dict[str, str] | None = None
    primary_key: str

    @classmethod
    def of(cls, name: str, config: ModelConfig) -> Model:
        return cls(
            id=name,
            slug=name,
            name=name,
            source_id=config.source,
            query_type="raw_sql" if config.sql is not None else "table",
            raw={"sql": config.sql} if config.sql is not None else None,
            table={"name": config.table} if config.table is not None else None,
            primary_key=config.primary_key,
        )


class Preview(Camel):
    columns: list[str]
    rows: list[dict[str, Any]]


class Destination(Camel):
    id: str
    slug: str
    name: str
    type: str
    type_name: str
    configuration: dict[str, Any] = Field(description="Settings without the secrets.")

    @classmethod
    def of(cls, name: str, config: DestinationConfig) -> Destination:
        return cls(
            id=name,
            slug=name,
            name=name,
            type=config.type,
            type_name=destination_label(config),
            configuration=destination_settings(config),
        )


class AudienceTarget(Camel):
    name: str
    split: str | None = None
    priority_list: str | None = None


class Sync(Camel):
    id: str
    slug: str
    model_id: str | None = Field(description="The model it sends, or null when it sends an audience")
    audience: AudienceTarget | None = Field(
        description="The audience it sends (a split group, a share of a priority list), or null for a model"
    )
    destination_id: str
    disabled: bool
    status: str = Field(description="disabled, pending (never ran) or the last run's status")
    schedule: dict[str, Any]
    schedule_description: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_id: str | None
    configuration: dict[str, Any]

    @classmethod
    def of(cls, overview: SyncOverview) -> Sync:
        cfg = overview.config
        return cls(
            id=overview.name,
            slug=overview.name,
            model_id=cfg.model,
            audience=AudienceTarget(**cfg.audience.model_dump()) if cfg.audience is not None else None,
            destination_id=cfg.destination,
            disabled=not cfg.enabled,
            status=overview.status,
            schedule=cfg.schedule.model_dump(mode="json"),
            schedule_description=overview.schedule,
            next_run_at=overview.next_run_at,
            last_run_at=overview.last_run.started_at if overview.last_run else None,
            last_run_id=overview.last_run.id if overview.last_run else None,
            configuration=cfg.model_dump(
                mode="json", include={"identifier", "cohort", "attribute", "on_row_removed", "quarantine_after_runs"}
            )
            | {"cohortId": overview.cohort_id},
        )


class RowCounts(Camel):
    added_count: int = 0
    changed_count: int = 0
    removed_count: int = 0


class SyncRun(Camel):
    id: str
    sync_id: str
    status: str = Field(description="queued, querying, planning, sending, succeeded, partial, failed or cancelled")
    trigger: str | None
    dry_run: bool
    full_resync: bool
    reconcile: bool
    retry_rejected: bool
    created_at: datetime | None = Field(description="When the run was asked for")
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    query_size: int | None = Field(description="Rows the model returned")
    planned_rows: RowCounts
    successful_rows: RowCounts
    failed_rows: RowCounts
    rejected_rows: int = Field(
        description="Model rows without a usable identifier plus identifiers the destination rejected"
    )
    match_rate: float | None = Field(description="Share of sent identifiers the destination matched to a user")
    completion_ratio: float
    error: str | None
    phases: dict[str, float]
    counts: dict[str, Any]
    errors: list[dict[str, Any]]

    @classmethod
    def of(cls, r: RunRecord) -> SyncRun:
        c = r.counts
        planned = c.get("adds", 0) + c.get("removes", 0)
        done = c.get("added", 0) + c.get("removed", 0)
        failed_adds = c.get("failed_adds", 0)
        failed_removes = c.get("failed_removes", 0)
        rejected = sum(c.get("rejected", {}).values()) + sum(c.get("rejected_by_destination", {}).values())
        settled = done + failed_adds + failed_removes
        ratio = 1.0 if r.finished else (min(1.0, settled / planned) if planned else 0.0)
        return cls(
            id=r.id,
            sync_id=r.sync_name,
            status=r.status,
            trigger=r.trigger,
            dry_run=r.dry_run,
            full_resync=r.full_resync,
            reconcile=r.reconcile,
            retry_rejected=r.retry_rejected,
            created_at=r.requested_at or r.started_at,
            started_at=None if r.status == "queued" else r.started_at,
            finished_at=r.finished_at,
            cancel_requested_at=r.cancel_requested_at,
            query_size=c.get("rows"),
            planned_rows=RowCounts(added_count=c.get("adds", 0), removed_count=c.get("removes", 0)),
            successful_rows=RowCounts(added_count=c.get("added", 0), removed_count=c.get("removed", 0)),
            failed_rows=RowCounts(added_count=failed_adds, removed_count=failed_removes),
            rejected_rows=rejected,
            match_rate=match_rate(r),
            completion_ratio=ratio,
            error=r.message if r.status in ("failed", "partial", "cancelled") else None,
            phases=r.phases,
            counts=c,
            errors=r.errors,
        )


class TriggerBody(Camel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    full_resync: bool = False
    dry_run: bool = False
    reconcile: bool = False
    retry_rejected: bool = False


class TriggerBySlugBody(TriggerBody):
    sync_id: str | None = None
    sync_slug: str | None = None


class Triggered(Camel):
    id: str = Field(description="The run's id: follow it at /api/v1/syncs/{syncId}/runs/{id}")
    queued: bool = Field(description="False when an identical run was already waiting (its id is returned)")


# ------------------------------------------------------------------------------------------------ audiences


class Audience(Camel):
    id: str
    slug: str
    name: str
    parent_id: str
    description: str | None
    splits: dict[str, float] | None = Field(description="Split groups and their percentages")
    definition: dict[str, Any] = Field(
        description="The audience as in cohortflow.yaml (parent, description, filter, splits); PUT takes it back"
    )
    sync_ids: list[str]
    priority_list_ids: list[str]
    included_by: list[str] = Field(description="Audiences that include this one (in_audience)")

    @classmethod
    def of(cls, name: str, definition: dict[str, Any], uses: AudienceUse) -> Audience:
        splits = definition.get("splits")
        return cls(
            id=name,
            slug=name,
            name=name,
            parent_id=definition["parent"],
            description=definition.get("description"),
            splits=dict(splits["groups"]) if splits else None,
            definition=definition,
            sync_ids=uses.syncs,
            priority_list_ids=uses.priority_lists,
            included_by=uses.audiences,
        )


class AudienceSizeOut(Camel):
    audience: AudienceTarget
    size: int
    parent_rows: int
    groups: dict[str, int] = Field(description="Split group sizes, or each audience's share of the priority list")
    columns: list[str]
    sample: list[dict[str, Any]]
    sql: str = Field(description="The compiled SQL, as run in the warehouse")

    @classmethod
    def of(cls, result: AudienceSize) -> AudienceSizeOut:
        return cls(
            audience=AudienceTarget(**result.target.model_dump()),
            size=result.size,
            parent_rows=result.parent_rows,
            groups=result.groups,
            columns=result.columns,
            sample=[json_row(r) for r in result.sample],
            sql=result.sql,
        )


class AudiencePreviewBody(Camel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    definition: dict[str, Any] = Field(description="An audience as in cohortflow.yaml: parent, filter, splits")
    name: str | None = Field(default=None, description="The audience it would be saved as (default: a new one)")
    split: str | None = None
    sample: int = 10


class AudienceOverlapOut(Camel):
    a: AudienceTarget
    b: AudienceTarget
    parent_rows: int
    a_size: int
    b_size: int
    both: int
    only_a: int
    only_b: int
    either: int

    @classmethod
    def of(cls, overlap: AudienceOverlap) -> AudienceOverlapOut:
        targets = {"a": AudienceTarget(**overlap.a.model_dump()), "b": AudienceTarget(**overlap.b.model_dump())}
        return cls(**{**overlap.as_dict(), **targets})


class SyncBody(Camel):
    """A sync to create (``POST /syncs``) or replace (``PUT /syncs/{id}``): it sends a model (``modelId``) or an
    audience (``audience``: a name, optionally one split group and/or its share of a priority list). The other
    fields are the YAML's own shapes (``identifier: {"external_id": "col"}``, ``cohort: {"mode": "create", ...}``)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    slug: str | None = Field(default=None, description="The new sync's name (POST only)")
    model_id: str | None = None
    audience: AudienceTarget | None = None
    destination_id: str
    identifier: dict[str, Any]
    cohort: dict[str, Any] | None = None
    attribute: str | None = None
    on_row_removed: str = "remove"
    schedule: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None
    disabled: bool = False

    def values(self) -> dict[str, Any]:
        """The sync's entry in cohortflow.yaml."""
        if (self.model_id is None) == (self.audience is None):
            raise InvalidInput("a sync sends a model or an audience: give exactly one of modelId or audience")
        values: dict[str, Any] = {}
        if self.model_id is not None:
            values["model"] = self.model_id
        elif self.audience is not None:
            ref = self.audience.model_dump(exclude_none=True)
            values["audience"] = ref["name"] if len(ref) == 1 else ref
        values |= {"destination": self.destination_id, "identifier": self.identifier}
        optional = {"cohort": self.cohort, "attribute": self.attribute, "schedule": self.schedule}
        values |= {k: v for k, v in {**optional, "alerts": self.alerts}.items() if v is not None}
        values["on_row_removed"] = self.on_row_removed
        if self.disabled:
            values["enabled"] = False
        return values
