"""The platform's ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from cohortflow import __version__
from cohortflow.platform.api.body import BodySizeLimit
from cohortflow.platform.api.errors import document_errors, install_error_handlers
from cohortflow.platform.api.first_use import BuiltOnFirstUse
from cohortflow.platform.api.routes import (
    campaigns,
    canvases,
    frequency_caps,
    health,
    keys,
    partners,
    sdk,
    segments,
    users,
)
from cohortflow.platform.api.sdk_lane import SdkDataLane
from cohortflow.platform.api.track_lane import UsersTrackLane
from cohortflow.platform.dashboard import MOUNT_PATH
from cohortflow.platform.messaging.worker import BackgroundWorker
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import MessagingSettings


def create_app(runtime: PlatformRuntime, *, messaging_worker: MessagingSettings | None = None) -> FastAPI:
    """The API and the dashboard; with ``messaging_worker``, the messaging worker runs in this process too."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = None
        if messaging_worker is not None:
            background = BackgroundWorker(runtime.engine, messaging_worker, clock=runtime.clock)
            background.start()
        try:
            yield
        finally:
            if background is not None:
                background.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="cohortflow platform",
        version=__version__,
        description=(
            "A Braze-compatible engagement platform: the partner cohort import API "
            "(`/partners/{partner}/cohorts*`), the users API (`/users/*`) and an SDK ingestion endpoint."
        ),
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    document_errors(app)
    app.add_middleware(BodySizeLimit, max_bytes=runtime.settings.max_body_bytes)
    # Added last, so they run first: valid SDK and /users/track requests skip the rest of the stack.
    for lane in (SdkDataLane, UsersTrackLane):
        app.add_middleware(
            lane, runtime=runtime, handlers=app.exception_handlers, max_bytes=runtime.settings.max_body_bytes
        )
    for module in (health, partners, users, sdk, segments, campaigns, canvases, keys, frequency_caps):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(f"{MOUNT_PATH}/", status_code=307)

    # The dashboard is an app of its own: its errors are pages, not the API's JSON bodies. Built on its first
    # request: importing its pages was a third of the server's start-up, which API traffic never needs.
    app.mount(MOUNT_PATH, BuiltOnFirstUse(lambda: _dashboard(runtime)), name="dashboard")
    return app


def _dashboard(runtime: PlatformRuntime) -> FastAPI:
    from cohortflow.platform.dashboard.app import create_dashboard

    return create_dashboard(runtime)
