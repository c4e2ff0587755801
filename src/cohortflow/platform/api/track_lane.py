"""The short way through the HTTP stack for ``POST /users/track``, the bulk of a profile load.

A warehouse sync or a customer's import sends ``/users/track`` with 75 objects a request, hundreds of requests a
second. Through FastAPI each request also paid the router, the dependency solver, response validation, a
thread-pool hop per dependency and a transaction of its own for the REST API key (BENCHMARKS.md). This lane
serves a request that has a ``Bearer`` key and a body that decodes and validates with the route's own model
(:class:`~cohortflow.platform.track_request.TrackRequest`): the key is checked on the request's own connection, just
before its writes, and the domain applies it as the route's :func:`~cohortflow.platform.tracking.track` does.
Anything else goes on to the route in :mod:`cohortflow.platform.api.routes.users`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Scope

from cohortflow.platform import track_request, tracking
from cohortflow.platform.api.lane_io import JsonLane, route_json
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import retry_collisions
from cohortflow.platform.workspaces import authenticate_rest_key

PATH = "/users/track"


def track_with_rest_key(runtime: PlatformRuntime, rest_api_key: str, body: track_request.TrackRequest) -> bytes:
    """Authenticate the key and apply the request; the route's response body (201).

    The key is looked up by every request, just before its writes: a revoked key is refused at once (nothing is
    cached). A request that one statement applies (:func:`tracking.upsert_plan`) runs without a transaction
    around it, since that statement is all or nothing by itself: two round trips fewer (``BEGIN``, ``COMMIT``).
    Either way, work that PostgreSQL aborts for a deadlock with a concurrent request runs again, as the route's.
    """
    now = runtime.clock()
    upsert = tracking.upsert_plan(runtime.engine.dialect.name, body)
    if upsert is not None and upsert.single_statement:
        single = upsert

        def one_statement() -> track_request.TrackResponse:
            with runtime.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                workspace_id = authenticate_rest_key(conn, rest_api_key).workspace_id
                return tracking.apply_upsert(conn, workspace_id, single, now)

        result = retry_collisions(one_statement)
    else:

        def general(conn: Connection) -> track_request.TrackResponse:
            workspace_id = authenticate_rest_key(conn, rest_api_key).workspace_id
            return tracking.track(conn, workspace_id, body, now=now)

        result = runtime.in_transaction(general)
    return result.__pydantic_serializer__.to_json(result, exclude_none=True)


class UsersTrackLane(JsonLane[tuple[str, track_request.TrackRequest]]):
    """Valid ``POST /users/track`` requests with a REST API key, served without the framework's per-request work."""

    path = PATH

    def __init__(
        self, app: ASGIApp, runtime: PlatformRuntime, handlers: Mapping[Any, Callable[..., Any]], max_bytes: int
    ) -> None:
        super().__init__(app, handlers, max_bytes)
        self.runtime = runtime

    def parse(self, raw: bytes, scope: Scope) -> tuple[str, track_request.TrackRequest] | None:
        key = bearer_token(scope)
        if key is None:
            return None  # the route answers a missing key
        try:
            return key, track_request.TrackRequest.model_validate(route_json(raw))
        except Exception:
            return None  # the route decodes and validates again, and answers it

    async def serve(self, request: tuple[str, track_request.TrackRequest]) -> bytes:
        return await run_in_threadpool(track_with_rest_key, self.runtime, *request)


def bearer_token(scope: Scope) -> str | None:
    """The credentials of the first ``Authorization: Bearer`` header, read as the route's ``HTTPBearer`` reads it;
    None when it would find none."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None
