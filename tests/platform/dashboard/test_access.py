"""Who sees what in the dashboard, against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import httpx

from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.support import ServerProcess, Tenant, make_tenant


def test_no_session_redirects_every_page_to_login(server: ServerProcess, tenant: Tenant) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
        for path in ("/dashboard/", f"/dashboard/w/{tenant.workspace_id}/technology-partners"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/dashboard/login?next=")
        # A state change without a session is refused before anything runs (no CSRF token either).
        path = f"/dashboard/w/{tenant.workspace_id}/technology-partners/{tenant.partner}/keys"
        assert client.post(path).status_code == 403


def test_sign_in_out_and_wrong_password(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    email = make_user(runtime, "admin", [tenant.workspace_id])
    with httpx.Client(base_url=server.base_url) as anonymous:
        form = anonymous.get("/dashboard/login")
        wrong = anonymous.post(
            "/dashboard/login", data={"email": email, "password": "not the password", "csrf_token": csrf_of(form.text)}
        )
        assert wrong.status_code == 401 and "Wrong e-mail address or password" in wrong.text
    client = sign_in(server.base_url, email)
    cookie = next(c for c in client.cookies.jar if c.name == "cf_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    home = client.get(f"/dashboard/w/{tenant.workspace_id}/")
    assert home.status_code == 200 and email in home.text
    client.post("/dashboard/logout", data={"csrf_token": csrf_of(home.text)})
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303
    client.close()


def test_a_user_sees_only_granted_workspaces(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    other = make_tenant(runtime)
    client = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    page = client.get(f"/dashboard/w/{tenant.workspace_id}/technology-partners")
    assert page.status_code == 200
    assert other.workspace_id not in page.text
    for path in (
        f"/dashboard/w/{other.workspace_id}/",
        f"/dashboard/w/{other.workspace_id}/technology-partners",
        f"/dashboard/w/{other.workspace_id}/technology-partners/{other.partner}",
        "/dashboard/w/ws_does_not_exist/technology-partners",
    ):
        assert client.get(path).status_code == 404, path
    # Another workspace's key, reached through a granted workspace's URL, does not exist either.
    keys = client.get(f"/dashboard/w/{other.workspace_id}/technology-partners/{other.partner}")
    assert keys.status_code == 404
    csrf = csrf_of(page.text)
    with runtime.transaction() as conn:
        from cohortflow.platform.import_keys import list_import_keys

        other_key = list_import_keys(conn, other.workspace_id, other.partner)[0]
    path = f"/dashboard/w/{tenant.workspace_id}/technology-partners/{other.partner}/keys/{other_key.id}/invalidate"
    assert client.post(path, data={"csrf_token": csrf}).status_code == 404
    with runtime.transaction() as conn:
        assert list_import_keys(conn, other.workspace_id, other.partner)[0].active
    client.close()


def test_a_marketer_cannot_reach_key_pages(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    home = client.get(f"/dashboard/w/{tenant.workspace_id}/")
    assert home.status_code == 200 and "Technology Partners" not in home.text
    base = f"/dashboard/w/{tenant.workspace_id}/technology-partners"
    assert client.get(base).status_code == 403
    assert client.get(f"{base}/{tenant.partner}").status_code == 403
    response = client.post(f"{base}/{tenant.partner}/keys", data={"csrf_token": csrf_of(home.text)})
    assert response.status_code == 403
    assert "cfdik_" not in response.text
    client.close()


def test_forms_without_their_csrf_token_are_refused(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    client = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    path = f"/dashboard/w/{tenant.workspace_id}/technology-partners/{tenant.partner}/keys"
    for data in ({}, {"csrf_token": "forged"}):
        refused = client.post(path, data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    page = client.get(f"/dashboard/w/{tenant.workspace_id}/technology-partners/{tenant.partner}")
    assert len(re.findall(r"<code>cfdik_", page.text)) == 1  # only the tenant's own key: nothing was created
    assert client.post(path, headers={"X-CSRF-Token": csrf_of(page.text)}).status_code == 201
    client.close()


def test_cohorts_are_scoped_to_the_workspace(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    from tests.support import add_cohort_rows

    other = make_tenant(runtime)
    add_cohort_rows(runtime, tenant, "mine", "Mine", [])
    add_cohort_rows(runtime, other, "theirs", "Theirs", [])
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    listing = client.get(f"/dashboard/w/{tenant.workspace_id}/cohorts")
    assert listing.status_code == 200 and "Mine" in listing.text and "Theirs" not in listing.text
    assert client.get(f"/dashboard/w/{tenant.workspace_id}/cohorts/{tenant.partner}/mine").status_code == 200
    assert client.get(f"/dashboard/w/{tenant.workspace_id}/cohorts/{other.partner}/theirs").status_code == 404
    assert client.get(f"/dashboard/w/{other.workspace_id}/cohorts/{other.partner}/theirs").status_code == 404
    client.close()
