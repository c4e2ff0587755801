"""Who is asking, and may they: the signed-in user and the role a page needs, as dependencies of the views."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from cohortflow.sync.web_users import WebUser, get_user, require_admin
from cohortflow.sync.workspace import LiveWorkspace, Workspace
from cohortflow.web import WebKit
from cohortflow.web.kit import LoginRequired

T = TypeVar("T")


def kit_of(request: Request) -> WebKit:
    kit: WebKit = request.app.state.kit
    return kit


def live_of(request: Request) -> LiveWorkspace:
    live: LiveWorkspace = request.app.state.live
    return live


@dataclass
class Page:
    """A signed-in request: the user, the workspace as the file says now, and rendering with the layout."""

    request: Request
    user: WebUser
    workspace: Workspace

    @property
    def kit(self) -> WebKit:
        return kit_of(self.request)

    @property
    def live(self) -> LiveWorkspace:
        return live_of(self.request)

    def render(self, template: str, context: Mapping[str, Any] | None = None, status_code: int = 200) -> HTMLResponse:
        return self.kit.render(self.request, template, context, status_code=status_code)

    def redirect(self, path: str, message: str | None = None, kind: str = "info") -> RedirectResponse:
        return self.kit.redirect(self.request, path, message, kind)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking domain call (warehouse, destination, state database) off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def wake_runner(self) -> None:
        runner = getattr(self.request.app.state, "runner", None)
        if runner is not None:
            runner.wake()


def signed_in(request: Request) -> Page:
    session = kit_of(request).require_session(request)
    live = live_of(request)
    user = get_user(live.store, session.user_id)
    if user is None:  # disabled or removed since it signed in
        raise LoginRequired()
    request.state.user = user
    page = Page(request, user, live.current())
    request.state.page = page
    return page


def admin(page: Annotated[Page, Depends(signed_in)]) -> Page:
    require_admin(page.user)
    return page


AnyRole = Annotated[Page, Depends(signed_in)]
AdminOnly = Annotated[Page, Depends(admin)]


def template_context(request: Request) -> dict[str, Any]:
    live = live_of(request)
    return {
        "user": getattr(request.state, "user", None),
        "config_error": live.error,
        "workspace_file": live.path.name,
    }
