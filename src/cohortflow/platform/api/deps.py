"""FastAPI dependencies: the runtime, and REST API key authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import authenticate_rest_key

_bearer = HTTPBearer(auto_error=False, description="A workspace REST API key")


def get_runtime(request: Request) -> PlatformRuntime:
    runtime: PlatformRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[PlatformRuntime, Depends(get_runtime)]


def rest_workspace(
    runtime: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The workspace id of the request's REST API key (``Authorization: Bearer``)."""
    with runtime.engine.connect() as conn:
        return authenticate_rest_key(conn, credentials.credentials if credentials else None)


RestWorkspace = Annotated[str, Depends(rest_workspace)]
