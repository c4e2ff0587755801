"""``/api/v1``: routes parse, authenticate and call :mod:`cohortflow.sync.service`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cohortflow.sync import service
from cohortflow.sync.api.schemas import (
    Audience,
    AudienceOverlapOut,
    AudiencePreviewBody,
    AudienceSizeOut,
    Destination,
    Listing,
    Message,
    Model,
    Preview,
    Source,
    Sync,
    SyncBody,
    SyncRun,
    TestResult,
    TriggerBody,
    TriggerBySlugBody,
    Triggered,
)
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.editing import delete_audience, save_audience
from cohortflow.sync.audiences.service import (
    MAX_SAMPLE_ROWS,
    audience_definition,
    audience_overlap,
    audience_size,
    audience_uses,
    describe_schema,
    draft_size,
)
from cohortflow.sync.config_writer import check_name, save_sync
from cohortflow.sync.errors import InvalidInput
from cohortflow.sync.runs import RunOptions
from cohortflow.sync.tokens import TokenInfo, authenticate
from cohortflow.sync.workspace import LiveWorkspace, Workspace

_bearer = HTTPBearer(auto_error=False, description="A token from `cohortflow sync token create NAME`.")


def _live(request: Request) -> LiveWorkspace:
    live: LiveWorkspace = request.app.state.live
    return live


def token(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenInfo:
    return authenticate(_live(request).store, credentials.credentials if credentials else None)


def workspace(request: Request, _token: Annotated[TokenInfo, Depends(token)]) -> Workspace:
    return _live(request).current()


WS = Annotated[Workspace, Depends(workspace)]
router = APIRouter(prefix="/api/v1")


def _wake(request: Request) -> None:
    """A run queued in this process starts now rather than at the next poll."""
    runner = getattr(request.app.state, "runner", None)
    if runner is not None:
        runner.wake()


# ------------------------------------------------------------------------------------------------ sources


@router.get("/sources", tags=["sources"])
def list_sources(ws: WS) -> Listing[Source]:
    return Listing(data=[Source.of(n, c, service.source_location(ws, n)) for n, c in ws.config.sources.items()])


@router.get("/sources/{source_id}", tags=["sources"])
def get_source(ws: WS, source_id: str) -> Source:
    return Source.of(source_id, ws.source(source_id).config, service.source_location(ws, source_id))


@router.post("/sources/{source_id}/test", tags=["sources"])
def test_source(ws: WS, source_id: str) -> TestResult:
    return TestResult(message=service.test_source(ws, source_id))


# ------------------------------------------------------------------------------------------------ models


@router.get("/models", tags=["models"])
def list_models(ws: WS) -> Listing[Model]:
    return Listing(data=[Model.of(n, c) for n, c in ws.config.models.items()])


@router.get("/models/{model_id}", tags=["models"])
def get_model(ws: WS, model_id: str) -> Model:
    return Model.of(model_id, ws.model(model_id))


@router.get("/models/{model_id}/preview", tags=["models"])
def preview_model(ws: WS, model_id: str, limit: Annotated[int, Query()] = 10) -> Preview:
    table = service.preview_model(ws, model_id, limit)
    return Preview(columns=table.column_names, rows=service.rows_of(table))


# ------------------------------------------------------------------------------------------------ destinations


@router.get("/destinations", tags=["destinations"])
def list_destinations(ws: WS) -> Listing[Destination]:
    return Listing(data=[Destination.of(n, c) for n, c in ws.config.destinations.items()])


@router.get("/destinations/{destination_id}", tags=["destinations"])
def get_destination(ws: WS, destination_id: str) -> Destination:
    return Destination.of(destination_id, ws.destination(destination_id))


@router.post("/destinations/{destination_id}/test", tags=["destinations"])
def test_destination(ws: WS, destination_id: str) -> TestResult:
    return TestResult(message=service.test_destination(ws, destination_id))


# ------------------------------------------------------------------------------------------------ syncs


@router.get("/syncs", tags=["syncs"])
def list_syncs(ws: WS) -> Listing[Sync]:
    return Listing(data=[Sync.of(o) for o in service.sync_overviews(ws)])


@router.get("/syncs/{sync_id}", tags=["syncs"])
def get_sync(ws: WS, sync_id: str) -> Sync:
    return Sync.of(service.sync_overview(ws, sync_id))


@router.post("/syncs", tags=["syncs"], status_code=201)
def create_sync(request: Request, ws: WS, body: SyncBody) -> Sync:
    """Create a sync in cohortflow.yaml from a model or an audience (comments kept); 400 naming the key and
    nothing written when it does not validate."""
    if not body.slug:
        raise InvalidInput("slug: the new sync's name is required")
    name = check_name("sync", body.slug)
    save_sync(ws.path, name, body.values(), create=True)
    _wake(request)
    return Sync.of(service.sync_overview(_live(request).current(), name))


@router.put("/syncs/{sync_id}", tags=["syncs"])
def replace_sync(request: Request, ws: WS, sync_id: str, body: SyncBody) -> Sync:
    """Replace a sync's settings (what it sends, destination, identifier, cohort, schedule, alerts)."""
    ws.sync(sync_id)
    if body.slug not in (None, sync_id):
        raise InvalidInput("slug: a sync cannot be renamed")
    save_sync(ws.path, sync_id, body.values(), create=False)
    _wake(request)
    return Sync.of(service.sync_overview(_live(request).current(), sync_id))


def _options(body: TriggerBody) -> RunOptions:
    return RunOptions(body.dry_run, body.full_resync, body.reconcile, body.retry_rejected)


@router.post("/syncs/{sync_id}/trigger", tags=["syncs"])
def trigger_sync(ws: WS, request: Request, sync_id: str, body: TriggerBody | None = None) -> Triggered:
    """Queue a run (a normal run, or a dry run, a full resync, a reconcile); the service runs it."""
    run_id, created = service.trigger_run(ws, sync_id, _options(body or TriggerBody()), "api")
    _wake(request)
    return Triggered(id=run_id, queued=created)


@router.post("/syncs/trigger", tags=["syncs"])
def trigger_sync_by_slug(ws: WS, request: Request, body: TriggerBySlugBody) -> Triggered:
    """Hightouch's other form: the sync named in the body as ``syncId`` or ``syncSlug``."""
    names = {n for n in (body.sync_id, body.sync_slug) if n}
    if len(names) != 1:
        raise InvalidInput("name the sync with syncId or syncSlug (one of them, or both equal)")
    run_id, created = service.trigger_run(ws, names.pop(), _options(body), "api")
    _wake(request)
    return Triggered(id=run_id, queued=created)


@router.get("/syncs/{sync_id}/runs", tags=["sync runs"])
def list_sync_runs(
    ws: WS,
    sync_id: str,
    limit: Annotated[int, Query()] = 20,
    status: Annotated[str | None, Query()] = None,
    run_id: Annotated[str | None, Query(alias="runId")] = None,
) -> Listing[SyncRun]:
    if run_id is not None:
        return Listing(data=[SyncRun.of(service.run_of(ws, sync_id, run_id))])
    return Listing(data=[SyncRun.of(r) for r in service.runs_of(ws, sync_id, limit, status)])


@router.get("/syncs/{sync_id}/runs/{run_id}", tags=["sync runs"])
def get_sync_run(ws: WS, sync_id: str, run_id: str) -> SyncRun:
    return SyncRun.of(service.run_of(ws, sync_id, run_id))


@router.post("/syncs/{sync_id}/runs/{run_id}/cancel", tags=["sync runs"])
def cancel_sync_run(ws: WS, sync_id: str, run_id: str) -> SyncRun:
    """A queued run is cancelled at once; a running one stops after its batches in flight."""
    return SyncRun.of(service.cancel_run(ws, sync_id, run_id))


# ------------------------------------------------------------------------------------------------ audiences


@router.get("/parents", tags=["audiences"])
def list_parents(ws: WS) -> Listing[dict[str, Any]]:
    """The schema audiences are built over: each parent model's columns and traits (with the operators of their
    types), related models and events."""
    return Listing(data=describe_schema(ws))


@router.get("/audiences", tags=["audiences"])
def list_audiences(ws: WS) -> Listing[Audience]:
    return Listing(data=[_audience(ws, name) for name in ws.config.audiences])


@router.post("/audiences/preview", tags=["audiences"])
def preview_audience(ws: WS, body: AudiencePreviewBody) -> AudienceSizeOut:
    """Size, sample rows and compiled SQL of a definition that is not saved; nothing is written."""
    return AudienceSizeOut.of(draft_size(ws, body.definition, name=body.name, split=body.split, sample=body.sample))


@router.get("/audiences/overlap", tags=["audiences"])
def overlap_audiences(ws: WS, a: Annotated[str, Query()], b: Annotated[str, Query()]) -> AudienceOverlapOut:
    """Both audiences' sizes, the people they share and those in only one."""
    return AudienceOverlapOut.of(audience_overlap(ws, a, b))


def _audience(ws: Workspace, name: str) -> Audience:
    return Audience.of(name, audience_definition(ws, name), audience_uses(ws, name))


@router.get("/audiences/{audience_id}", tags=["audiences"])
def get_audience(ws: WS, audience_id: str) -> Audience:
    return _audience(ws, audience_id)


@router.get("/audiences/{audience_id}/size", tags=["audiences"])
def size_audience(
    ws: WS,
    audience_id: str,
    split: Annotated[str | None, Query()] = None,
    priority_list: Annotated[str | None, Query(alias="priorityList")] = None,
    sample: Annotated[int, Query()] = 10,
) -> AudienceSizeOut:
    """Size (split groups or priority shares too), sample rows and the compiled SQL of a saved audience."""
    if not 0 <= sample <= MAX_SAMPLE_ROWS:
        raise InvalidInput(f"sample must be between 0 and {MAX_SAMPLE_ROWS}")
    ref = AudienceRef(name=audience_id, split=split, priority_list=priority_list)
    return AudienceSizeOut.of(audience_size(ws, ref, sample=sample))


@router.put("/audiences/{audience_id}", tags=["audiences"])
def save_audience_route(request: Request, ws: WS, audience_id: str, body: dict[str, Any]) -> Audience:
    """Create or replace an audience in cohortflow.yaml (comments kept); a bad definition is a 400 naming the
    key, and nothing is written."""
    check_name("audience", audience_id)
    save_audience(ws.path, audience_id, body)
    return _audience(_live(request).current(), audience_id)


@router.delete("/audiences/{audience_id}", tags=["audiences"])
def delete_audience_route(ws: WS, audience_id: str) -> Message:
    """Remove an audience; refused (400, nothing written) while a sync, a priority list or an audience names it."""
    audience_definition(ws, audience_id)
    delete_audience(ws.path, audience_id)
    return Message(message=f"audience {audience_id!r} deleted")
