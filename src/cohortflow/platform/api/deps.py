"""FastAPI dependencies: the runtime, and authentication by REST API key or operator token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cohortflow.platform.operator_tokens import Operator, authenticate_operator
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import KeyGrant, authenticate_rest_key, record_rest_key_use

_bearer = HTTPBearer(auto_error=False, description="A workspace REST API key")
_operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="An operator token (`cohortflow platform operator-token create`)",
)


# Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
# hop per dependency per request.


async def get_runtime(request: Request) -> PlatformRuntime:
    runtime: PlatformRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[PlatformRuntime, Depends(get_runtime)]


def rest_key(
    runtime: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyGrant:
    """The request's REST API key (``Authorization: Bearer``): which key, and the workspace it opens.

    A reading transaction (on SQLite it waits for no writer); the key's last use is written, in a transaction of
    its own, only when due (at most once a minute).
    """
    with runtime.read() as conn:
        grant = authenticate_rest_key(conn, credentials.credentials if credentials else None, record_use=False)
    if grant.use_unrecorded:
        with runtime.transaction() as conn:
            record_rest_key_use(conn, grant)
    return grant


async def rest_workspace(grant: Annotated[KeyGrant, Depends(rest_key)]) -> str:
    """The workspace id of the request's REST API key."""
    return grant.workspace_id


RestKey = Annotated[KeyGrant, Depends(rest_key)]
RestWorkspace = Annotated[str, Depends(rest_workspace)]


def operator(
    runtime: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)],
) -> Operator:
    with runtime.transaction() as conn:
        return authenticate_operator(conn, credentials.credentials if credentials else None)


OperatorAuth = Annotated[Operator, Depends(operator)]
