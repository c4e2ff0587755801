"""The Users pages: find a profile by each identifier, see it whole, in a real browser and over HTTP, on SQLite and
PostgreSQL; another workspace's user does not exist."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from cohortflow.platform import identity
from cohortflow.platform.messaging import campaigns
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.platform.messaging.sinks import WebhookSink
from tests.support import ServerProcess, Tenant, add_cohort_rows, make_tenant


def seed_profile(base_url: str, runtime: PlatformRuntime, tenant: Tenant) -> dict[str, Any]:
    """One identified user with everything (alias, device, attributes, events, purchases, a cohort), one anonymous
    device user and two users sharing an email address."""
    auth = {"Authorization": f"Bearer {tenant.rest_api_key}"}
    track = httpx.post(
        f"{base_url}/users/track",
        headers=auth,
        json={
            "attributes": [
                {"external_id": "ada-1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                 "country": "GB", "plan": "gold", "visits": 12},
                {"external_id": "twin-a", "email": "twin@example.com"},
                {"external_id": "twin-b", "email": "twin@example.com"},
            ],
            "events": [{"external_id": "ada-1", "name": "login", "time": "2026-11-30T10:00:00Z"}],
            "purchases": [{"external_id": "ada-1", "product_id": "sku-1", "currency": "EUR", "price": 9.5,
                           "time": "2026-11-30T11:00:00Z"}],
        },
        timeout=30,
    )  # fmt: skip
    assert track.status_code == 201, track.text
    with runtime.transaction() as conn:
        ada = identity.find_by_external_id(conn, tenant.workspace_id, "ada-1")
        assert ada is not None
        identity.add_alias(conn, tenant.workspace_id, ada, identity.AliasKey("crm_id", "C-77"))
        anonymous, _ = identity.get_or_create_device_user(conn, tenant.workspace_id, "device-xyz")
        braze = {
            name: identity.get_user(conn, tenant.workspace_id, uid)["braze_id"]  # type: ignore[index]
            for name, uid in (("ada", ada), ("anonymous", anonymous))
        }
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", [ada])
    return {"ada": ada, "anonymous": anonymous, "braze": braze}


def test_find_and_show_profiles_in_the_browser(
    messaging_page: Any, messaging_server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant,
    webhook_sink: WebhookSink, shots: Path,
) -> None:  # fmt: skip
    page = messaging_page
    seed_profile(messaging_server.base_url, runtime, tenant)
    # Ada received a webhook campaign.
    path = f"/users-{uuid.uuid4().hex[:6]}"
    with runtime.transaction() as conn:
        segment = service.create_segment(
            conn, tenant.workspace_id, "VIPs", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip"}
        )
        campaign = campaigns.create_campaign(
            conn, tenant.workspace_id,
            {"name": "Hello hook", "segment_ids": [segment.id],
             "message": {"channel": "webhook", "url": webhook_sink.url(path), "body": {"id": "{{ external_id }}"}}},
        )  # fmt: skip
        send = campaigns.request_send(conn, tenant.workspace_id, campaign.id)
    from cohortflow.settings import MessagingSettings

    result = campaigns.run_send(runtime.engine, MessagingSettings(), send.id)
    assert result is not None and result.counts["sent"] == 1

    browser_sign_in(page, make_user(runtime, "marketer", [tenant.workspace_id]))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    screenshot(page, shots, "01-search")
    # By external ID: straight to the profile.
    page.get_by_label("External ID").fill("ada-1")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="ada-1", exact=True)).to_be_visible()
    expect(page.get_by_text("crm_id: C-77")).to_be_visible()
    expect(page.get_by_role("link", name="VIP customers")).to_be_visible()
    expect(page.get_by_role("link", name="Hello hook")).to_be_visible()
    expect(page.get_by_text("Lovelace", exact=True)).to_be_visible()
    expect(page.locator("dt", has_text="plan")).to_be_visible()
    expect(page.locator("#events-title + dl")).to_contain_text("login")
    expect(page.locator("#purchases-title + dl")).to_contain_text("sku-1")
    screenshot(page, shots, "02-profile")

    # By alias, by device ID (an anonymous user), by email (two users share it), and nothing found.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.get_by_role("link", name="User alias").click()
    page.get_by_label("Alias label").fill("crm_id")
    page.get_by_label("Alias name").fill("C-77")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="ada-1", exact=True)).to_be_visible()
    page.goto(f"/dashboard/w/{tenant.workspace_id}/users?by=device_id")
    page.get_by_label("Device ID").fill("device-xyz")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="Anonymous user")).to_be_visible()
    expect(page.get_by_text("device-xyz")).to_be_visible()
    screenshot(page, shots, "03-anonymous-profile")
    page.goto(f"/dashboard/w/{tenant.workspace_id}/users?by=email")
    page.get_by_label("Email address").fill("twin@example.com")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    screenshot(page, shots, "04-several")
    page.get_by_label("Email address").fill("nobody@example.com")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("status")).to_have_text(
        "No user with email address “nobody@example.com” in this workspace."
    )
    screenshot(page, shots, "05-none")


def test_user_pages_over_http(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    seeded = seed_profile(server.base_url, runtime, tenant)
    other = make_tenant(runtime)
    with runtime.transaction() as conn:
        stranger, _ = identity.get_or_create_by_external_id(conn, other.workspace_id, "ada-1")
        stranger_braze = identity.get_user(conn, other.workspace_id, stranger)["braze_id"]  # type: ignore[index]
    base = f"/dashboard/w/{tenant.workspace_id}/users"
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.get(f"{base}/{seeded['braze']['ada']}", follow_redirects=False).status_code == 303
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    found = client.get(base, params={"by": "external_id", "q": "ada-1"}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"].endswith(f"/users/{seeded['braze']['ada']}")
    assert client.get(base, params={"by": "braze_id", "q": seeded["braze"]["anonymous"]}).url.path.endswith(
        seeded["braze"]["anonymous"]
    )
    # Bad input is explained.
    empty = client.get(base, params={"by": "external_id", "q": " "})
    assert empty.status_code == 400 and "Enter a value to search for." in empty.text
    half_alias = client.get(base, params={"by": "alias", "q": "C-77"})
    assert half_alias.status_code == 400 and "Enter the alias label and the alias name." in half_alias.text
    # Another workspace's user with the same external ID is not found, and its profile is a 404.
    assert client.get(f"{base}/{stranger_braze}").status_code == 404
    assert client.get(f"/dashboard/w/{other.workspace_id}/users/{stranger_braze}").status_code == 404
    assert "ada-1" in client.get(f"{base}/{seeded['braze']['ada']}").text
    csrf_of(client.get(base).text)
    client.close()
