"""The one place where platform errors become HTTP responses.

Every error body is ``{"message": ...}`` like Braze's, and never carries a traceback.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

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
from cohortflow.redact import redact_urls
from cohortflow.wire.cohort_import import WireValidationError

log = structlog.get_logger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5.0


class MessageResponse(BaseModel):
    """Every error body (and some success bodies): ``{"message": ...}``."""

    message: str


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
    return JSONResponse({"message": redact_urls(error.message)}, status_code=status, headers=headers)


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
        return JSONResponse({"message": redact_urls("; ".join(parts)) or "invalid request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def _db_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # Unreachable, restarting or dropped database, or every pooled connection busy past the pool's timeout:
        # nothing is wrong with the request, so a retryable 503 rather than a 500.
        orig = getattr(exc, "orig", None)
        log.warning("database unavailable", error=type(orig or exc).__name__)
        unavailable = Unavailable("The platform database is unavailable; retry later")
        unavailable.retry_after = DATABASE_RETRY_AFTER_SECONDS
        return error_response(unavailable)

    app.add_exception_handler(OperationalError, _db_unavailable)
    app.add_exception_handler(PoolTimeout, _db_unavailable)

    @app.exception_handler(DBAPIError)
    async def _db_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return JSONResponse({"message": "Internal server error"}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # The client closed the connection before its body arrived: nothing failed here and nobody is left to
        # answer, so one calm line instead of an "unhandled error" and a traceback.
        log.info("client disconnected before sending the whole request", method=request.method, path=request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=type(exc).__name__)
        return JSONResponse({"message": "Internal server error"}, status_code=500)


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
    "title": "Error",
}
_ERROR_DESCRIPTIONS = {
    "400": "Invalid request (the message names the problem)",
    "401": "Missing, unknown or invalidated key",
    "404": "Not found in this workspace",
    "413": "Payload over 4 MB",
}


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what :func:`install_error_handlers` really answers.

    FastAPI documents a 422 for every validated input, but this API answers 400 (Braze's convention), and
    it cannot know which routes authenticate or look objects up; this fills in those responses once.
    """
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in doc.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                codes = []
                if "requestBody" in operation or operation.get("parameters"):
                    codes.append("400")
                if path != "/healthz":
                    codes.append("401")
                if "{" in path and not path.startswith("/partners/"):
                    codes.append("404")
                if "requestBody" in operation:
                    codes.append("413")
                for code in codes:
                    responses.setdefault(
                        code,
                        {
                            "description": _ERROR_DESCRIPTIONS[code],
                            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
                        },
                    )
        doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        doc.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
