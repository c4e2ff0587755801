"""What the short ways through the HTTP stack (:mod:`.sdk_lane`, :mod:`.track_lane`) share: a lane serves the
common valid request of one endpoint with the route's domain call and the route's exception handlers, and hands
anything else (a body that is not JSON or fails validation, no ``Content-Length``, a body over the limit) on to
the route with the body it has read, so error messages keep one code path."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON_HEADERS = [(b"content-type", b"application/json")]

Parsed = TypeVar("Parsed")


def route_json(raw: bytes) -> Any:
    """Decode a body as the routes do (Starlette's ``Request.json``, the standard library), not with orjson: the
    two disagree on some documents (orjson reads an integer past 64 bits as a float, which a lane would store
    where the route refuses the body), and a lane must take only what the route would take the same way."""
    return json.loads(raw)


class JsonLane(Generic[Parsed]):
    """ASGI middleware serving valid ``POST`` requests to ``path`` without the framework's per-request work.

    ``handlers`` is the application's exception handler mapping (``app.exception_handlers``, read at each
    error), so an error raised by the domain is answered exactly as the route would answer it. Subclasses say
    what a servable request is (:meth:`parse`) and serve it (:meth:`serve`, the body of a 201).
    """

    path: str

    def __init__(self, app: ASGIApp, handlers: Mapping[Any, Callable[..., Any]], max_bytes: int) -> None:
        self.app = app
        self.handlers = handlers
        self.max_bytes = max_bytes

    def parse(self, raw: bytes, scope: Scope) -> Parsed | None:
        """The request, or None when it needs the route (its error messages, or a rarer shape)."""
        raise NotImplementedError

    async def serve(self, request: Parsed) -> bytes:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = json_content_length(scope)
        if declared is None or declared > self.max_bytes:
            # Chunked, oversized or not declared JSON: the route's stack decides (413, or its 400).
            await self.app(scope, receive, send)
            return
        raw, first_messages, complete = await read_body(receive, declared)
        request = self.parse(raw, scope) if complete else None
        if request is None:
            await self.app(scope, replay(first_messages, receive), send)
            return
        try:
            payload = await self.serve(request)
        except Exception as exc:
            await answer_error(self.handlers, exc, scope, receive, send)
            return
        await send_json(send, 201, payload)


def json_content_length(scope: Scope) -> int | None:
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


async def read_body(receive: Receive, declared: int) -> tuple[bytes, list[Message], bool]:
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


def replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the application, giving back first the messages a lane already read."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def handler_for(handlers: Mapping[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Any] | None:
    """The application's handler for ``exc`` (``app.exception_handlers``), as Starlette would pick it."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def answer_error(
    handlers: Mapping[Any, Callable[..., Any]], exc: Exception, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer ``exc`` exactly as the route would; an exception without a handler propagates."""
    handler = handler_for(handlers, exc)
    if handler is None:
        raise exc
    response: Response = await handler(Request(scope), exc)
    await response(scope, receive, send)


async def send_json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
