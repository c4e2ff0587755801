"""What the CLI, the REST API and the web app do with a workspace: the one set of domain functions they share.

Transports parse, authorize and call these; they hold no rules of their own. Everything here is blocking
(warehouse queries, destination calls): async transports run it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa

from cohortflow.aio import run_blocking
from cohortflow.sync.config import (
    BrazeCohortsDestination,
    CreateCohort,
    DestinationConfig,
    DuckDBSource,
    SQLiteSource,
    SyncConfig,
)
from cohortflow.sync.destinations import BrazeCohortsClient, BrazeUsersTrackClient, derived_cohort_id, open_client
from cohortflow.sync.errors import InvalidInput, SyncError, UnknownObject
from cohortflow.sync.queue import enqueue_run
from cohortflow.sync.runs import RunOptions, RunRecord, get_run, list_runs, request_cancel
from cohortflow.sync.scheduler import describe_schedule, next_runs
from cohortflow.sync.sources import model_query, quote_identifier
from cohortflow.sync.workspace import Workspace
from cohortflow.wire import CohortSummary

T = TypeVar("T")
MAX_PREVIEW_ROWS = 1000
MAX_RUNS_LISTED = 500
DESTINATION_TYPES = {
    "braze_cohorts": "Braze Cohorts",
    "braze_users_track": "Braze Users (attribute)",
}


# ------------------------------------------------------------------------------------------------ sources


def source_location(workspace: Workspace, name: str) -> str:
    """Where a source is, with any credentials masked."""
    return workspace.source(name).describe()


def test_source(workspace: Workspace, name: str) -> str:
    return workspace.source(name).test()


def is_file_source(config: object) -> bool:
    return isinstance(config, DuckDBSource | SQLiteSource)


# ------------------------------------------------------------------------------------------------ models


def preview_model(workspace: Workspace, name: str, limit: int = 10) -> pa.Table:
    """The model's first ``limit`` rows (1 to 1,000)."""
    if not 1 <= limit <= MAX_PREVIEW_ROWS:
        raise InvalidInput(f"limit must be between 1 and {MAX_PREVIEW_ROWS}")
    model = workspace.model(name)
    return workspace.source(model.source).preview(model_query(model), limit)


def preview_query(workspace: Workspace, source: str, sql: str | None, table: str | None, limit: int = 10) -> pa.Table:
    """The first rows of a model that is not saved yet (the web app previews before saving)."""
    if (sql is None) == (table is None) or not (sql or table or "").strip():
        raise InvalidInput("write a SQL query or name a table")
    if not 0 <= limit <= MAX_PREVIEW_ROWS:
        raise InvalidInput(f"limit must be between 0 and {MAX_PREVIEW_ROWS}")
    query = sql.strip().rstrip(";") if sql is not None else f"SELECT * FROM {quote_identifier(table or '')}"
    return workspace.source(source).preview(query, limit)


def model_columns(workspace: Workspace, name: str) -> list[str]:
    model = workspace.model(name)
    return list(preview_query(workspace, model.source, model.sql, model.table, 0).column_names)


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A warehouse row as JSON-friendly values (dates and decimals as text)."""
    return {k: v if v is None or isinstance(v, str | int | float | bool) else str(v) for k, v in row.items()}


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """Preview rows as JSON-friendly dicts (dates and decimals as text)."""
    return [json_row(row) for row in table.to_pylist()]


# ------------------------------------------------------------------------------------------------ destinations


def _with_client(config: DestinationConfig, fn: Callable[[Any], Awaitable[T]]) -> T:
    client = open_client(config)

    async def go() -> T:
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return run_blocking(go())


def test_destination_config(config: DestinationConfig) -> str:
    """Prove a destination's keys (an empty change list changes nothing); the error names what failed."""
    return _with_client(config, lambda c: c.test())


def test_destination(workspace: Workspace, name: str) -> str:
    return test_destination_config(workspace.destination(name))


def destination_cohorts_for(config: DestinationConfig) -> list[CohortSummary] | None:
    """The cohorts a destination offers for ``mode: existing`` (our platform's list extension), or None."""
    if not isinstance(config, BrazeCohortsDestination):
        return None

    async def listing(client: BrazeCohortsClient | BrazeUsersTrackClient) -> list[CohortSummary] | None:
        assert isinstance(client, BrazeCohortsClient)
        return await client.list_cohorts()

    return _with_client(config, listing)


def destination_cohorts(workspace: Workspace, name: str) -> list[CohortSummary] | None:
    return destination_cohorts_for(workspace.destination(name))


def destination_settings(config: DestinationConfig) -> dict[str, Any]:
    """A destination's settings without its secrets."""
    values = config.model_dump(mode="json", exclude={"partner_api_key", "data_import_key", "rest_api_key"})
    values.pop("type", None)
    return values


# ------------------------------------------------------------------------------------------------ syncs


@dataclass(frozen=True)
class SyncOverview:
    name: str
    config: SyncConfig
    schedule: str
    next_run_at: datetime | None
    last_run: RunRecord | None
    cohort_id: str | None

    @property
    def status(self) -> str:
        """Hightouch's words: disabled, pending (never ran), or the last run's status."""
        if not self.config.enabled:
            return "disabled"
        return self.last_run.status if self.last_run else "pending"


def cohort_id_of(name: str, sync: SyncConfig) -> str | None:
    if sync.cohort is None:
        return None
    if isinstance(sync.cohort, CreateCohort):
        return sync.cohort.cohort_id or derived_cohort_id(name)
    return sync.cohort.cohort_id


def sync_overviews(workspace: Workspace) -> list[SyncOverview]:
    due = next_runs(workspace)
    out = []
    for name, sync in workspace.config.syncs.items():
        last = list_runs(workspace.store, name, 1)
        out.append(
            SyncOverview(
                name=name,
                config=sync,
                schedule=describe_schedule(sync.schedule),
                next_run_at=due.get(name) if sync.enabled else None,
                last_run=last[0] if last else None,
                cohort_id=cohort_id_of(name, sync),
            )
        )
    return out


def sync_overview(workspace: Workspace, name: str) -> SyncOverview:
    workspace.sync(name)
    return next(o for o in sync_overviews(workspace) if o.name == name)


def trigger_run(workspace: Workspace, name: str, options: RunOptions, trigger: str) -> tuple[str, bool]:
    """Queue a run for the service; ``(run id, created)`` (an identical waiting run is reused)."""
    if options.dry_run and options.retry_rejected:
        raise InvalidInput("retryRejected has no effect on a dry run; send one or the other")
    return enqueue_run(workspace, name, options, trigger)


def runs_of(workspace: Workspace, name: str, limit: int = 20, status: str | None = None) -> list[RunRecord]:
    workspace.sync(name)
    if not 1 <= limit <= MAX_RUNS_LISTED:
        raise InvalidInput(f"limit must be between 1 and {MAX_RUNS_LISTED}")
    records = list_runs(workspace.store, name, limit if status is None else MAX_RUNS_LISTED)
    if status is not None:
        records = [r for r in records if r.status == status][:limit]
    return records


def run_of(workspace: Workspace, name: str, run_id: str) -> RunRecord:
    """Run ``run_id`` of sync ``name``; another sync's run is not found here."""
    record = get_run(workspace.store, run_id)
    if record.sync_name != name:
        raise UnknownObject(f"sync {name!r} has no run {run_id!r}")
    return record


def cancel_run(workspace: Workspace, name: str, run_id: str) -> RunRecord:
    run_of(workspace, name, run_id)
    return request_cancel(workspace.store, run_id)


def match_rate(record: RunRecord) -> float | None:
    """Of the identifiers the destination looked up in this run, the share it found (when it reports counts)."""
    matched, unmatched = record.counts.get("matched"), record.counts.get("unmatched")
    if matched is None or unmatched is None or matched + unmatched == 0:
        return None
    return float(matched) / float(matched + unmatched)


def destination_label(config: DestinationConfig) -> str:
    return DESTINATION_TYPES.get(config.type, config.type)


def syncs_using(
    workspace: Workspace, *, model: str | None = None, destination: str | None = None, audience: str | None = None
) -> list[str]:
    return [
        n
        for n, s in workspace.config.syncs.items()
        if (model is None or s.model == model)
        and (destination is None or s.destination == destination)
        and (audience is None or (s.audience is not None and s.audience.name == audience))
    ]


def check_models(workspace: Workspace) -> list[str]:
    """Run each model's query (no rows read) and check that its primary key and every identifier column its syncs
    use exist; one line per problem, naming the model or sync."""
    from cohortflow.sync.identifiers import identifier_columns

    problems: list[str] = []
    for name in workspace.config.models:
        try:
            columns = set(model_columns(workspace, name))
        except SyncError as exc:
            problems.append(f"models.{name}: {exc.message}")
            continue
        model = workspace.model(name)
        if model.primary_key not in columns:
            problems.append(
                f"models.{name}.primary_key: the query has no column {model.primary_key!r} "
                f"(it has: {', '.join(sorted(columns))})"
            )
        for sync_name in syncs_using(workspace, model=name):
            missing = [c for c in identifier_columns(workspace.sync(sync_name).identifier) if c not in columns]
            if missing:
                problems.append(
                    f"syncs.{sync_name}.identifier: model {name!r} has no column "
                    f"{', '.join(repr(c) for c in missing)} (it has: {', '.join(sorted(columns))})"
                )
    return problems
