"""``cohortflow platform user ...``: dashboard users (create, list, grant a workspace, reset a password).

A password is generated and printed once unless ``--password-stdin`` gives one; only its Argon2 hash is stored.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cohortflow.platform import dashboard_users
from cohortflow.platform.cli_common import emit, json_option, resolve_workspace, table, transaction, when
from cohortflow.platform.dashboard_users import DashboardUser, Role
from cohortflow.web.accounts import generate_password


def user_payload(user: DashboardUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role.value,
        "workspaces": list(user.workspace_ids),
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password to set, and whether it was generated (and so must be printed)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return generate_password(), True


@click.group("user")
def user_group() -> None:
    """Dashboard users: admins (keys, partners, users) and marketers (segments, campaigns, Canvas)."""


@user_group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.MARKETER.value, show_default=True)
@click.option("--workspace", "-w", "workspace_refs", multiple=True, help="Workspace id or name to grant (repeat).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of generating one.")
@json_option
def user_create(email: str, role: str, workspace_refs: tuple[str, ...], password_stdin: bool, as_json: bool) -> None:
    """Create a dashboard user; prints a generated password once."""
    password, generated = _password(password_stdin)
    with transaction() as conn:
        workspace_ids = [resolve_workspace(conn, ref) for ref in workspace_refs]
        user = dashboard_users.create_user(conn, email, role, password, workspace_ids)
    lines = [f"dashboard user {user.email} ({user.role.value}), workspaces: {', '.join(user.workspace_ids) or 'none'}"]
    if generated:
        lines.append(f"password: {password}   (shown once: stored as an Argon2 hash)")
    emit(as_json, {**user_payload(user), "password": password if generated else None}, "\n".join(lines))


@user_group.command("list")
@json_option
def user_list(as_json: bool) -> None:
    """Dashboard users with their role and workspaces."""
    with transaction() as conn:
        users = dashboard_users.list_users(conn)
    rows = [(u.email, u.role.value, ", ".join(u.workspace_ids), when(u.last_login_at)) for u in users]
    human = table(["email", "role", "workspaces", "last login"], rows) if rows else "no dashboard users"
    emit(as_json, [user_payload(u) for u in users], human)


@user_group.command("grant")
@click.argument("email")
@click.option("--workspace", "-w", "workspace_ref", required=True, help="Workspace id or name.")
@json_option
def user_grant(email: str, workspace_ref: str, as_json: bool) -> None:
    """Let a dashboard user see a workspace."""
    with transaction() as conn:
        user = dashboard_users.grant_workspace(
            conn, dashboard_users.find_user(conn, email).id, resolve_workspace(conn, workspace_ref)
        )
    emit(as_json, user_payload(user), f"{user.email} now sees: {', '.join(user.workspace_ids)}")


@user_group.command("reset-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of generating one.")
@json_option
def user_reset_password(email: str, password_stdin: bool, as_json: bool) -> None:
    """Set a new password (ends the user's sessions); prints a generated one once."""
    password, generated = _password(password_stdin)
    with transaction() as conn:
        user = dashboard_users.find_user(conn, email)
        dashboard_users.set_password(conn, user.id, password)
    human = (
        f"new password for {user.email}: {password}   (shown once)" if generated else f"password of {user.email} set"
    )
    emit(as_json, {"email": user.email, "password": password if generated else None}, human)
