"""An ASGI app built when its first request arrives, for a part of the server that most processes never serve."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send


class BuiltOnFirstUse:
    """Mounted in place of the app ``build`` returns, which is built (its modules imported) on the first request.

    The build runs on the event loop, without awaiting, so requests arriving together still build it once.
    """

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)
