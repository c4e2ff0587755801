"""Settings (admins only): *APIs and Identifiers* (the workspace's REST API keys and app keys: create, shown once;
revoke after a confirmation) and *Company Users* (who may sign in to this workspace, with which role).

The same domain functions as ``/api_keys``, ``/app_keys`` and ``cohortflow platform rest-key|app-key|user``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection
from starlette.datastructures import FormData

from cohortflow.keys import IssuedKey
from cohortflow.platform import dashboard_users, workspaces
from cohortflow.platform.dashboard.access import AdminOnly, WorkspacePage
from cohortflow.platform.errors import AlreadyExists, InvalidRequest, NotFound
from cohortflow.platform.key_store import KeyInfo

router = APIRouter(prefix="/w/{workspace_id}/settings")


@dataclass(frozen=True)
class KeyKind:
    """One kind of workspace key: words for the page, and the domain functions that manage it."""

    title: str
    one: str
    use: str
    list: Callable[[Connection, str], list[KeyInfo]]
    create: Callable[[Connection, str, str], tuple[KeyInfo, IssuedKey]]
    revoke: Callable[[Connection, str, str], KeyInfo]


KINDS = {
    "rest": KeyKind(
        "REST API keys",
        "REST API key",
        "Server-to-server calls: /users/*, /segments, /campaigns, /canvases (Authorization: Bearer).",
        workspaces.list_rest_api_keys,
        workspaces.create_rest_api_key,
        workspaces.revoke_rest_api_key,
    ),
    "app": KeyKind(
        "App identifiers",
        "app key",
        "Identify your apps to the SDK endpoint (/sdk/data). Apps in the field ship them: revoke old ones last.",
        workspaces.list_app_keys,
        workspaces.create_app_key,
        workspaces.revoke_app_key,
    ),
}


async def form_data(request: Request) -> FormData:
    return await request.form()


Form = Annotated[FormData, Depends(form_data)]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _kind(kind: str) -> KeyKind:
    if kind not in KINDS:
        raise NotFound(f"no key kind {kind!r}")
    return KINDS[kind]


@router.get("", response_class=HTMLResponse)
def settings_home(page: AdminOnly) -> RedirectResponse:
    return page.redirect("/settings/api-keys")


# --- APIs and Identifiers --------------------------------------------------------------------------------


def _keys_page(
    page: WorkspacePage,
    *,
    new_key: tuple[str, IssuedKey] | None = None,
    errors: dict[str, str] | None = None,
    names: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with page.transaction() as conn:
        keys = {kind: list(reversed(spec.list(conn, page.workspace_id))) for kind, spec in KINDS.items()}
    return page.render(
        "dashboard/settings_keys.html",
        {
            "kinds": KINDS,
            "keys": keys,
            "new_key": new_key,
            "errors": errors or {},
            "names": names or {},
            "rest_endpoint": page.runtime.settings.public_base_url.rstrip("/"),
            "replace_url": f"{page.kit.prefix(page.request)}/w/{page.workspace_id}/settings/api-keys",
        },
        status_code=status_code,
    )


@router.get("/api-keys", response_class=HTMLResponse)
def keys_page(page: AdminOnly) -> HTMLResponse:
    return _keys_page(page)


@router.post("/api-keys/{kind}", response_class=HTMLResponse)
def create_key(page: AdminOnly, kind: str, form: Form) -> HTMLResponse:
    spec = _kind(kind)
    name = _text(form, "name")
    try:
        with page.transaction() as conn:
            _info, key = spec.create(conn, page.workspace_id, name)
    except InvalidRequest as exc:
        message = exc.message[:1].upper() + exc.message[1:] + "."
        return _keys_page(page, errors={kind: message}, names={kind: name}, status_code=400)
    # The answer shows the key itself, never a redirect: the key exists in full only in this response.
    return _keys_page(page, new_key=(kind, key), status_code=201)


def _live_key(page: WorkspacePage, kind: str, key_id: int) -> KeyInfo:
    spec = _kind(kind)
    with page.transaction() as conn:
        for key in spec.list(conn, page.workspace_id):
            if key.id == key_id and key.active:
                return key
    raise NotFound(f"no active {spec.one} {key_id} in this workspace")


@router.get("/api-keys/{kind}/{key_id}/revoke", response_class=HTMLResponse)
def confirm_revoke(page: AdminOnly, kind: str, key_id: int) -> HTMLResponse:
    key = _live_key(page, kind, key_id)
    return page.render("dashboard/confirm_revoke_key.html", {"key": key, "kind": kind, "spec": KINDS[kind]})


@router.post("/api-keys/{kind}/{key_id}/revoke")
def revoke_key(page: AdminOnly, kind: str, key_id: int) -> RedirectResponse:
    spec = _kind(kind)
    _live_key(page, kind, key_id)
    with page.transaction() as conn:
        info = spec.revoke(conn, page.workspace_id, str(key_id))
    return page.redirect(
        "/settings/api-keys",
        f"The {spec.one} {info.masked_key} is revoked: requests using it are refused from now on.",
    )


# --- Company Users ---------------------------------------------------------------------------------------


def _users_page(
    page: WorkspacePage,
    *,
    shown_password: tuple[str, str] | None = None,
    error: str | None = None,
    email: str = "",
    role: str = "marketer",
    status_code: int = 200,
) -> HTMLResponse:
    with page.transaction() as conn:
        people = dashboard_users.list_users(conn, page.workspace_id)
    return page.render(
        "dashboard/settings_users.html",
        {
            "people": people,
            "roles": [r.value for r in dashboard_users.Role],
            "shown_password": shown_password,
            "error": error,
            "email": email,
            "role": role,
            "replace_url": f"{page.kit.prefix(page.request)}/w/{page.workspace_id}/settings/users",
        },
        status_code=status_code,
    )


def _sentence(exc: InvalidRequest | AlreadyExists | NotFound) -> str:
    return exc.message[:1].upper() + exc.message[1:] + "."


@router.get("/users", response_class=HTMLResponse)
def users_page(page: AdminOnly) -> HTMLResponse:
    return _users_page(page)


@router.post("/users", response_class=HTMLResponse)
def add_user(page: AdminOnly, form: Form) -> Response:
    email, role = _text(form, "email"), _text(form, "role")
    try:
        with page.transaction() as conn:
            user, password = dashboard_users.add_to_workspace(conn, email, role, page.workspace_id)
    except (InvalidRequest, AlreadyExists) as exc:
        return _users_page(page, error=_sentence(exc), email=email, role=role, status_code=400)
    if password is None:
        return page.redirect(
            "/settings/users", f"{user.email} already had an account: it can now see this workspace too."
        )
    return _users_page(page, shown_password=(user.email, password), status_code=201)


@router.post("/users/{user_id}/role")
def change_role(page: AdminOnly, user_id: int, form: Form) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            user = dashboard_users.set_role(conn, user_id, _text(form, "role"), workspace_id=page.workspace_id)
    except InvalidRequest as exc:
        return page.redirect("/settings/users", f"Role not changed: {exc.message}.", "error")
    return page.redirect("/settings/users", f"{user.email} is now {user.role.value}.")


@router.post("/users/{user_id}/remove")
def remove_user(page: AdminOnly, user_id: int) -> RedirectResponse:
    try:
        with page.transaction() as conn:
            user = dashboard_users.remove_from_workspace(conn, user_id, page.workspace_id, acting_user_id=page.user.id)
    except InvalidRequest as exc:
        return page.redirect("/settings/users", f"Not removed: {exc.message}.", "error")
    return page.redirect("/settings/users", f"{user.email} can no longer see this workspace.")


@router.post("/users/{user_id}/reset-password", response_class=HTMLResponse)
def reset_password(page: AdminOnly, user_id: int) -> HTMLResponse:
    with page.transaction() as conn:
        user, password = dashboard_users.reset_password(conn, user_id, workspace_id=page.workspace_id)
    return _users_page(page, shown_password=(user.email, password), status_code=201)
