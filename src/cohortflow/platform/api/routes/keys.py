"""Key management over HTTP (an admin API; Braze does this in its dashboard, which will call the same domain).

- Workspace keys, authenticated by a REST API key of that workspace: ``/api_keys`` (REST API keys) and
  ``/app_keys`` (SDK app keys): list, create (the key is in the answer once), revoke.
- Partner API keys, global to the platform, authenticated by an operator token: ``/admin/partners/{name}/keys``:
  list, rotate (a second live key), revoke.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.keys import IssuedKey
from cohortflow.platform import partners, workspaces
from cohortflow.platform.api.deps import OperatorAuth, RestKey, RestWorkspace, Runtime
from cohortflow.platform.bounds import RowId
from cohortflow.platform.key_store import KeyInfo

router = APIRouter(tags=["keys"])


class KeyOut(BaseModel):
    id: int
    masked_key: str = Field(description="The key's kind and first characters; the key itself is never shown again.")
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    revoked_at: datetime | None
    state: str = Field(description="`active` or `revoked`.")

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(
            id=info.id,
            masked_key=info.masked_key,
            name=info.name,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
            revoked_at=info.revoked_at,
            state=info.state,
        )


class NewKeyOut(KeyOut):
    key: str = Field(description="The new key. Shown only in this answer: it is stored hashed.")

    @classmethod
    def issued(cls, info: KeyInfo, key: IssuedKey) -> NewKeyOut:
        return cls(**KeyOut.of(info).model_dump(), key=key.plain)


class KeyList(BaseModel):
    keys: list[KeyOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=workspaces.MAX_KEY_NAME_LENGTH, description="What the key is for.")


# --- REST API keys ---------------------------------------------------------------------------------------


@router.get("/api_keys", response_model=KeyList, summary="List the workspace's REST API keys (masked)")
def list_api_keys(runtime: Runtime, workspace_id: RestWorkspace) -> KeyList:
    with runtime.transaction() as conn:
        return KeyList(keys=[KeyOut.of(i) for i in workspaces.list_rest_api_keys(conn, workspace_id)])


@router.post("/api_keys", status_code=201, response_model=NewKeyOut, summary="Create a REST API key (shown once)")
def create_api_key(runtime: Runtime, workspace_id: RestWorkspace, body: KeyCreate | None = None) -> NewKeyOut:
    with runtime.transaction() as conn:
        info, key = workspaces.create_rest_api_key(conn, workspace_id, body.name if body else "")
    return NewKeyOut.issued(info, key)


@router.post(
    "/api_keys/{key_id}/revoke",
    response_model=KeyOut,
    summary="Revoke a REST API key",
    description="From the next request on the key gets 401. A key may revoke itself unless it is the workspace's "
    "last live key (400).",
)
def revoke_api_key(key_id: RowId, runtime: Runtime, grant: RestKey) -> KeyOut:
    with runtime.transaction() as conn:
        info = workspaces.revoke_rest_api_key(conn, grant.workspace_id, str(key_id), acting_key_id=grant.key_id)
    return KeyOut.of(info)


# --- app keys ----------------------------------------------------------------------------------------------


@router.get("/app_keys", response_model=KeyList, summary="List the workspace's SDK app keys (masked)")
def list_app_keys(runtime: Runtime, workspace_id: RestWorkspace) -> KeyList:
    with runtime.transaction() as conn:
        return KeyList(keys=[KeyOut.of(i) for i in workspaces.list_app_keys(conn, workspace_id)])


@router.post(
    "/app_keys",
    status_code=201,
    response_model=NewKeyOut,
    summary="Create an app key (shown once); older app keys keep working until revoked",
)
def create_app_key(runtime: Runtime, workspace_id: RestWorkspace, body: KeyCreate | None = None) -> NewKeyOut:
    with runtime.transaction() as conn:
        info, key = workspaces.create_app_key(conn, workspace_id, body.name if body else "")
    return NewKeyOut.issued(info, key)


@router.post("/app_keys/{key_id}/revoke", response_model=KeyOut, summary="Revoke an app key")
def revoke_app_key(key_id: RowId, runtime: Runtime, workspace_id: RestWorkspace) -> KeyOut:
    with runtime.transaction() as conn:
        return KeyOut.of(workspaces.revoke_app_key(conn, workspace_id, str(key_id)))


# --- partner API keys (operator) ---------------------------------------------------------------------------


@router.get(
    "/admin/partners/{name}/keys",
    response_model=KeyList,
    tags=["admin"],
    summary="List a partner's API keys (masked; operator token)",
)
def list_partner_keys(name: str, runtime: Runtime, _operator: OperatorAuth) -> KeyList:
    with runtime.transaction() as conn:
        return KeyList(keys=[KeyOut.of(i) for i in partners.list_partner_keys(conn, name)])


@router.post(
    "/admin/partners/{name}/keys",
    status_code=201,
    response_model=NewKeyOut,
    tags=["admin"],
    summary="Rotate: issue a new partner API key (shown once) while the current one keeps working",
    description="At most two keys are live: revoke the old one once the partner uses the new one (400 otherwise).",
)
def rotate_partner_key(name: str, runtime: Runtime, _operator: OperatorAuth) -> NewKeyOut:
    with runtime.transaction() as conn:
        info, key = partners.rotate_partner_key(conn, name)
    return NewKeyOut.issued(info, key)


@router.post(
    "/admin/partners/{name}/keys/{key_id}/revoke",
    response_model=KeyOut,
    tags=["admin"],
    summary="Revoke a partner API key (not the partner's last live one)",
)
def revoke_partner_key(name: str, key_id: RowId, runtime: Runtime, _operator: OperatorAuth) -> KeyOut:
    with runtime.transaction() as conn:
        return KeyOut.of(partners.revoke_partner_key(conn, name, str(key_id)))
