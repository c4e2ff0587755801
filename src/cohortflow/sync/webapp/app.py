"""The web app's ASGI app, mounted by ``sync serve`` at ``/app``; built on the shared web kit."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from cohortflow.counters import TableCounterStorage
from cohortflow.sync.api.errors import status_for
from cohortflow.sync.errors import SyncError
from cohortflow.sync.state.schema import sync_rate_counters, sync_web_sessions, sync_web_users
from cohortflow.sync.webapp import access, filters
from cohortflow.sync.webapp.views import audiences, destinations, home, models, runs, sources, syncs
from cohortflow.sync.workspace import LiveWorkspace
from cohortflow.web import WebKit
from cohortflow.web.accounts import SqlAccounts, SqlSessionStore
from cohortflow.web.sessions import SessionManager
from cohortflow.web.throttle import LoginThrottle

HERE = Path(__file__).parent
STATIC = "/static/sync"
_TITLES = {400: "That did not work", 403: "Not allowed", 404: "Not found", 409: "Not now", 502: "The other side failed"}


def create_webapp(live: LiveWorkspace) -> FastAPI:
    store = live.store
    kit = WebKit(
        product_name="cohortflow sync",
        templates_dir=HERE / "templates",
        sessions=SessionManager(
            SqlSessionStore(sync_web_sessions, sync_web_users, write=store.transaction, read=store.engine.connect)
        ),
        accounts=SqlAccounts(sync_web_users, write=store.transaction, read=store.engine.connect),
        # Failed sign-ins count in the state database, so every sync serve process sees the same count.
        throttle=LoginThrottle(TableCounterStorage(store.engine, sync_rate_counters)),
        context=access.template_context,
    )
    filters.install(kit.env)
    app = kit.create_app(title="cohortflow sync web app")
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="sync-static")
    app.state.kit = kit
    app.state.live = live

    @app.exception_handler(SyncError)
    async def _sync_error(request: Request, exc: SyncError) -> HTMLResponse:
        status = status_for(exc)
        return kit.error_page(request, status, _TITLES.get(status, "Something went wrong"), exc.message)

    for module in (home, syncs, runs, models, audiences, sources, destinations):
        app.include_router(module.router)
    return app
