"""Workspaces and their keys: REST API keys (``Authorization: Bearer``) and SDK app keys (``api_key``).

Both kinds have the same lifecycle: create (the key is shown once), list (masked, with last use), revoke. Several
may be live at once, so a key is rotated by creating the new one, moving clients to it, and revoking the old one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Table, insert, select

from cohortflow.clock import utcnow
from cohortflow.keys import IssuedKey
from cohortflow.platform import key_store
from cohortflow.platform.errors import AuthenticationFailed, InvalidRequest, NotFound
from cohortflow.platform.key_store import KeyInfo
from cohortflow.platform.store.schema import app_keys, rest_api_keys, workspaces

REST_KEY_KIND = "cfrest"
APP_KEY_KIND = "cfapp"
MAX_KEY_NAME_LENGTH = 200


@dataclass(frozen=True)
class NewWorkspace:
    id: str
    name: str
    rest_api_key: IssuedKey
    app_key: IssuedKey


@dataclass(frozen=True)
class KeyGrant:
    """What an authenticated workspace key grants: its workspace (and which key it was, for self-revocation)."""

    key_id: int
    workspace_id: str
    # Authenticated without recording the use (``record_use=False``) although it is due: see record_key_use.
    use_unrecorded: bool = False


def create_workspace(conn: Connection, name: str) -> NewWorkspace:
    if not name.strip():
        raise ValueError("workspace name must be a non-empty string")
    workspace_id = f"ws_{secrets.token_hex(8)}"
    now = utcnow()
    conn.execute(insert(workspaces).values(id=workspace_id, name=name.strip(), created_at=now))
    return NewWorkspace(
        id=workspace_id,
        name=name.strip(),
        rest_api_key=create_rest_api_key(conn, workspace_id)[1],
        app_key=create_app_key(conn, workspace_id)[1],
    )


def get_workspace(conn: Connection, workspace_id: str, *, for_update: bool = False) -> dict[str, object]:
    """The workspace; ``for_update`` locks its row (PostgreSQL) so that key revocations run one at a time."""
    query = select(workspaces).where(workspaces.c.id == workspace_id)
    row = conn.execute(query.with_for_update() if for_update else query).mappings().first()
    if row is None:
        raise NotFound(f"workspace {workspace_id!r} does not exist")
    return dict(row)


def list_workspaces(conn: Connection) -> list[dict[str, object]]:
    return [dict(r) for r in conn.execute(select(workspaces).order_by(workspaces.c.created_at)).mappings()]


# --- both key kinds ------------------------------------------------------------------------------------


def _create(conn: Connection, table: Table, kind: str, workspace_id: str, name: str) -> tuple[KeyInfo, IssuedKey]:
    get_workspace(conn, workspace_id)
    name = name.strip()
    if len(name) > MAX_KEY_NAME_LENGTH or "\x00" in name:
        raise InvalidRequest(f"key name must be at most {MAX_KEY_NAME_LENGTH} characters")
    return key_store.insert_key(conn, table, kind, workspace_id=workspace_id, name=name)


def _list(conn: Connection, table: Table, workspace_id: str) -> list[KeyInfo]:
    get_workspace(conn, workspace_id)
    return key_store.list_keys(conn, table, [table.c.workspace_id == workspace_id])


def _authenticate(conn: Connection, table: Table, plain: object, invalid: str, record_use: bool) -> KeyGrant:
    row = key_store.find_live(conn, table, plain, table.c.workspace_id)
    if row is None:
        raise AuthenticationFailed(invalid)
    if record_use:
        key_store.touch_last_used(conn, table, row)
    return KeyGrant(
        key_id=int(row.id),
        workspace_id=str(row.workspace_id),
        use_unrecorded=not record_use and key_store.use_is_stale(row),
    )


def record_rest_key_use(conn: Connection, grant: KeyGrant) -> None:
    """Record the use of a REST API key authenticated with ``record_use=False`` (in a reading transaction)."""
    row = conn.execute(
        select(rest_api_keys.c.id, rest_api_keys.c.last_used_at).where(rest_api_keys.c.id == grant.key_id)
    ).first()
    if row is not None:
        key_store.touch_last_used(conn, rest_api_keys, row)


# --- REST API keys -------------------------------------------------------------------------------------


def create_rest_api_key(conn: Connection, workspace_id: str, name: str = "") -> tuple[KeyInfo, IssuedKey]:
    return _create(conn, rest_api_keys, REST_KEY_KIND, workspace_id, name)


def list_rest_api_keys(conn: Connection, workspace_id: str) -> list[KeyInfo]:
    return _list(conn, rest_api_keys, workspace_id)


def authenticate_rest_key(conn: Connection, plain: str | None, *, record_use: bool = True) -> KeyGrant:
    """The workspace a live REST API key opens; records its use at most once a minute (``record_use=False``:
    only reads, and the grant says whether :func:`record_rest_key_use` is due)."""
    if not plain:
        raise AuthenticationFailed("Invalid API key: missing Authorization: Bearer header")
    return _authenticate(conn, rest_api_keys, plain, "Invalid API key", record_use)


def revoke_rest_api_key(
    conn: Connection, workspace_id: str, key_ref: str, *, acting_key_id: int | None = None
) -> KeyInfo:
    """Revoke a REST API key by id or masked prefix; its next request gets 401.

    ``acting_key_id`` is the key that authenticated an HTTP request: it may revoke itself (the last step of a
    rotation) unless it is the workspace's last live key, which would lock the workspace out of the API.
    """
    # Locked: two keys revoking themselves at once must not both see the other one live.
    get_workspace(conn, workspace_id, for_update=True)
    scope = [rest_api_keys.c.workspace_id == workspace_id]
    row = key_store.live_key_by_ref(conn, rest_api_keys, scope, key_ref, f"REST API key in {workspace_id!r}")
    if acting_key_id == int(row.id) and key_store.live_count(conn, rest_api_keys, scope) <= 1:
        raise InvalidRequest(
            "This REST API key is the workspace's last live key and cannot revoke itself: create another key first"
        )
    return key_store.end_key(conn, rest_api_keys, int(row.id))


# --- app keys ------------------------------------------------------------------------------------------


def create_app_key(conn: Connection, workspace_id: str, name: str = "") -> tuple[KeyInfo, IssuedKey]:
    """Issue an app key; older ones keep working until revoked (apps in the field still ship them)."""
    return _create(conn, app_keys, APP_KEY_KIND, workspace_id, name)


def list_app_keys(conn: Connection, workspace_id: str) -> list[KeyInfo]:
    return _list(conn, app_keys, workspace_id)


def authenticate_app_key(conn: Connection, plain: str | None) -> KeyGrant:
    """The workspace an SDK app key belongs to; records its use at most once a minute."""
    if not plain:
        raise AuthenticationFailed("Invalid app key: missing api_key")
    return _authenticate(conn, app_keys, plain, "Invalid app key", True)


def revoke_app_key(conn: Connection, workspace_id: str, key_ref: str) -> KeyInfo:
    get_workspace(conn, workspace_id)
    scope = [app_keys.c.workspace_id == workspace_id]
    row = key_store.live_key_by_ref(conn, app_keys, scope, key_ref, f"app key in {workspace_id!r}")
    return key_store.end_key(conn, app_keys, int(row.id))
