"""Campaigns in a real browser: the editor with its Liquid preview for a chosen user, send now while the counts
move, edit, schedule; email goes to a loopback SMTP server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import make_user
from tests.platform.messaging.helpers import add_users
from tests.platform.messaging.sinks import SmtpSink
from tests.support import Tenant, add_cohort_rows


def test_email_campaign_in_the_browser(
    messaging_page: Any, runtime: PlatformRuntime, tenant: Tenant, smtp_sink: SmtpSink, shots: Path
) -> None:
    page = messaging_page
    domain = f"{uuid.uuid4().hex[:8]}.example"
    # 8 members: 6 with an email address (one unsubscribed), 2 without.
    specs = [
        {
            "external_id": f"m{i}",
            "first_name": f"Name{i}",
            "email": f"m{i}@{domain}" if i < 6 else None,
            "email_subscribe": "unsubscribed" if i == 5 else None,
            "custom_attributes": {"plan": "gold"} if i % 2 == 0 else {},
        }
        for i in range(8)
    ]
    ids = add_users(runtime, tenant.workspace_id, specs)
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", ids)
    with runtime.transaction() as conn:
        service.create_segment(
            conn, tenant.workspace_id, "VIPs", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip"}
        )
    browser_sign_in(page, make_user(runtime, "marketer", [tenant.workspace_id]))

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    expect(page.get_by_text("No campaign yet")).to_be_visible()
    screenshot(page, shots, "01-campaigns-empty")
    page.get_by_role("link", name="Create email campaign").click()
    page.get_by_label("Campaign name").fill("VIP news")
    page.get_by_label("VIPs").check()
    expect(page.locator("#preview-users option")).to_have_count(8)  # members offered to preview for
    page.get_by_label("From", exact=True).fill("Acme <news@acme.example>")
    page.get_by_label("Subject").fill("Hello {{ first_name }}")
    page.get_by_label("Text body").fill("Your plan: {{ plan }}.")
    page.get_by_label("Preview for user (external ID or Braze ID)").fill("m0")
    expect(page.locator("#preview-subject")).to_have_text("Hello Name0")
    expect(page.locator("#preview-text")).to_have_text("Your plan: gold.")
    # m1 has no plan: a send would fail for them, and the preview says so before anything is sent.
    page.get_by_label("Preview for user (external ID or Braze ID)").fill("m1")
    expect(page.locator("#campaign-preview")).to_contain_text("A send fails for this user: template error")
    screenshot(page, shots, "02-editor-preview-problem")
    page.get_by_label("Text body").fill('Your plan: {{ plan | default: "free" }}.')
    expect(page.locator("#preview-text")).to_have_text("Your plan: free.")
    page.get_by_label("Rate limit (messages per minute, optional)").fill("100")  # about 0.6 s a message
    screenshot(page, shots, "03-editor-preview")
    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_role("status")).to_have_text("Campaign “VIP news” saved.")
    screenshot(page, shots, "04-campaign")

    # Send now, double-clicked as people do: one send starts; the counts move while it sends, then it completes.
    page.get_by_role("button", name="Send now").dblclick()
    badge = page.locator("#campaign-sends tbody .badge")
    expect(badge).to_have_text("Running", timeout=15_000)
    page.get_by_role("button", name="Send now").click()  # and once more while it runs
    expect(page.get_by_role("status")).to_contain_text("Not sent again: send")
    expect(page.locator("#campaign-sends tbody tr")).to_have_count(1)
    screenshot(page, shots, "05-sending")
    expect(badge).to_have_text("Completed", timeout=30_000)
    expect(page.locator(".count-sent")).to_have_text("5")
    expect(page.locator(".count-skipped")).to_have_text("3")  # unsubscribed, and two without an address
    expect(page.locator(".count-failed")).to_have_text("0")
    screenshot(page, shots, "06-sent")
    received = sorted((m["To"], m["Subject"]) for m in smtp_sink.for_domain(domain))
    assert received == [(f"m{i}@{domain}", f"Hello Name{i}") for i in range(5)]
    assert "Your plan: free." in smtp_sink.to(f"m1@{domain}")[0].get_content()

    # The send's log, skipped only.
    page.get_by_role("link", name="#", exact=False).first.click()
    page.get_by_role("link", name="Skipped").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    screenshot(page, shots, "07-send-log")
    page.go_back()
    page.go_back()

    # Edit the template: the editor opens with the saved campaign and a preview.
    page.get_by_role("link", name="Edit campaign").click()
    expect(page.get_by_label("Subject")).to_have_value("Hello {{ first_name }}")
    page.get_by_label("Subject").fill("Hi again {{ first_name }}")
    expect(page.locator("#preview-subject")).to_have_text("Hi again Name0")
    page.get_by_role("button", name="Save campaign").click()
    expect(page.get_by_role("status")).to_have_text("Campaign “VIP news” saved.")

    # Schedule: a time in the past is refused; a future one is listed.
    page.get_by_label("Or schedule for (UTC)").fill((datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Schedule").click()
    expect(page.get_by_role("status")).to_contain_text("Not scheduled: at must be in the future")
    at = datetime.now(UTC) + timedelta(days=3)
    page.get_by_label("Or schedule for (UTC)").fill(at.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Schedule").click()
    expect(page.get_by_role("status")).to_contain_text(f"scheduled for {at.strftime('%Y-%m-%d %H:%M')} UTC")
    expect(page.locator("#campaign-sends tbody .badge").first).to_have_text("Scheduled")
    screenshot(page, shots, "08-scheduled")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    expect(page.get_by_role("cell", name="VIP news")).to_be_visible()
    screenshot(page, shots, "09-campaigns")
