"""The one place where platform errors become HTTP responses.

Every error body is ``{"message": ...}`` like Braze's, and never carries a traceback.
"""

from __future__ import annotations

import math

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cohortflow.platform.errors import (
    AlreadyExists,
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlatformError,
    RateLimited,
    ResourceLocked,
    Unavailable,
)
from cohortflow.wire.cohort_import import WireValidationError

log = structlog.get_logger(__name__)

STATUS_BY_ERROR: dict[type[PlatformError], int] = {
    InvalidRequest: 400,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    NotFound: 404,
    AlreadyExists: 409,
    PayloadTooLarge: 413,
    ResourceLocked: 423,
    RateLimited: 429,
    Unavailable: 503,
}


def status_for(error: PlatformError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _seconds(delay: float | None) -> str:
    """``Retry-After`` takes whole seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(delay or 0)))


def error_response(error: PlatformError) -> JSONResponse:
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers = {
            "X-RateLimit-Limit": str(error.limit),
            "X-RateLimit-Remaining": str(error.remaining),
            "X-RateLimit-Reset": str(error.reset_at),
            "Retry-After": _seconds(error.retry_after),
        }
    elif isinstance(error, ResourceLocked | Unavailable) and error.retry_after is not None:
        headers = {"Retry-After": _seconds(error.retry_after)}
    return JSONResponse({"message": error.message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlatformError)
    async def _platform_error(_request: Request, exc: PlatformError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(WireValidationError)
    async def _wire_error(_request: Request, exc: WireValidationError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse({"message": "; ".join(parts) or "invalid request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def _db_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return error_response(Unavailable("Service temporarily unavailable, retry later"))

    @app.exception_handler(DBAPIError)
    async def _db_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return JSONResponse({"message": "Internal server error"}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=type(exc).__name__)
        return JSONResponse({"message": "Internal server error"}, status_code=500)
