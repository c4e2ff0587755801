"""The seed's Braze steps in a real browser, against a real server on loopback, on SQLite and PostgreSQL.

Every page visited is saved as a screenshot at desktop and phone width (see ``conftest.screenshot``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from cohortflow.platform.partners import create_partner
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from tests.platform.dashboard.conftest import browser_sign_in as sign_in
from tests.platform.dashboard.conftest import screenshot
from tests.platform.dashboard.helpers import PASSWORD, make_user
from tests.support import ServerProcess, Tenant, make_tenant


def import_users(base_url: str, partner: str, partner_key: str, client_secret: str, ids: list[str]) -> httpx.Response:
    body = {
        "partner_api_key": partner_key,
        "client_secret": client_secret,
        "cohort_id": "vip",
        "cohort_changes": [{"user_ids": ids}],
    }
    return httpx.post(f"{base_url}/partners/{partner}/cohorts/users", json=body, timeout=30)


def test_technology_partner_keys_end_to_end(
    page: Any, server: ServerProcess, runtime: PlatformRuntime, shots: Path
) -> None:
    partner_name = f"hightouch-{uuid.uuid4().hex[:6]}"
    with runtime.transaction() as conn:
        ws = create_workspace(conn, "Acme production")
        partner = create_partner(conn, partner_name, "Hightouch")
    ids = [f"customer-{i}" for i in range(5)]
    track = httpx.post(
        f"{server.base_url}/users/track",
        headers={"Authorization": f"Bearer {ws.rest_api_key.plain}"},
        json={"attributes": [{"external_id": i, "email": f"{i}@example.com"} for i in ids]},
        timeout=30,
    )
    assert track.status_code == 201, track.text
    sign_in(page, make_user(runtime, "admin", [ws.id]), shots)
    screenshot(page, shots, "02-workspace")

    # Partner Integrations > Technology Partners, found with the search box.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Technology Partners").click()
    page.get_by_label("Search partners").fill("hight")
    page.get_by_role("button", name="Search").click()
    screenshot(page, shots, "03-technology-partners")
    # Other tests register partners shown as "Hightouch" too (names are platform-wide): pick this one.
    page.locator(f'a.tile[href$="/technology-partners/{partner_name}"]').click()
    assert page.get_by_label("REST endpoint").input_value() == server.base_url
    assert page.get_by_text("No data import key yet").is_visible()
    screenshot(page, shots, "04-partner-without-key")

    # Generate: the key is shown in full once, and the copy button puts it on the clipboard.
    page.get_by_role("button", name="Generate key").click()
    key = page.get_by_role("textbox", name="New data import key").input_value()
    assert key.startswith("cfdik_")
    page.get_by_role("button", name="Copy").first.click()
    page.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == key
    screenshot(page, shots, "05-new-key-shown-once")

    # The copied key names a cohort and imports users over HTTP (an unknown id is skipped, never created).
    named = httpx.post(
        f"{server.base_url}/partners/{partner_name}/cohorts",
        json={
            "partner_api_key": partner.api_key.plain,
            "client_secret": copied,
            "cohort_id": "vip",
            "name": "VIP customers",
            "created_at": "2026-12-01T00:00:00Z",
        },
        timeout=30,
    )
    assert named.status_code == 201, named.text
    imported = import_users(server.base_url, partner_name, partner.api_key.plain, copied, [*ids, "nobody"])
    assert imported.status_code == 201 and imported.json()["added"] == 5, imported.text
    segment = httpx.post(
        f"{server.base_url}/segments",
        headers={"Authorization": f"Bearer {ws.rest_api_key.plain}"},
        json={
            "name": "VIPs",
            "filter": {"type": "partner_cohort", "partner": partner_name, "cohort_id": "vip", "operator": "includes"},
        },
        timeout=30,
    )
    assert segment.status_code == 201, segment.text

    # Cohorts: the cohort, its size, its import history and the segment using it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cohorts").click()
    assert page.get_by_role("heading", name="Hightouch Cohorts").is_visible()
    screenshot(page, shots, "04b-cohorts")
    page.get_by_role("link", name="VIP customers").click()
    assert page.locator("#cohort-size").inner_text() == "5"
    assert page.get_by_role("listitem").filter(has_text="VIPs").is_visible()
    assert page.get_by_text("user_id=nobody").is_visible()
    screenshot(page, shots, "04c-cohort")
    page.go_back()
    page.go_back()

    # Shown once: the page, loaded again, lists it masked only.
    page.reload()
    assert key not in page.content()
    assert page.get_by_role("cell", name=key[:14] + "…").is_visible()

    # Create new key: the old one stays active.
    page.get_by_role("button", name="Create new key").click()
    second = page.get_by_role("textbox", name="New data import key").input_value()
    assert second != key
    assert page.locator("tbody .badge", has_text="Active").count() == 2
    screenshot(page, shots, "06-second-key")

    # Invalidate the first key, after a confirmation.
    page.get_by_role("row", name=key[:14]).get_by_role("link", name="Invalidate").click()
    screenshot(page, shots, "07-confirm-invalidate")
    page.get_by_role("button", name="Invalidate key").click()
    page.get_by_role("status").wait_for()
    assert "is invalidated" in page.get_by_role("status").inner_text()
    screenshot(page, shots, "08-invalidated")

    refused = import_users(server.base_url, partner_name, partner.api_key.plain, key, ids)
    assert refused.status_code == 401 and refused.json() == {"message": "Invalid client secret"}
    assert import_users(server.base_url, partner_name, partner.api_key.plain, second, ids).status_code == 201


def test_security_in_the_browser(page: Any, server: ServerProcess, runtime: PlatformRuntime, shots: Path) -> None:
    tenant = make_tenant(runtime)
    other: Tenant = make_tenant(runtime)
    keys_page = f"/dashboard/w/{tenant.workspace_id}/technology-partners/{tenant.partner}"

    # No session: every page sends the browser to the login form, and back after signing in.
    page.goto(keys_page)
    assert "/dashboard/login?next=" in page.url
    page.get_by_label("E-mail address").fill(make_user(runtime, "admin", [tenant.workspace_id]))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{keys_page}")

    # A form whose CSRF token was removed is refused and changes nothing.
    before = page.locator("tbody tr").count()
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    page.get_by_role("button", name="Create new key").click()
    assert page.get_by_role("heading", name="Request refused").is_visible()
    screenshot(page, shots, "01-csrf-refused")
    page.goto(keys_page)
    assert page.locator("tbody tr").count() == before

    # Another workspace's objects do not exist.
    response = page.goto(f"/dashboard/w/{other.workspace_id}/technology-partners/{other.partner}")
    assert response is not None and response.status == 404
    screenshot(page, shots, "02-other-workspace-404")

    # A marketer cannot reach key pages.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("status").wait_for()
    assert "/dashboard/login" in page.url
    screenshot(page, shots, "03-signed-out")
    sign_in(page, make_user(runtime, "marketer", [tenant.workspace_id]))
    assert page.get_by_role("link", name="Technology Partners", exact=True).count() == 0
    screenshot(page, shots, "04-marketer-home")
    response = page.goto(keys_page)
    assert response is not None and response.status == 403
    assert "cfdik_" not in page.content()
    screenshot(page, shots, "05-marketer-refused")
