"""``cohortflow sync serve``: one process that schedules and runs syncs and serves the API and the web app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from cohortflow.settings import SyncSettings
from cohortflow.sync import alerts
from cohortflow.sync.api.errors import install_error_handlers
from cohortflow.sync.api.routes import router as api_router
from cohortflow.sync.runner import Runner
from cohortflow.sync.webapp.app import create_webapp
from cohortflow.sync.workspace import LiveWorkspace


def create_service_app(live: LiveWorkspace, settings: SyncSettings, *, run_scheduler: bool = True) -> FastAPI:
    """The service's ASGI app; with ``run_scheduler`` its lifespan also runs the :class:`Runner`."""
    runner = Runner(live, max_concurrent=settings.max_concurrent_runs, poll_seconds=settings.poll_seconds)
    runner.hooks.append(alerts.tick_hook(runner.worker_id))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_scheduler:
            runner.start()
        try:
            yield
        finally:
            if run_scheduler:
                runner.stop()
            live.close()

    app = FastAPI(
        title="cohortflow sync",
        description="The sync service's REST API, shaped after Hightouch's: sources, models, destinations, syncs, "
        "sync runs. Authenticate with `Authorization: Bearer <token>` (cohortflow sync token create NAME).",
        lifespan=lifespan,
    )
    app.state.live = live
    app.state.runner = runner
    app.state.settings = settings

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "worker": runner.worker_id}

    install_error_handlers(app, live.state_url)
    app.include_router(api_router)
    webapp = create_webapp(live)
    webapp.state.runner = runner
    app.mount("/app", webapp)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=303)

    return app
