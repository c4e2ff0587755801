"""Canvas pages: build a journey in a real browser with its flow drawn as it grows, launch it, watch the per-step
counts as the worker moves users (on an injected clock); errors, edits and scoping over HTTP. SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from cohortflow.clock import utcnow
from cohortflow.platform.messaging import canvas
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from cohortflow.settings import MessagingSettings
from tests.platform.dashboard.conftest import browser_sign_in, screenshot
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.platform.messaging.helpers import add_users
from tests.platform.messaging.sinks import SmtpSink
from tests.support import ServerProcess, Tenant, add_cohort_rows, make_tenant

FRAGMENT = {"X-Requested-With": "cohortflow-live"}


def audience(runtime: PlatformRuntime, tenant: Tenant, domain: str) -> str:
    """6 members with email addresses; the first 3 on the gold plan. Returns the segment's id."""
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [
            {"external_id": f"c{i}", "first_name": f"C{i}", "email": f"c{i}@{domain}",
             "custom_attributes": {"plan": "gold" if i < 3 else "free"}}
            for i in range(6)
        ],
    )  # fmt: skip
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", ids)
    with runtime.transaction() as conn:
        return service.create_segment(
            conn, tenant.workspace_id, "VIPs", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip"}
        ).id


def fill_email(page: Any, index: int, subject: str) -> None:
    step = page.locator(f'[data-step="step-{index + 1}"]')
    step.get_by_label("From").fill("Acme <news@acme.example>")
    step.get_by_label("Subject").fill(subject)
    step.get_by_label("Text body").fill("Hello {{ first_name }}")


def test_build_launch_and_watch_a_canvas(
    messaging_page: Any, runtime: PlatformRuntime, tenant: Tenant, smtp_sink: SmtpSink,
    messaging_settings: MessagingSettings, shots: Path,
) -> None:  # fmt: skip
    page = messaging_page
    domain = f"{uuid.uuid4().hex[:8]}.example"
    audience(runtime, tenant, domain)
    browser_sign_in(page, make_user(runtime, "marketer", [tenant.workspace_id]))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Canvas").click()
    expect(page.get_by_text("No Canvas yet")).to_be_visible()
    page.get_by_role("link", name="Create Canvas").click()

    # Entry, then the steps: welcome email, wait a day, paths (gold / everyone else), gold offer, exit.
    page.get_by_label("Canvas name").fill("Welcome journey")
    page.get_by_label("Entry segment").select_option(label="VIPs")
    fill_email(page, 0, "Welcome {{ first_name }}")
    for kind in ("Delay", "Audience Paths", "Message", "Exit"):
        count = page.locator("[data-step]").count()
        page.get_by_role("button", name=f"+ {kind}").click()
        expect(page.locator("[data-step]")).to_have_count(count + 1)
    split = page.locator('[data-step="step-3"]')
    split.get_by_label("Path 1 name").fill("Gold")
    split.get_by_label("Filter of path 1 of step 3").select_option(label="Custom Attribute")
    split = page.locator('[data-step="step-3"]')
    split.get_by_label("Custom attribute name").fill("plan")
    split.get_by_label("Value").fill("gold")
    split.get_by_label("Then", exact=True).select_option(label="Message (step-4)")
    expect(page.locator(".flow-node.kind-message")).to_have_count(2)
    fill_email(page, 3, "Gold offer for {{ first_name }}")
    # The flow follows: five steps, all reached, the gold path into the second message.
    expect(page.locator(".flow-node")).to_have_count(6)
    expect(page.locator(".flow-node.unreached")).to_have_count(0)
    expect(page.locator(".flow-label", has_text="Gold")).to_have_count(1)
    screenshot(page, shots, "01-editor")
    page.get_by_role("button", name="Create Canvas").click()
    expect(page.get_by_role("status")).to_have_text("Canvas “Welcome journey” saved as a draft.")
    screenshot(page, shots, "02-draft")

    page.get_by_role("button", name="Launch Canvas").click()
    expect(page.get_by_role("status")).to_contain_text("is active")
    expect(page.get_by_role("link", name="Edit Canvas")).to_have_count(0)
    canvas_id = page.url.rsplit("/", 1)[1].split("?")[0]

    # The worker: users enter and get the welcome email, then wait; a day later they split.
    start = utcnow()
    first = canvas.advance_canvas(runtime.engine, messaging_settings, canvas_id, clock=lambda: start)
    assert first is not None and first.entered == 6
    page.reload()
    expect(page.locator("#canvas-entered")).to_have_text("6")
    expect(page.locator('tr[data-step="step-1"] .count-sent')).to_have_text("6")
    expect(page.get_by_text("worker run). Frequency caps apply to its messages.")).to_be_visible()
    screenshot(page, shots, "03-waiting")
    later = start + timedelta(days=1, minutes=1)
    canvas.advance_canvas(runtime.engine, messaging_settings, canvas_id, clock=lambda: later)
    # The page re-reads its counts by itself while the Canvas is active.
    expect(page.locator('tr[data-step="step-4"] .count-sent')).to_have_text("3", timeout=15_000)
    expect(page.locator(".flow-label", has_text="Gold: 3")).to_be_visible()
    expect(page.locator(".flow-label", has_text="Everyone Else: 3")).to_be_visible()
    screenshot(page, shots, "04-counts")
    offers = sorted(m["Subject"] for m in smtp_sink.for_domain(domain) if m["Subject"].startswith("Gold"))
    assert offers == ["Gold offer for C0", "Gold offer for C1", "Gold offer for C2"]

    # An active Canvas cannot be edited.
    page.goto(page.url.split("?")[0] + "/edit")
    expect(page.get_by_role("status")).to_have_text("“Welcome journey” is active: only a draft can be edited.")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Canvas").click()
    expect(page.get_by_role("cell", name="Welcome journey")).to_be_visible()
    screenshot(page, shots, "05-list")


def test_canvas_errors_edits_and_scoping(server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant) -> None:
    segment_id = audience(runtime, tenant, "scope.example")
    client = sign_in(server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/canvas"
    csrf = csrf_of(client.get(f"{base}/new").text)
    email = {"channel": "email", "from_address": "a@acme.example", "subject": "Hi", "text": "Hello"}
    step0 = {f"s0.{k}": v for k, v in {"id": "step-1", "type": "message", **email}.items()}
    step1 = {"s1.id": "step-2", "s1.type": "delay", "s1.days": "1"}

    # Problems of the form, then of the journey (a loop), are explained and save nothing.
    bad = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "save", **step0, "s0.subject": ""})
    assert bad.status_code == 400 and "Give the Canvas a name." in bad.text and "Enter a subject." in bad.text
    loop = {"csrf_token": csrf, "name": "Loop", "entry_segment_id": segment_id, **step0, "s0.next": "step-2",
            **step1, "s1.next": "step-1"}  # fmt: skip
    drawn = client.post(f"{base}/new", data={**loop, "fragment": "canvas-editor"}, headers=FRAGMENT)
    assert drawn.text.lstrip().startswith('<div id="canvas-editor"') and "flow-edge back" in drawn.text
    refused = client.post(f"{base}/new", data={**loop, "action": "save"})
    assert refused.status_code == 400 and "steps form a cycle" in refused.text
    with runtime.transaction() as conn:
        assert canvas.list_canvases(conn, tenant.workspace_id) == []

    # Saved, edited as a draft (renamed), then the edit page shows the saved journey.
    saved = client.post(f"{base}/new", data={**loop, "s1.next": "", "action": "save"}, follow_redirects=False)
    assert saved.status_code == 303, saved.text[-3000:]
    page_url = saved.headers["location"]
    edit = client.get(f"{page_url}/edit")
    assert (
        'value="Loop"' in edit.text
        and 'name="s1.days" type="text" inputmode="numeric" class="w-num-input" value="1"' in edit.text
    )
    renamed = client.post(f"{page_url}/edit", data={**loop, "s1.next": "", "name": "Straight", "action": "save"})
    assert "Canvas “Straight” saved as a draft." in renamed.text

    # Another workspace's Canvas is a 404 everywhere; no session: the fragment answers 401.
    other = make_tenant(runtime)
    other_segment = audience(runtime, other, "other.example")
    with runtime.transaction() as conn:
        theirs = canvas.create_canvas(
            conn, other.workspace_id,
            {"name": "Theirs", "entry_segment_id": other_segment, "steps": [{"id": "x", "type": "exit"}]},
        )  # fmt: skip
    for path in ("", "/edit", "/stats"):
        assert client.get(f"{base}/{theirs.id}{path}").status_code == 404, path
    assert client.post(f"{base}/{theirs.id}/launch", data={"csrf_token": csrf}).status_code == 404
    assert client.post(f"{base}/{theirs.id}/edit", data={**loop, "action": "save"}).status_code == 404
    with runtime.transaction() as conn:
        assert canvas.get_canvas(conn, other.workspace_id, theirs.id).status == "draft"
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.get(f"{base}/{theirs.id}/stats", headers=FRAGMENT).status_code == 401
    client.close()
