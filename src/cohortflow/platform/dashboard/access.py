"""Who is asking, and may they: the signed-in dashboard user, the workspace in the URL, the role a page needs.

Pages take a :class:`WorkspacePage` (any role) or an admin one through these dependencies, so a view never
checks access itself and never forgets to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import Connection

from cohortflow.platform.dashboard_users import DashboardUser, get_user, require_admin, require_workspace
from cohortflow.platform.errors import NotFound
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import get_workspace
from cohortflow.web import WebKit
from cohortflow.web.kit import LoginRequired


def kit_of(request: Request) -> WebKit:
    kit: WebKit = request.app.state.kit
    return kit


def runtime_of(request: Request) -> PlatformRuntime:
    runtime: PlatformRuntime = request.app.state.runtime
    return runtime


def signed_in(request: Request) -> DashboardUser:
    session = kit_of(request).require_session(request)
    try:
        with runtime_of(request).transaction() as conn:
            user = get_user(conn, session.user_id)
    except NotFound as exc:  # removed or disabled since it signed in
        raise LoginRequired() from exc
    request.state.user = user
    return user


SignedIn = Annotated[DashboardUser, Depends(signed_in)]


@dataclass
class WorkspacePage:
    """A page inside one workspace the user may see; renders with the layout's navigation filled in."""

    request: Request
    user: DashboardUser
    workspace_id: str
    workspace_name: str
    workspaces: list[tuple[str, str]]

    @property
    def kit(self) -> WebKit:
        return kit_of(self.request)

    @property
    def runtime(self) -> PlatformRuntime:
        return runtime_of(self.request)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.runtime.transaction() as conn:
            yield conn

    def render(self, template: str, context: Mapping[str, Any] | None = None, status_code: int = 200) -> HTMLResponse:
        return self.kit.render(self.request, template, context, status_code=status_code)

    def redirect(self, path: str, message: str | None = None, kind: str = "info") -> RedirectResponse:
        """``path`` is relative to this workspace."""
        return self.kit.redirect(self.request, f"/w/{self.workspace_id}{path}", message, kind)


def workspace_page(request: Request, workspace_id: str, user: SignedIn) -> WorkspacePage:
    require_workspace(user, workspace_id)
    with runtime_of(request).transaction() as conn:
        names = [(w, str(get_workspace(conn, w)["name"])) for w in user.workspace_ids]
    page = WorkspacePage(request, user, workspace_id, dict(names)[workspace_id], names)
    request.state.page = page
    return page


def admin_page(page: Annotated[WorkspacePage, Depends(workspace_page)]) -> WorkspacePage:
    require_admin(page.user)
    return page


AnyRole = Annotated[WorkspacePage, Depends(workspace_page)]
AdminOnly = Annotated[WorkspacePage, Depends(admin_page)]


def template_context(request: Request) -> dict[str, Any]:
    """What the layout needs on every page: the user, the workspace and the navigation."""
    return {
        "user": getattr(request.state, "user", None),
        "page": getattr(request.state, "page", None),
    }
