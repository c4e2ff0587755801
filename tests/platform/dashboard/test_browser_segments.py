"""Segments in a real browser: the builder's live size as filters change, groups, errors, save, preview, edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import update

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from cohortflow.platform.store.schema import partners
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import make_user
from tests.platform.messaging.helpers import add_users
from tests.support import ServerProcess, Tenant, add_cohort_rows


def test_segment_builder_in_the_browser(
    page: Any, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, shots: Path
) -> None:
    # 30 users: even ones in France; every third has no email; user 5 unsubscribed; the last 3 anonymous.
    specs = [
        {
            "external_id": f"u{i}" if i < 27 else None,
            "email": None if i % 3 == 0 else f"u{i}@example.com",
            "country": "FR" if i % 2 == 0 else "US",
            "email_subscribe": "unsubscribed" if i == 5 else None,
            "custom_attributes": {"age": 20 + i},
        }
        for i in range(30)
    ]
    ids = add_users(runtime, tenant.workspace_id, specs)
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", ids[:12])
    add_cohort_rows(runtime, tenant, "churn", "Churn risk", ids[20:])
    with runtime.transaction() as conn:  # the partner as the seed names it (its URL name stays unique)
        conn.execute(update(partners).where(partners.c.name == tenant.partner).values(display_name="Hightouch"))
    label = "Hightouch Cohorts"
    browser_sign_in(page, make_user(runtime, "marketer", [tenant.workspace_id]))

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    expect(page.get_by_text("No segment yet")).to_be_visible()
    screenshot(page, shots, "01-segments-empty")
    page.get_by_role("link", name="Create segment").click()
    size = page.locator("#size-total")

    # "<Partner> Cohorts" includes a cohort chosen by name: the exact size is the cohort's.
    first = page.locator('[data-filter="0.0"]')
    expect(first.get_by_label("Filter 1 of group 1", exact=True)).to_have_value(f"cohort:{tenant.partner}")
    first.get_by_label("Cohort").select_option(label="VIP customers")
    expect(size).to_have_text("12")
    expect(page.locator("#size-email")).to_have_text("7")  # 12 minus 0, 3, 6, 9 (no email) minus 5 (unsubscribed)
    expect(page.locator("#size-webhook")).to_have_text("12")
    screenshot(page, shots, "02-builder-cohort")

    # AND a profile attribute, typed: the size follows the typing.
    page.get_by_role("button", name="+ Add filter", exact=True).click()
    second = page.locator('[data-filter="0.1"]')
    second.get_by_label("Filter 2 of group 1", exact=True).select_option(label="Profile Attribute")
    expect(second.get_by_label("Profile attribute")).to_have_value("country")
    second.get_by_label("Value").fill("FR")
    expect(size).to_have_text("6")
    # The group's AND becomes OR: 12 VIPs + 15 in France - 6 in both.
    page.get_by_label("Match").select_option("or")
    expect(size).to_have_text("21")

    # A second group, AND: custom attribute age > 40 (users 21..29), typed wrong first.
    page.get_by_role("button", name="+ Add filter group").click()
    group2 = page.locator('[data-filter="1.0"]')
    group2.get_by_label("Filter 1 of group 2", exact=True).select_option(label="Custom Attribute")
    group2 = page.locator('[data-filter="1.0"]')
    group2.get_by_label("Custom attribute name").fill("age")
    group2.get_by_label("Operator").select_option("greater_than")
    page.locator('[data-filter="1.0"]').get_by_label("Value").fill("forty")
    expect(page.locator("#segment-size")).to_contain_text("Group 2, filter 1: “is more than” needs a number")
    expect(size).to_have_count(0)
    screenshot(page, shots, "03-builder-problem")
    page.locator('[data-filter="1.0"]').get_by_label("Value").fill("40")
    # (VIP or FR) and age > 40: 22, 24, 26, 28 (France; none is a VIP).
    expect(size).to_have_text("4")
    expect(page.get_by_text("AND", exact=True)).to_be_visible()
    screenshot(page, shots, "04-builder-groups")
    page.get_by_label("Users must match").select_option("or")
    expect(size).to_have_text("26")  # 21 + 9 - 4

    # Save without a name: refused, explained, nothing saved.
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_text("Give the segment a name.")).to_be_visible()
    with runtime.transaction() as conn:
        assert service.list_segments(conn, tenant.workspace_id) == []
    page.get_by_label("Segment name").fill("VIPs, France or over 40")
    page.get_by_role("button", name="Create segment").click()
    expect(page.get_by_role("status")).to_have_text("Segment “VIPs, France or over 40” saved.")
    expect(size).to_have_text("26")
    screenshot(page, shots, "05-segment-saved")

    # Preview members, then the list.
    page.get_by_role("link", name="Preview members").click()
    expect(page.locator("tbody tr")).to_have_count(26)
    screenshot(page, shots, "06-preview")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    expect(page.get_by_role("cell", name="VIPs, France or over 40")).to_be_visible()
    screenshot(page, shots, "07-segments")

    # Edit: remove the second group, switch the cohort to "does not include".
    page.get_by_role("link", name="VIPs, France or over 40").click()
    page.get_by_role("button", name="Remove filter 1 of group 2").click()
    expect(page.get_by_text("Filter group 2")).to_have_count(0)
    expect(size).to_have_text("21")
    page.locator('[data-filter="0.0"]').get_by_label("Operator").select_option("does_not_include")
    expect(size).to_have_text("24")  # not a VIP (18) or in France (15), minus the 9 in both
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("status")).to_contain_text("saved")
    with runtime.transaction() as conn:
        (saved,) = service.list_segments(conn, tenant.workspace_id)
        assert service.segment_size(conn, tenant.workspace_id, saved.id, now=runtime.clock()).total == 24
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    described = f"{label} does not include “VIP customers” OR Country equals FR"
    expect(page.get_by_role("cell", name=described)).to_be_visible()
