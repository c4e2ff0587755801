"""``/segments``: saved audiences over the workspace's users (REST API key auth).

Handlers parse and authenticate, then call :mod:`cohortflow.platform.segments.service`; membership is
evaluated on every call, against the data as it is at that moment.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.platform.api.deps import RestWorkspace, Runtime
from cohortflow.platform.segments import service

router = APIRouter(prefix="/segments", tags=["segments"])


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    filter: dict[str, Any] = Field(description="The filter tree (see GET /segments/filters).")


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    filter: dict[str, Any] | None = None


class SegmentOut(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    created_at: str
    updated_at: str


class SegmentList(BaseModel):
    segments: list[SegmentOut]


class SizeOut(BaseModel):
    segment_id: str
    total: int
    reachable_email: int
    reachable_webhook: int
    evaluated_at: str


class PreviewOut(BaseModel):
    segment_id: str
    members: list[dict[str, Any]]
    evaluated_at: str


def _out(segment: service.Segment) -> SegmentOut:
    return SegmentOut(**segment.to_dict())


@router.get("/filters", summary="The filters a segment can use in this workspace")
def filters(runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return service.filter_catalogue(conn, workspace_id)


@router.post("", status_code=201, response_model=SegmentOut, summary="Create a segment")
def create(body: SegmentCreate, runtime: Runtime, workspace_id: RestWorkspace) -> SegmentOut:
    with runtime.transaction() as conn:
        return _out(service.create_segment(conn, workspace_id, body.name, body.filter))


@router.get("", response_model=SegmentList, summary="List segments")
def list_(runtime: Runtime, workspace_id: RestWorkspace) -> SegmentList:
    with runtime.transaction() as conn:
        return SegmentList(segments=[_out(s) for s in service.list_segments(conn, workspace_id)])


@router.get("/{segment_id}", response_model=SegmentOut, summary="Get a segment")
def get(segment_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> SegmentOut:
    with runtime.transaction() as conn:
        return _out(service.get_segment(conn, workspace_id, segment_id))


@router.put("/{segment_id}", response_model=SegmentOut, summary="Rename and/or redefine a segment")
def update(segment_id: str, body: SegmentUpdate, runtime: Runtime, workspace_id: RestWorkspace) -> SegmentOut:
    with runtime.transaction() as conn:
        return _out(service.update_segment(conn, workspace_id, segment_id, name=body.name, filter_data=body.filter))


@router.delete("/{segment_id}", status_code=204, summary="Delete a segment")
def remove(segment_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> Response:
    with runtime.transaction() as conn:
        service.delete_segment(conn, workspace_id, segment_id)
    return Response(status_code=204)


@router.get("/{segment_id}/size", response_model=SizeOut, summary="Exact size and reachable users per channel")
def size(segment_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> SizeOut:
    now = runtime.clock()
    with runtime.transaction() as conn:
        counted = service.segment_size(conn, workspace_id, segment_id, now=now)
    return SizeOut(segment_id=segment_id, evaluated_at=now.isoformat(), **counted.to_dict())


@router.get("/{segment_id}/preview", response_model=PreviewOut, summary="A sample of the segment's members")
def preview(
    segment_id: str,
    runtime: Runtime,
    workspace_id: RestWorkspace,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PREVIEW)] = 100,
) -> PreviewOut:
    now = runtime.clock()
    with runtime.transaction() as conn:
        members = service.preview_members(conn, workspace_id, segment_id, limit=limit, now=now)
    return PreviewOut(segment_id=segment_id, members=members, evaluated_at=now.isoformat())
