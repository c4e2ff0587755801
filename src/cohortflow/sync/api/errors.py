"""The one place where sync errors become HTTP statuses (for the API's JSON and the web app's pages alike).

Every API error body is ``{"message": ...}``; tracebacks never leave the process.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from cohortflow.sync.errors import (
    ConfigError,
    DestinationError,
    Forbidden,
    InvalidInput,
    ModelError,
    ReconcileUnsupported,
    RunFinished,
    SourceUnavailable,
    StateUnavailable,
    SyncDisabled,
    SyncError,
    SyncLocked,
    Unauthenticated,
    UnknownObject,
)
from cohortflow.sync.state.store import state_unavailable_message

log = structlog.get_logger(__name__)

STATUS_BY_ERROR: dict[type[SyncError], int] = {
    InvalidInput: 400,
    ConfigError: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    UnknownObject: 404,
    SyncDisabled: 409,
    SyncLocked: 409,
    RunFinished: 409,
    ReconcileUnsupported: 409,
    ModelError: 422,
    # The warehouse or the destination failed, not the request: a bad gateway, whatever status it answered.
    SourceUnavailable: 502,
    DestinationError: 502,
    StateUnavailable: 503,
}


def status_for(error: SyncError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, state_url: str) -> None:
    @app.exception_handler(SyncError)
    async def _sync_error(_request: Request, exc: SyncError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"message": exc.message}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": _validation_message(exc)}, status_code=400)

    @app.exception_handler(DBAPIError)
    async def _state_down(_request: Request, exc: DBAPIError) -> JSONResponse:
        message = state_unavailable_message(state_url, exc)
        log.error("state database error", error=message)
        return JSONResponse({"message": message}, status_code=503)
