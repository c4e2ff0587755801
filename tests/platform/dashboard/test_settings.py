"""Settings: REST API keys and app keys (create, shown once, revoke), Company Users (add, role, reset, remove); admins
only; in a real browser and over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from cohortflow.platform import dashboard_users, workspaces
from cohortflow.platform.errors import AuthenticationFailed, InvalidRequest
from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import PASSWORD, csrf_of, make_user, sign_in
from tests.support import ServerProcess, Tenant, make_tenant, open_runtime


def test_keys_and_users_in_the_browser(
    page: Any, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, shots: Path
) -> None:
    admin = make_user(runtime, "admin", [tenant.workspace_id])
    browser_sign_in(page, admin)
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="APIs and Identifiers").click()
    expect(page.get_by_role("heading", name="REST API keys")).to_be_visible()
    screenshot(page, shots, "01-api-keys")

    # A REST API key: created with a name, shown once, copied, works; revoked after a confirmation, refused.
    page.get_by_label("Name (what it is for)").first.fill("Warehouse sync")
    page.get_by_role("button", name="Create REST API key").click()
    key = page.get_by_role("textbox", name="New REST API key").input_value()
    assert key.startswith("cfrest_")
    page.get_by_role("button", name="Copy").first.click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    screenshot(page, shots, "02-rest-key-shown-once")
    listing = httpx.get(f"{server.base_url}/segments", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert listing.status_code == 200
    page.reload()
    assert key not in page.content()
    page.get_by_role("row", name="Warehouse sync").get_by_role("link", name="Revoke").click()
    screenshot(page, shots, "03-confirm-revoke")
    page.get_by_role("button", name="Revoke REST API key").click()
    expect(page.get_by_role("status")).to_contain_text("is revoked")
    refused = httpx.get(f"{server.base_url}/segments", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert refused.status_code == 401

    # An app key, the same way.
    page.get_by_role("button", name="Create app key").click()
    app_key = page.get_by_role("textbox", name="New app key").input_value()
    assert app_key.startswith("cfapp_")
    with runtime.transaction() as conn:
        assert workspaces.authenticate_app_key(conn, app_key).workspace_id == tenant.workspace_id
    page.goto(f"/dashboard/w/{tenant.workspace_id}/settings/api-keys")
    page.locator("#app-title").locator("xpath=..").get_by_role("link", name="Revoke").first.click()
    page.get_by_role("button", name="Revoke app key").click()
    screenshot(page, shots, "04-app-key-revoked")

    # Company Users: add a marketer (password shown once), who signs in; promote, reset, remove.
    nav.get_by_role("link", name="Company Users").click()
    page.get_by_label("E-mail address").fill("not an address")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("alert")).to_contain_text("is not an e-mail address")
    newcomer = f"ana-{tenant.workspace_id[-6:]}@example.com"
    page.get_by_label("E-mail address").fill(newcomer)
    page.get_by_label("Role", exact=True).select_option("marketer")
    page.get_by_role("button", name="Add user").click()
    password = page.get_by_role("textbox", name="New password").input_value()
    screenshot(page, shots, "05-user-added")
    with httpx.Client(base_url=server.base_url) as probe:
        form = probe.get("/dashboard/login")
        signed = probe.post(
            "/dashboard/login", data={"email": newcomer, "password": password, "csrf_token": csrf_of(form.text)}
        )
        assert signed.status_code == 303
    page.goto(f"/dashboard/w/{tenant.workspace_id}/settings/users")
    page.get_by_label(f"Role of {newcomer}").select_option("admin")
    page.get_by_role("row", name=newcomer).get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status")).to_have_text(f"{newcomer} is now admin.")
    page.get_by_role("button", name=f"Reset the password of {newcomer}").click()
    assert page.get_by_role("textbox", name="New password").input_value() != password
    page.goto(f"/dashboard/w/{tenant.workspace_id}/settings/users")
    page.get_by_role("button", name=f"Remove {newcomer} from this workspace").click()
    expect(page.get_by_role("status")).to_have_text(f"{newcomer} can no longer see this workspace.")
    expect(page.get_by_role("row", name=newcomer)).to_have_count(0)
    screenshot(page, shots, "06-users")


def test_settings_are_for_admins_of_this_workspace(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    other = make_tenant(runtime)
    with runtime.transaction() as conn:
        their_key = workspaces.list_rest_api_keys(conn, other.workspace_id)[0]
        stranger = dashboard_users.create_user(conn, f"stranger-{other.workspace_id}@example.com", "marketer",
                                               PASSWORD, [other.workspace_id])  # fmt: skip
    base = f"/dashboard/w/{tenant.workspace_id}/settings"

    marketer = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    csrf = csrf_of(marketer.get(f"/dashboard/w/{tenant.workspace_id}/").text)
    home = marketer.get(f"/dashboard/w/{tenant.workspace_id}/")
    assert "APIs and Identifiers" not in home.text and "Company Users" not in home.text
    for path in ("/api-keys", "/users", "/api-keys/rest/1/revoke"):
        answer = marketer.get(base + path)
        assert answer.status_code == 403 and "cfrest_" not in answer.text, path
    for path in ("/api-keys/rest", "/api-keys/app", "/users", "/users/1/role", "/users/1/remove"):
        assert marketer.post(base + path, data={"csrf_token": csrf, "email": "x@example.com"}).status_code == 403, path
    marketer.close()

    admin_email = make_user(runtime, "admin", [tenant.workspace_id])
    admin = sign_in(server.base_url, admin_email)
    csrf = csrf_of(admin.get(base + "/api-keys").text)
    # Another workspace's key and user are not found here; nothing changes.
    assert admin.get(f"{base}/api-keys/rest/{their_key.id}/revoke").status_code == 404
    assert admin.post(f"{base}/api-keys/rest/{their_key.id}/revoke", data={"csrf_token": csrf}).status_code == 404
    for action, data in (("role", {"role": "admin"}), ("remove", {}), ("reset-password", {})):
        answer = admin.post(f"{base}/users/{stranger.id}/{action}", data={"csrf_token": csrf, **data})
        assert answer.status_code == 404, action
    with runtime.transaction() as conn:
        assert workspaces.list_rest_api_keys(conn, other.workspace_id)[0].active
        assert dashboard_users.get_user(conn, stranger.id).role is dashboard_users.Role.MARKETER
    # Without the CSRF token nothing is created.
    before = admin.get(base + "/api-keys").text.count("<code>cfrest_")
    assert admin.post(base + "/api-keys/rest", data={"name": "forged"}).status_code == 403
    assert admin.get(base + "/api-keys").text.count("<code>cfrest_") == before
    # Bad input is explained.
    too_long = admin.post(base + "/api-keys/rest", data={"csrf_token": csrf, "name": "x" * 300})
    assert too_long.status_code == 400 and "Key name must be at most 200 characters." in too_long.text
    me = re.search(r"/settings/users/(\d+)/reset-password", admin.get(base + "/users").text)
    with runtime.transaction() as conn:
        my_id = dashboard_users.find_user(conn, admin_email).id
    assert me is not None
    mine = admin.post(f"{base}/users/{my_id}/remove", data={"csrf_token": csrf})
    assert "Not removed: you cannot remove your own access; another admin can." in mine.text
    wrong_role = admin.post(f"{base}/users/{my_id}/role", data={"csrf_token": csrf, "role": "owner"})
    assert "Role not changed: role must be one of admin, marketer." in wrong_role.text
    again = admin.post(base + "/users", data={"csrf_token": csrf, "email": admin_email, "role": "admin"})
    assert again.status_code == 400 and "already has access to this workspace" in again.text
    # An account of another workspace is granted this one too, keeping its role and password.
    granted = admin.post(base + "/users", data={"csrf_token": csrf, "email": stranger.email, "role": "admin"})
    assert "already had an account: it can now see this workspace too" in granted.text
    with runtime.transaction() as conn:
        now = dashboard_users.get_user(conn, stranger.id)
        assert now.role is dashboard_users.Role.MARKETER and tenant.workspace_id in now.workspace_ids
    admin.close()


def test_the_last_admin_stays_an_admin(tmp_path: Path) -> None:
    runtime = open_runtime(f"sqlite:///{tmp_path / 'alone.db'}")
    try:
        with runtime.transaction() as conn:
            ws = workspaces.create_workspace(conn, "Solo")
            only = dashboard_users.create_user(conn, "only@example.com", "admin", PASSWORD, [ws.id])
            with pytest.raises(InvalidRequest, match="last admin"):
                dashboard_users.set_role(conn, only.id, "marketer", workspace_id=ws.id)
            second, _password = dashboard_users.add_to_workspace(conn, "second@example.com", "admin", ws.id)
            assert dashboard_users.set_role(conn, only.id, "marketer", workspace_id=ws.id).role.value == "marketer"
            with pytest.raises(InvalidRequest, match="last admin"):
                dashboard_users.set_role(conn, second.id, "marketer", workspace_id=ws.id)
            with pytest.raises(AuthenticationFailed):
                workspaces.authenticate_rest_key(conn, "cfrest_nope")
    finally:
        runtime.close()
