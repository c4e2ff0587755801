"""The short way through the HTTP stack for ``POST /sdk/data``, the platform's most frequent request.

Every installed app sends one request per session, so the SDK endpoint sees many small requests. Through
FastAPI each one cost about 2 ms of CPU around 0.8 ms of domain work (routing across every route, the
dependency solver, the body parser, response validation, a thread-pool hop; BENCHMARKS.md). This lane sits in
front of the application and serves the common request, a body that decodes and validates, with the same
model (:class:`~cohortflow.platform.sdk.SdkDataRequest`), the same domain functions and the same exception
handlers as the documented route in :mod:`cohortflow.platform.api.routes.sdk`. Anything else (a body that is
not JSON or fails validation, no ``Content-Length``, a body over the limit) goes on to that route with the body
it has read, so error messages keep one code path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Scope

from cohortflow.platform import sdk
from cohortflow.platform.api.lane_io import JsonLane, route_json
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import WriterBusy, retry_collisions
from cohortflow.platform.workspaces import authenticate_app_key

PATH = "/sdk/data"


def ingest_device_data(runtime: PlatformRuntime, body: sdk.SdkDataRequest, *, wait: bool = True) -> sdk.SdkDataResponse:
    """Authenticate the app key and ingest, in one transaction (the route and the lane both call this);
    ``wait`` as in :meth:`PlatformRuntime.transaction`. A transaction that PostgreSQL aborts for a deadlock with a
    concurrent one (an identification merging into a user that a ``/users/track`` holds) runs again."""
    now = runtime.clock()

    def attempt() -> sdk.SdkDataResponse:
        with runtime.transaction(wait=wait) as conn:
            workspace_id = authenticate_app_key(conn, body.api_key).workspace_id
            return sdk.ingest(conn, workspace_id, body, now=now)

    return retry_collisions(attempt)


def ingest_device_data_batch(
    runtime: PlatformRuntime, bodies: list[sdk.SdkDataRequest], *, wait: bool = True
) -> list[sdk.SdkDataResponse | Exception]:
    """Several requests in one transaction (a group commit): a request that fails leaves nothing and does not
    touch the others, and its outcome is its exception. An app key is authenticated once for the batch (the same
    transaction would find the same key).

    The batch first runs without a savepoint per request, which cost about a fifth of its CPU (a SAVEPOINT and a
    RELEASE statement each) for requests that almost never fail. When one does fail, that whole attempt is rolled
    back and the batch runs again with a savepoint around each request, so the failure is the only one undone.
    """
    if len(bodies) == 1:
        try:
            return [ingest_device_data(runtime, bodies[0], wait=wait)]
        except (WriterBusy, DBAPIError):
            raise
        except Exception as exc:
            return [exc]
    try:
        return _ingest_together(runtime, bodies, wait=wait, savepoints=False)
    except _RequestFailed:
        return _ingest_together(runtime, bodies, wait=wait, savepoints=True)


class _RequestFailed(Exception):
    """A request of a batch run without savepoints failed: the transaction is rolled back."""


def _ingest_together(
    runtime: PlatformRuntime, bodies: list[sdk.SdkDataRequest], *, wait: bool, savepoints: bool
) -> list[sdk.SdkDataResponse | Exception]:
    outcomes: list[sdk.SdkDataResponse | Exception] = []
    with runtime.transaction(wait=wait) as conn:
        workspaces: dict[str, str] = {}
        for body in bodies:
            try:
                with conn.begin_nested() if savepoints else nullcontext():
                    key = body.api_key or ""
                    if key not in workspaces:
                        workspaces[key] = authenticate_app_key(conn, body.api_key).workspace_id
                    outcomes.append(sdk.ingest(conn, workspaces[key], body, now=runtime.clock()))
            except DBAPIError:
                # The database failed, not the request: the transaction may be unusable, so the whole batch fails.
                raise
            except Exception as exc:
                if not savepoints:
                    raise _RequestFailed from exc
                outcomes.append(exc)
    return outcomes


class _GroupCommit:
    """Valid SDK requests on SQLite, committed together when they arrive together.

    Requests whose bytes arrive in the same turn of the event loop are collected, then run on the event loop
    in one transaction when the writer lock is free: SQLite's writes are serialized anyway, and a hop to the
    thread pool cost 0.6-0.8 ms of CPU a request in GIL and lock hand-offs between threads, more than the
    request's own work (BENCHMARKS.md); one commit and one key lookup then serve the whole batch. A batch that
    would wait for the writer waits in the thread pool instead, so the event loop never blocks on it. A lone
    request is a batch of one, without delay. Every response is sent after its batch committed.
    """

    def __init__(self, runtime: PlatformRuntime) -> None:
        self.runtime = runtime
        self.pending: list[tuple[sdk.SdkDataRequest, asyncio.Future[sdk.SdkDataResponse]]] = []
        self.running: set[asyncio.Task[None]] = set()

    async def submit(self, body: sdk.SdkDataRequest) -> sdk.SdkDataResponse:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[sdk.SdkDataResponse] = loop.create_future()
        if not self.pending:
            # Runs after the tasks already scheduled in this turn, which are the other requests that arrived.
            task = loop.create_task(self._commit())
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        self.pending.append((body, future))
        return await future

    async def _commit(self) -> None:
        batch, self.pending = self.pending, []
        bodies = [body for body, _ in batch]
        outcomes: list[sdk.SdkDataResponse | Exception]
        try:
            try:
                outcomes = ingest_device_data_batch(self.runtime, bodies, wait=False)
            except WriterBusy:
                outcomes = await run_in_threadpool(ingest_device_data_batch, self.runtime, bodies)
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


class SdkDataLane(JsonLane[sdk.SdkDataRequest]):
    """Valid ``POST /sdk/data`` requests, served without the framework's per-request work."""

    path = PATH

    def __init__(
        self,
        app: ASGIApp,
        runtime: PlatformRuntime,
        handlers: Mapping[Any, Callable[..., Any]],
        max_bytes: int,
    ) -> None:
        super().__init__(app, handlers, max_bytes)
        self.runtime = runtime
        self.group_commit = _GroupCommit(runtime) if runtime.single_writer else None

    def parse(self, raw: bytes, scope: Scope) -> sdk.SdkDataRequest | None:
        return _parse(raw)

    async def serve(self, request: sdk.SdkDataRequest) -> bytes:
        if self.group_commit is not None:
            result = await self.group_commit.submit(request)
        else:
            result = await run_in_threadpool(ingest_device_data, self.runtime, request)
        return result.__pydantic_serializer__.to_json(result)


def _parse(raw: bytes) -> sdk.SdkDataRequest | None:
    """The request, or None when the body needs the route's error messages. Any failure qualifies: the route
    decodes and validates again and answers it."""
    try:
        return sdk.SdkDataRequest.model_validate(route_json(raw))
    except Exception:
        return None
