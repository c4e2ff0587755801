"""Canvases: create, list, show, edit a draft, start, stop and per-step statistics. The worker advances users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cohortflow.platform.api.deps import RestWorkspace, Runtime
from cohortflow.platform.api.routes.campaigns import Messaging
from cohortflow.platform.messaging import canvas
from cohortflow.platform.messaging.canvas import CanvasDefinition

router = APIRouter(prefix="/canvases", tags=["canvases"])


@router.post("", status_code=201, summary="Create a Canvas as a draft (validated whole; nothing is saved on error)")
def create_canvas(
    body: CanvasDefinition, runtime: Runtime, workspace_id: RestWorkspace, settings: Messaging
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.create_canvas(conn, workspace_id, body, settings=settings).to_dict()


@router.get("", summary="List Canvases")
def list_canvases(runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return {"canvases": [c.to_dict() for c in canvas.list_canvases(conn, workspace_id)]}


@router.get("/{canvas_id}", summary="Show a Canvas")
def get_canvas(canvas_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.get_canvas(conn, workspace_id, canvas_id).to_dict()


@router.put("/{canvas_id}", summary="Replace a draft Canvas's journey (validated whole; nothing changes on error)")
def update_canvas(
    canvas_id: str, body: CanvasDefinition, runtime: Runtime, workspace_id: RestWorkspace, settings: Messaging
) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.update_canvas(conn, workspace_id, canvas_id, body, settings=settings).to_dict()


@router.post("/{canvas_id}/start", summary="Activate a draft Canvas; users enter on its entry schedule")
def start(canvas_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.start_canvas(conn, workspace_id, canvas_id, now=runtime.clock()).to_dict()


@router.get("/{canvas_id}/stats", summary="Per step: entered, at the step, sent, failed, skipped, paths, exited")
def stats(canvas_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.canvas_stats(conn, workspace_id, canvas_id)


@router.post("/{canvas_id}/stop", summary="Stop an active Canvas: no more entries, moves or messages")
def stop(canvas_id: str, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return canvas.stop_canvas(conn, workspace_id, canvas_id, now=runtime.clock()).to_dict()
