"""Settings > Frequency capping: set, change and remove a rule per channel in a real browser; over HTTP, bad input
explained beside its field with nothing changed, admins only for changes, CSRF, workspace scoping, and the
campaigns and Canvases that ignore the rules. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from cohortflow.platform.messaging import campaigns, canvas, frequency
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.support import ServerProcess, Tenant, add_cohort_rows, make_tenant

HOOK = {"channel": "webhook", "url": "http://127.0.0.1:9/", "body": {}}


def caps(runtime: PlatformRuntime, workspace_id: str) -> list[dict[str, Any]]:
    with runtime.transaction() as conn:
        return [c.model_dump() for c in frequency.list_caps(conn, workspace_id)]


def path_of(tenant: Tenant) -> str:
    return f"/dashboard/w/{tenant.workspace_id}/settings/frequency-capping"


@pytest.fixture
def ignoring(runtime: PlatformRuntime, tenant: Tenant) -> dict[str, str]:
    """A campaign and a Canvas that ignore the caps, and a campaign that follows them: their ids by name."""
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", [])
    with runtime.transaction() as conn:
        segment = service.create_segment(
            conn, tenant.workspace_id, "VIPs", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip"}
        ).id
        made = [
            campaigns.create_campaign(conn, tenant.workspace_id, {"name": name, "segment_ids": [segment],
                                      "message": HOOK, "ignore_frequency_capping": ignores})
            for name, ignores in (("Password reset", True), ("Weekly digest", False))
        ]  # fmt: skip
        journey = canvas.create_canvas(
            conn,
            tenant.workspace_id,
            {"name": "Order updates", "entry_segment_id": segment, "ignore_frequency_capping": True,
             "steps": [{"id": "m", "type": "message", "message": HOOK}]},
        )  # fmt: skip
    return {**{c.name: c.id for c in made}, journey.name: journey.id}


def test_set_change_and_remove_a_rule_in_the_browser(
    page: Any, runtime: PlatformRuntime, tenant: Tenant, ignoring: dict[str, str], shots: Path
) -> None:
    browser_sign_in(page, make_user(runtime, "admin", [tenant.workspace_id]))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Frequency capping").click()
    expect(page.get_by_role("heading", name="Frequency capping", level=1)).to_be_visible()
    expect(page.get_by_text("No rule: users get every message")).to_be_visible()
    ignored = page.get_by_role("region", name="Campaigns and Canvases that ignore frequency capping")
    expect(ignored.get_by_role("link", name="Password reset")).to_be_visible()
    expect(ignored.get_by_role("link", name="Order updates")).to_be_visible()
    expect(ignored.get_by_role("link", name="Weekly digest")).to_have_count(0)
    screenshot(page, shots, "01-no-rule")

    # Add: no more than 2 email messages per user every 1 day.
    page.get_by_label("No more than").fill("2")
    page.get_by_label("Channel").select_option("email")
    page.get_by_label("per user every").fill("1")
    page.get_by_label("Unit of the period").select_option("days")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_role("status")).to_have_text("Rule saved: no more than 2 email messages per user every 1 day.")
    expect(page.get_by_role("row", name="No more than 2 email messages per user every 1 day")).to_be_visible()
    assert caps(runtime, tenant.workspace_id) == [{"channel": "email", "max_messages": 2, "period_seconds": 86400}]
    # With email ruled, the add form offers the webhook channel only.
    expect(page.get_by_label("Channel").locator("option")).to_have_text(["Webhook messages"])
    screenshot(page, shots, "02-rule-added")

    # Change it: 3 every 12 hours; the form opens with the rule's values, the channel fixed.
    page.get_by_role("link", name="Edit the email rule").click()
    expect(page.get_by_role("heading", name="Change the email rule")).to_be_visible()
    expect(page.get_by_label("No more than")).to_have_value("2")
    expect(page.get_by_label("Unit of the period")).to_have_value("days")
    page.get_by_label("No more than").fill("3")
    page.get_by_label("per user every").fill("12")
    page.get_by_label("Unit of the period").select_option("hours")
    screenshot(page, shots, "03-editing")

    # A bad value: the error beside its field, what was typed kept, nothing changed.
    page.get_by_label("per user every").fill("0")
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("alert")).to_have_text("The rule was not saved: fix what is marked below.")
    period_error = page.locator("#period-error")
    expect(period_error).to_have_text(
        "Enter a whole number of minutes, hours, days or weeks, from 1 minute to 366 days."
    )
    expect(page.get_by_label("per user every")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("No more than")).to_have_value("3")
    expect(page.get_by_role("heading", name="Change the email rule")).to_be_visible()
    assert caps(runtime, tenant.workspace_id)[0]["period_seconds"] == 86400
    screenshot(page, shots, "04-bad-value")
    page.get_by_label("per user every").fill("12")
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("row", name="No more than 3 email messages per user every 12 hours")).to_be_visible()
    assert caps(runtime, tenant.workspace_id) == [{"channel": "email", "max_messages": 3, "period_seconds": 43200}]

    # A webhook rule beside it, then the email rule removed: the webhook rule stays.
    page.get_by_label("No more than").fill("1")
    page.get_by_label("per user every").fill("30")
    page.get_by_label("Unit of the period").select_option("minutes")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_role("row", name="No more than 1 webhook message per user every 30 minutes")).to_be_visible()
    expect(page.get_by_role("heading", name="Add a rule")).to_have_count(0)
    expect(page.get_by_text("Every channel has its rule")).to_be_visible()
    screenshot(page, shots, "05-two-rules")
    page.get_by_role("button", name="Remove the email rule").click()
    expect(page.get_by_role("status")).to_have_text("The email rule is removed: email messages are not capped.")
    expect(page.get_by_role("row", name=re.compile("email messages"))).to_have_count(0)
    assert caps(runtime, tenant.workspace_id) == [{"channel": "webhook", "max_messages": 1, "period_seconds": 1800}]
    screenshot(page, shots, "06-removed")

    # The campaign and the Canvas say whether the caps apply to them, linking here.
    page.goto(f"/dashboard/w/{tenant.workspace_id}/campaigns/{ignoring['Password reset']}")
    expect(page.get_by_role("link", name="ignored")).to_have_attribute("href", re.compile("frequency-capping$"))
    page.goto(f"/dashboard/w/{tenant.workspace_id}/canvas/{ignoring['Order updates']}")
    expect(page.get_by_text("Frequency caps are ignored by this Canvas.")).to_be_visible()


def test_bad_input_is_explained_beside_its_field_and_changes_nothing(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    with runtime.transaction() as conn:
        frequency.set_caps(conn, tenant.workspace_id, [{"channel": "email", "max_messages": 5, "period_seconds": 3600}])
    before = caps(runtime, tenant.workspace_id)
    admin = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    csrf = csrf_of(admin.get(path_of(tenant)).text)
    good = {"csrf_token": csrf, "channel": "webhook", "max_messages": "2", "every": "1", "unit": "days"}
    cases = [
        ({"max_messages": ""}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"max_messages": "0"}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"max_messages": "1001"}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"max_messages": "2.5"}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"max_messages": "²"}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"max_messages": "9" * 5000}, "max_messages", "Enter a whole number of messages from 1 to 1,000."),
        ({"every": "-1"}, "period", "from 1 minute to 366 days."),
        ({"every": "367"}, "period", "from 1 minute to 366 days."),
        ({"every": "53", "unit": "weeks"}, "period", "from 1 minute to 366 days."),
        ({"unit": "fortnights"}, "period", "Enter a whole number of minutes, hours, days or weeks"),
        ({"channel": "sms"}, "channel", "Choose a channel: email or webhook."),
    ]
    for change, field, words in cases:
        answer = admin.post(path_of(tenant), data={**good, **change})
        assert answer.status_code == 400, change
        error = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', answer.text)
        assert error and words in error.group(1), (change, answer.text[-3000:])
        assert 'aria-describedby="' + field + '-error"' in answer.text, change
        assert caps(runtime, tenant.workspace_id) == before, change
    # The largest values the domain allows are accepted.
    assert admin.post(path_of(tenant), data={**good, "max_messages": "1000", "every": "366"}).status_code == 200
    assert caps(runtime, tenant.workspace_id)[1] == {
        "channel": "webhook",
        "max_messages": 1000,
        "period_seconds": 366 * 86400,
    }
    # Removing a rule that does not exist is a 404.
    assert admin.post(f"{path_of(tenant)}/sms/remove", data={"csrf_token": csrf}).status_code == 404
    admin.close()


def test_a_period_set_through_the_api_is_shown_and_kept(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    """The API takes any number of seconds; the page shows 90 seconds as such and an edit keeps the unit."""
    with runtime.transaction() as conn:
        frequency.set_caps(conn, tenant.workspace_id, [{"channel": "email", "max_messages": 1, "period_seconds": 90}])
    admin = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    assert "No more than 1 email message per user every 90 seconds" in admin.get(path_of(tenant)).text
    edit = admin.get(path_of(tenant), params={"channel": "email"}).text
    assert '<option value="seconds" selected>seconds</option>' in edit
    answer = admin.post(
        path_of(tenant),
        data={"csrf_token": csrf_of(edit), "editing": "1", "channel": "email", "max_messages": "4", "every": "90",
              "unit": "seconds"},
    )  # fmt: skip
    assert answer.status_code == 200
    assert caps(runtime, tenant.workspace_id) == [{"channel": "email", "max_messages": 4, "period_seconds": 90}]
    admin.close()


def test_only_admins_change_rules_with_csrf_in_their_own_workspace(
    server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, ignoring: dict[str, str]
) -> None:
    other = make_tenant(runtime)
    theirs = [{"channel": "webhook", "max_messages": 7, "period_seconds": 604800}]
    with runtime.transaction() as conn:
        frequency.set_caps(conn, other.workspace_id, theirs)
        frequency.set_caps(
            conn, tenant.workspace_id, [{"channel": "email", "max_messages": 2, "period_seconds": 86400}]
        )
    mine = caps(runtime, tenant.workspace_id)
    form = {"channel": "webhook", "max_messages": "1", "every": "1", "unit": "days"}

    # A marketer reads the rules and who ignores them, with no form and no button; a change is refused.
    marketer = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    shown = marketer.get(path_of(tenant))
    assert shown.status_code == 200
    assert "No more than 2 email messages per user every 1 day" in shown.text
    assert "Password reset" in shown.text and "Order updates" in shown.text and "Weekly digest" not in shown.text
    assert "Only admins can change these rules." in shown.text
    assert "Add rule" not in shown.text and "/remove" not in shown.text
    assert "Frequency capping" in marketer.get(f"/dashboard/w/{tenant.workspace_id}/").text
    csrf = csrf_of(shown.text)
    assert marketer.post(path_of(tenant), data={"csrf_token": csrf, **form}).status_code == 403
    assert marketer.post(f"{path_of(tenant)}/email/remove", data={"csrf_token": csrf}).status_code == 403
    assert caps(runtime, tenant.workspace_id) == mine
    marketer.close()

    admin = sign_in(server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    # Without the CSRF token nothing changes.
    assert admin.post(path_of(tenant), data=form).status_code == 403
    assert admin.post(f"{path_of(tenant)}/email/remove").status_code == 403
    assert caps(runtime, tenant.workspace_id) == mine
    # Another workspace: not granted is a 404; its rules are neither shown here nor removed from here.
    csrf = csrf_of(admin.get(path_of(tenant)).text)
    assert admin.get(path_of(other)).status_code == 404
    assert admin.post(path_of(other), data={"csrf_token": csrf, **form}).status_code == 404
    page = admin.get(path_of(tenant)).text
    assert "7 webhook messages" not in page
    assert admin.post(f"{path_of(tenant)}/webhook/remove", data={"csrf_token": csrf}).status_code == 404
    assert caps(runtime, other.workspace_id) == theirs
    admin.close()
