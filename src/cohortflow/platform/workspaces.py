"""Workspaces and their REST API keys and SDK app keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Table, insert, select, update

from cohortflow.clock import utcnow
from cohortflow.keys import IssuedKey, digests_match, hash_key, issue_key
from cohortflow.platform.errors import AuthenticationFailed, NotFound
from cohortflow.platform.store.schema import app_keys, rest_api_keys, workspaces

REST_KEY_KIND = "cfrest"
APP_KEY_KIND = "cfapp"


@dataclass(frozen=True)
class NewWorkspace:
    id: str
    name: str
    rest_api_key: IssuedKey
    app_key: IssuedKey


def create_workspace(conn: Connection, name: str) -> NewWorkspace:
    if not name.strip():
        raise ValueError("workspace name must be a non-empty string")
    workspace_id = f"ws_{secrets.token_hex(8)}"
    now = utcnow()
    conn.execute(insert(workspaces).values(id=workspace_id, name=name.strip(), created_at=now))
    return NewWorkspace(
        id=workspace_id,
        name=name.strip(),
        rest_api_key=create_rest_api_key(conn, workspace_id),
        app_key=create_app_key(conn, workspace_id),
    )


def get_workspace(conn: Connection, workspace_id: str) -> dict[str, object]:
    row = conn.execute(select(workspaces).where(workspaces.c.id == workspace_id)).mappings().first()
    if row is None:
        raise NotFound(f"workspace {workspace_id!r} does not exist")
    return dict(row)


def list_workspaces(conn: Connection) -> list[dict[str, object]]:
    return [dict(r) for r in conn.execute(select(workspaces).order_by(workspaces.c.created_at)).mappings()]


def _issue(conn: Connection, table: Table, kind: str, workspace_id: str, name: str) -> IssuedKey:
    get_workspace(conn, workspace_id)
    key = issue_key(kind)
    conn.execute(
        insert(table).values(
            workspace_id=workspace_id,
            key_hash=key.digest,
            display_prefix=key.display_prefix,
            name=name,
            created_at=utcnow(),
        )
    )
    return key


def create_rest_api_key(conn: Connection, workspace_id: str, name: str = "") -> IssuedKey:
    return _issue(conn, rest_api_keys, REST_KEY_KIND, workspace_id, name)


def create_app_key(conn: Connection, workspace_id: str, name: str = "") -> IssuedKey:
    return _issue(conn, app_keys, APP_KEY_KIND, workspace_id, name)


def authenticate_rest_key(conn: Connection, plain: str | None) -> str:
    """The workspace id a live REST API key belongs to."""
    if not plain:
        raise AuthenticationFailed("Invalid API key: missing Authorization: Bearer header")
    digest = hash_key(plain)
    row = conn.execute(
        select(rest_api_keys.c.id, rest_api_keys.c.workspace_id, rest_api_keys.c.key_hash).where(
            rest_api_keys.c.key_hash == digest, rest_api_keys.c.revoked_at.is_(None)
        )
    ).first()
    if row is None or not digests_match(row.key_hash, digest):
        raise AuthenticationFailed("Invalid API key")
    return str(row.workspace_id)


def authenticate_app_key(conn: Connection, plain: str | None) -> str:
    """The workspace id an SDK app key belongs to."""
    if not plain:
        raise AuthenticationFailed("Invalid app key: missing api_key")
    digest = hash_key(plain)
    row = conn.execute(
        select(app_keys.c.workspace_id, app_keys.c.key_hash).where(
            app_keys.c.key_hash == digest, app_keys.c.revoked_at.is_(None)
        )
    ).first()
    if row is None or not digests_match(row.key_hash, digest):
        raise AuthenticationFailed("Invalid app key")
    return str(row.workspace_id)


def revoke_rest_api_key(conn: Connection, workspace_id: str, display_prefix: str) -> None:
    result = conn.execute(
        update(rest_api_keys)
        .where(
            rest_api_keys.c.workspace_id == workspace_id,
            rest_api_keys.c.display_prefix == display_prefix,
            rest_api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    if result.rowcount == 0:
        raise NotFound(f"no live REST API key starting {display_prefix!r} in workspace {workspace_id!r}")
