"""Dashboard users: who may sign in to the dashboard, with which role, in which workspaces.

Two roles, as in the issue: an **admin** manages keys, partners and dashboard users; a **marketer** works on
segments, campaigns and Canvas and never sees a key. A user sees only the workspaces granted to it; another
workspace does not exist for it (``NotFound``, so the dashboard answers 404 and reveals nothing).

Sessions are in the platform database (``dashboard_sessions``, through the kit's
:class:`~cohortflow.web.accounts.SqlSessionStore`): every server process reads the same table, and logging out,
a new password or disabling a user ends its sessions at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound, PermissionDenied
from cohortflow.platform.store.schema import dashboard_sessions, dashboard_user_workspaces, dashboard_users
from cohortflow.platform.workspaces import get_workspace
from cohortflow.web.accounts import generate_password, normalize_email
from cohortflow.web.passwords import hash_password


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"


@dataclass(frozen=True)
class DashboardUser:
    id: int
    email: str
    role: Role
    created_at: datetime
    last_login_at: datetime | None
    workspace_ids: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def _normalize_email(email: str) -> str:
    try:
        return normalize_email(email)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def create_user(
    conn: Connection, email: str, role: str, password: str, workspace_ids: Sequence[str] = ()
) -> DashboardUser:
    normalized = _normalize_email(email)
    try:
        parsed_role = Role(role)
    except ValueError as exc:
        raise InvalidRequest(f"role must be one of {', '.join(r.value for r in Role)}") from exc
    try:
        password_hash = hash_password(password)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    for workspace_id in workspace_ids:
        get_workspace(conn, workspace_id)
    try:
        with conn.begin_nested():
            user_id = conn.execute(
                insert(dashboard_users)
                .values(email=normalized, password_hash=password_hash, role=parsed_role.value, created_at=utcnow())
                .returning(dashboard_users.c.id)
            ).scalar_one()
    except IntegrityError as exc:
        raise AlreadyExists(f"a dashboard user {normalized!r} already exists") from exc
    for workspace_id in dict.fromkeys(workspace_ids):
        conn.execute(insert(dashboard_user_workspaces).values(user_id=user_id, workspace_id=workspace_id))
    return get_user(conn, int(user_id))


def grant_workspace(conn: Connection, user_id: int, workspace_id: str) -> DashboardUser:
    get_workspace(conn, workspace_id)
    user = get_user(conn, user_id)
    if workspace_id not in user.workspace_ids:
        conn.execute(insert(dashboard_user_workspaces).values(user_id=user_id, workspace_id=workspace_id))
    return get_user(conn, user_id)


def add_to_workspace(conn: Connection, email: str, role: str, workspace_id: str) -> tuple[DashboardUser, str | None]:
    """Give ``email`` access to the workspace: a new account with a generated password (returned, to show once),
    or an existing account granted this workspace too (its role unchanged; no password)."""
    normalized = _normalize_email(email)
    try:
        existing = find_user(conn, normalized)
    except NotFound:
        password = generate_password()
        return create_user(conn, normalized, role, password, [workspace_id]), password
    if workspace_id in existing.workspace_ids:
        raise AlreadyExists(f"{normalized} already has access to this workspace")
    return grant_workspace(conn, existing.id, workspace_id), None


def _in_workspace(conn: Connection, user_id: int, workspace_id: str) -> DashboardUser:
    user = get_user(conn, user_id)
    require_workspace(user, workspace_id)  # someone another workspace's admin manages does not exist here
    return user


def set_role(conn: Connection, user_id: int, role: str, *, workspace_id: str) -> DashboardUser:
    """Change a user's role (roles apply in every workspace the user sees); never leaves the platform without an
    admin."""
    try:
        parsed = Role(role)
    except ValueError as exc:
        raise InvalidRequest(f"role must be one of {', '.join(r.value for r in Role)}") from exc
    user = _in_workspace(conn, user_id, workspace_id)
    if user.role is Role.ADMIN and parsed is not Role.ADMIN:
        others = conn.execute(
            select(dashboard_users.c.id).where(
                dashboard_users.c.role == Role.ADMIN.value,
                dashboard_users.c.disabled_at.is_(None),
                dashboard_users.c.id != user_id,
            )
        ).first()
        if others is None:
            raise InvalidRequest(f"{user.email} is the last admin: make another user an admin first")
    conn.execute(update(dashboard_users).where(dashboard_users.c.id == user_id).values(role=parsed.value))
    return get_user(conn, user_id)


def remove_from_workspace(conn: Connection, user_id: int, workspace_id: str, *, acting_user_id: int) -> DashboardUser:
    """Take the workspace away from a user (its sessions keep working elsewhere); nobody removes themselves."""
    user = _in_workspace(conn, user_id, workspace_id)
    if user_id == acting_user_id:
        raise InvalidRequest("you cannot remove your own access; another admin can")
    conn.execute(
        delete(dashboard_user_workspaces).where(
            dashboard_user_workspaces.c.user_id == user_id, dashboard_user_workspaces.c.workspace_id == workspace_id
        )
    )
    return user


def reset_password(conn: Connection, user_id: int, *, workspace_id: str) -> tuple[DashboardUser, str]:
    """A new generated password (to show once); the user's sessions end."""
    user = _in_workspace(conn, user_id, workspace_id)
    password = generate_password()
    set_password(conn, user_id, password)
    return user, password


def set_password(conn: Connection, user_id: int, password: str) -> None:
    """A new password; the user's sessions end, so a leaked one stops working at once."""
    get_user(conn, user_id)
    try:
        password_hash = hash_password(password)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    conn.execute(update(dashboard_users).where(dashboard_users.c.id == user_id).values(password_hash=password_hash))
    conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.user_id == user_id))


def any_admin(conn: Connection) -> bool:
    query = select(dashboard_users.c.id).where(
        dashboard_users.c.role == Role.ADMIN.value, dashboard_users.c.disabled_at.is_(None)
    )
    return conn.execute(query.limit(1)).first() is not None


def _granted(conn: Connection, user_id: int) -> tuple[str, ...]:
    rows = conn.execute(
        select(dashboard_user_workspaces.c.workspace_id)
        .where(dashboard_user_workspaces.c.user_id == user_id)
        .order_by(dashboard_user_workspaces.c.workspace_id)
    )
    return tuple(str(r.workspace_id) for r in rows)


def _user(conn: Connection, row: object) -> DashboardUser:
    r = row
    return DashboardUser(
        id=int(r.id),  # type: ignore[attr-defined]
        email=str(r.email),  # type: ignore[attr-defined]
        role=Role(r.role),  # type: ignore[attr-defined]
        created_at=as_utc(r.created_at),  # type: ignore[attr-defined]
        last_login_at=as_utc(r.last_login_at) if r.last_login_at else None,  # type: ignore[attr-defined]
        workspace_ids=_granted(conn, int(r.id)),  # type: ignore[attr-defined]
    )


def get_user(conn: Connection, user_id: int) -> DashboardUser:
    row = conn.execute(
        select(dashboard_users).where(dashboard_users.c.id == user_id, dashboard_users.c.disabled_at.is_(None))
    ).first()
    if row is None:
        raise NotFound("no such dashboard user")
    return _user(conn, row)


def find_user(conn: Connection, email: str) -> DashboardUser:
    row = conn.execute(select(dashboard_users).where(dashboard_users.c.email == email.strip().lower())).first()
    if row is None:
        raise NotFound(f"no dashboard user {email!r}")
    return _user(conn, row)


def list_users(conn: Connection, workspace_id: str | None = None) -> list[DashboardUser]:
    query = select(dashboard_users).where(dashboard_users.c.disabled_at.is_(None)).order_by(dashboard_users.c.email)
    if workspace_id is not None:
        query = query.where(
            dashboard_users.c.id.in_(
                select(dashboard_user_workspaces.c.user_id).where(
                    dashboard_user_workspaces.c.workspace_id == workspace_id
                )
            )
        )
    return [_user(conn, r) for r in conn.execute(query)]


# --- access rules --------------------------------------------------------------------------------------


def require_workspace(user: DashboardUser, workspace_id: str) -> None:
    """A workspace not granted to ``user`` does not exist for it."""
    if workspace_id not in user.workspace_ids:
        raise NotFound(f"workspace {workspace_id!r} does not exist")


def require_admin(user: DashboardUser) -> None:
    if not user.is_admin:
        raise PermissionDenied("Only an admin can manage keys, partners and dashboard users.")
