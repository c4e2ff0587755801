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
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cohortflow.platform import sdk
from cohortflow.platform.api.body import decode_json
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import WriterBusy
from cohortflow.platform.workspaces import authenticate_app_key

PATH = "/sdk/data"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def ingest_device_data(runtime: PlatformRuntime, body: sdk.SdkDataRequest, *, wait: bool = True) -> sdk.SdkDataResponse:
    """Authenticate the app key and ingest, in one transaction (the route and the lane both call this);
    ``wait`` as in :meth:`PlatformRuntime.transaction`."""
    with runtime.transaction(wait=wait) as conn:
        workspace_id = authenticate_app_key(conn, body.api_key).workspace_id
        return sdk.ingest(conn, workspace_id, body, now=runtime.clock())


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


class SdkDataLane:
    """ASGI middleware serving valid ``POST /sdk/data`` requests without the framework's per-request work.

    ``handlers`` is the application's exception handler mapping (``app.exception_handlers``, read at each
    error), so an error raised by the domain is answered exactly as the route would answer it.
    """

    def __init__(
        self,
        app: ASGIApp,
        runtime: PlatformRuntime,
        handlers: Mapping[Any, Callable[..., Any]],
        max_bytes: int,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.handlers = handlers
        self.max_bytes = max_bytes
        self.group_commit = _GroupCommit(runtime) if runtime.single_writer else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = _json_content_length(scope)
        if declared is None or declared > self.max_bytes:
            # Chunked, oversized or not declared JSON: the route's stack decides (413, or its 400).
            await self.app(scope, receive, send)
            return
        raw, first_messages, complete = await _read_body(receive, declared)
        body = _parse(raw) if complete else None
        if body is None:
            await self.app(scope, _replay(first_messages, receive), send)
            return
        try:
            if self.group_commit is not None:
                result = await self.group_commit.submit(body)
            else:
                result = await run_in_threadpool(ingest_device_data, self.runtime, body)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response: Response = await handler(Request(scope), exc)
            await response(scope, receive, send)
            return
        payload = result.__pydantic_serializer__.to_json(result)
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


def _json_content_length(scope: Scope) -> int | None:
    """The declared length of a body declared as JSON, else None."""
    length: int | None = None
    json = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
    return length if json else None


async def _read_body(receive: Receive, declared: int) -> tuple[bytes, list[Message], bool]:
    """The body as received; ``complete`` is False when the client disconnected or sent more than it declared."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", messages, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > declared:
            return b"", messages, False
        if not message.get("more_body", False):
            return b"".join(chunks), messages, True


def _parse(raw: bytes) -> sdk.SdkDataRequest | None:
    """The request, or None when the body needs the route's error messages. Any failure qualifies: the route
    decodes and validates again and answers it (and a JSON document orjson refuses but the route's decoder
    accepts, such as ``NaN``, gets the route's answer too)."""
    try:
        return sdk.SdkDataRequest.model_validate(decode_json(raw))
    except Exception:
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
