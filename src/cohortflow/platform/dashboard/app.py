"""The dashboard's ASGI app, mounted by the platform's app at ``/dashboard``."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from cohortflow.platform.api.errors import status_for
from cohortflow.platform.dashboard import access
from cohortflow.platform.dashboard.views import (
    campaigns,
    canvas,
    cohorts,
    frequency_capping,
    home,
    segments,
    settings,
    technology_partners,
    users,
)
from cohortflow.platform.errors import PlatformError
from cohortflow.platform.ratelimit import DatabaseStorage
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import dashboard_sessions, dashboard_users
from cohortflow.web import WebKit
from cohortflow.web.accounts import SqlAccounts, SqlSessionStore
from cohortflow.web.sessions import SessionManager
from cohortflow.web.throttle import LoginThrottle

_TITLES = {400: "That did not work", 403: "Not allowed", 404: "Not found", 409: "Already exists"}


def create_dashboard(runtime: PlatformRuntime) -> FastAPI:
    kit = WebKit(
        product_name="cohortflow",
        templates_dir=Path(__file__).parent / "templates",
        sessions=SessionManager(
            SqlSessionStore(dashboard_sessions, dashboard_users, write=runtime.transaction, read=runtime.read)
        ),
        accounts=SqlAccounts(dashboard_users, write=runtime.transaction, read=runtime.read),
        # Failed sign-ins count in the platform database, so every server process sees the same count.
        throttle=LoginThrottle(DatabaseStorage(runtime.engine, runtime.settings.cohort_lock_wait_seconds)),
        context=access.template_context,
        static_dir=Path(__file__).parent / "static",
    )
    kit.env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    app = kit.create_app(title="cohortflow dashboard")
    app.state.kit = kit
    app.state.runtime = runtime

    @app.exception_handler(PlatformError)
    async def _platform_error(request: Request, exc: PlatformError) -> HTMLResponse:
        status = status_for(exc)
        return kit.error_page(request, status, _TITLES.get(status, "Something went wrong"), exc.message)

    for module in (home, campaigns, canvas, cohorts, segments, settings, frequency_capping, technology_partners, users):
        app.include_router(module.router)
    return app
