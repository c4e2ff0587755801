"""The seed's Braze steps end to end in a real browser, against a real server on SQLite and PostgreSQL.

Log in; Technology Partners > Hightouch: generate a data import key and copy it; import users into a cohort through
the partner API with that key over HTTP; see the cohort and its size; build "Hightouch Cohorts includes <cohort>"
and see the exact size equal the cohort's; create an email campaign to it and send; find the messages in a local
SMTP server; invalidate the key and see the next import answered 401 "Invalid client secret".
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from cohortflow.platform.partners import create_partner
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import make_user
from tests.platform.messaging.sinks import SmtpSink
from tests.support import ServerProcess


def test_the_seed_end_to_end(
    messaging_page: Any, messaging_server: ServerProcess, runtime: PlatformRuntime, smtp_sink: SmtpSink, shots: Path
) -> None:
    page, base_url = messaging_page, messaging_server.base_url
    partner_name = f"hightouch-{uuid.uuid4().hex[:6]}"
    domain = f"{uuid.uuid4().hex[:8]}.example"
    with runtime.transaction() as conn:
        workspace = create_workspace(conn, "Acme production")
        partner = create_partner(conn, partner_name, "Hightouch")
    # The customers exist in the platform already (importing a cohort never creates users).
    customers = [f"customer-{i}" for i in range(10)]
    tracked = httpx.post(
        f"{base_url}/users/track",
        headers={"Authorization": f"Bearer {workspace.rest_api_key.plain}"},
        json={
            "attributes": [
                {"external_id": c, "email": f"{c}@{domain}", "first_name": f"Cust{i}"} for i, c in enumerate(customers)
            ]
        },
        timeout=30,
    )
    assert tracked.status_code == 201, tracked.text

    # 1. Log in; Partner Integrations > Technology Partners > Hightouch; generate a key and copy it.
    browser_sign_in(page, make_user(runtime, "admin", [workspace.id]), shots)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Technology Partners").click()
    # Other tests register partners shown as "Hightouch" too (names are platform-wide): pick this one.
    page.locator(f'a.tile[href$="/technology-partners/{partner_name}"]').click()
    rest_endpoint = page.get_by_label("REST endpoint").input_value()
    assert rest_endpoint == base_url
    page.get_by_role("button", name="Generate key").click()
    page.get_by_role("button", name="Copy").first.click()
    page.get_by_role("button", name="Copied").wait_for()
    key = page.evaluate("navigator.clipboard.readText()")
    assert key == page.get_by_role("textbox", name="New data import key").input_value() and key.startswith("cfdik_")
    screenshot(page, shots, "02-key-generated")

    # 2. The partner (Hightouch's role) names a cohort and imports 7 customers, plus one unknown id, over HTTP.
    def import_users(secret: str, ids: list[str]) -> httpx.Response:
        body = {
            "partner_api_key": partner.api_key.plain,
            "client_secret": secret,
            "cohort_id": "high-value",
            "cohort_changes": [{"user_ids": ids}],
        }
        return httpx.post(f"{rest_endpoint}/partners/{partner_name}/cohorts/users", json=body, timeout=30)

    named = httpx.post(
        f"{rest_endpoint}/partners/{partner_name}/cohorts",
        json={
            "partner_api_key": partner.api_key.plain,
            "client_secret": key,
            "cohort_id": "high-value",
            "name": "High value customers",
            "created_at": "2026-12-01T00:00:00Z",
        },
        timeout=30,
    )
    assert named.status_code == 201, named.text
    members = customers[:7]
    imported = import_users(key, [*members, "not-a-customer"])
    assert imported.status_code == 201 and imported.json()["added"] == 7, imported.text
    assert imported.json()["unmatched"] == 1

    # 3. The cohort and its size.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cohorts").click()
    expect(page.get_by_role("heading", name="Hightouch Cohorts")).to_be_visible()
    page.get_by_role("link", name="High value customers").click()
    expect(page.locator("#cohort-size")).to_have_text("7")
    cohort_size = page.locator("#cohort-size").inner_text()
    screenshot(page, shots, "03-cohort")

    # 4. Segments: "Hightouch Cohorts includes High value customers"; the exact size equals the cohort's.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="Create segment").click()
    row = page.locator('[data-filter="0.0"]')
    row.get_by_label("Filter 1 of group 1", exact=True).select_option(label="Hightouch Cohorts")
    row.get_by_label("Operator").select_option(label="includes")
    row.get_by_label("Cohort").select_option(label="High value customers")
    expect(page.locator("#size-total")).to_have_text(cohort_size)
    expect(page.locator("#size-email")).to_have_text("7")
    page.get_by_label("Segment name").fill("High value")
    screenshot(page, shots, "04-segment-builder")
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_role("status")).to_have_text("Segment “High value” saved.")

    # 5. An email campaign to it, sent now; the counts arrive on the page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="Create email campaign").click()
    page.get_by_label("Campaign name").fill("Thank you")
    page.get_by_label("High value").check()
    page.get_by_label("From", exact=True).fill("Acme <hello@acme.example>")
    page.get_by_label("Subject").fill("Thank you, {{ first_name }}")
    page.get_by_label("Text body").fill("Dear {{ first_name }}, thank you for being a customer.")
    page.get_by_label("Preview for user (external ID or Braze ID)").fill("customer-3")
    expect(page.locator("#preview-subject")).to_have_text("Thank you, Cust3")
    screenshot(page, shots, "05-campaign-editor")
    page.get_by_role("button", name="Create campaign").click()
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#campaign-sends tbody .badge")).to_have_text("Completed", timeout=30_000)
    expect(page.locator(".count-sent")).to_have_text("7")
    screenshot(page, shots, "06-campaign-sent")

    # 6. The messages are in the local SMTP server: one per cohort member, rendered for each.
    received = sorted((m["To"], m["Subject"]) for m in smtp_sink.for_domain(domain))
    assert received == sorted((f"{c}@{domain}", f"Thank you, Cust{customers.index(c)}") for c in members)

    # 7. Invalidate the key: the next import is answered 401 "Invalid client secret".
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Technology Partners").click()
    # Other tests register partners shown as "Hightouch" too (names are platform-wide): pick this one.
    page.locator(f'a.tile[href$="/technology-partners/{partner_name}"]').click()
    page.get_by_role("row", name=key[:14]).get_by_role("link", name="Invalidate").click()
    page.get_by_role("button", name="Invalidate key").click()
    expect(page.get_by_role("status")).to_contain_text("is invalidated")
    screenshot(page, shots, "07-key-invalidated")
    refused = import_users(key, customers[7:])
    assert refused.status_code == 401 and refused.json() == {"message": "Invalid client secret"}
