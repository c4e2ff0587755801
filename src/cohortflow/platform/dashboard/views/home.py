"""The start page: the user's first workspace, or a note when no workspace is granted yet."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from cohortflow.platform.dashboard.access import AnyRole, SignedIn, kit_of

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def start(request: Request, user: SignedIn, workspace: str | None = None) -> Response:
    kit = kit_of(request)
    if workspace in user.workspace_ids or (workspace is None and user.workspace_ids):
        return kit.redirect(request, f"/w/{workspace or user.workspace_ids[0]}/")
    return kit.render(request, "dashboard/no_workspace.html", status_code=404 if workspace else 200)


@router.get("/w/{workspace_id}/", response_class=HTMLResponse)
def workspace_home(page: AnyRole) -> HTMLResponse:
    return page.render("dashboard/workspace.html")
