"""Campaign pages over HTTP, against a real server that sends to loopback receivers, on SQLite and PostgreSQL:
the editor and its fragments, errors that save nothing, edit, send now, schedule, and who may see what."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cohortflow.platform.messaging import campaigns
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments import service
from tests.platform.dashboard.helpers import csrf_of, make_user, sign_in
from tests.platform.messaging.helpers import add_users
from tests.platform.messaging.sinks import WebhookSink
from tests.support import ServerProcess, Tenant, add_cohort_rows, make_tenant

FRAGMENT = {"X-Requested-With": "cohortflow-live"}


@pytest.fixture
def audience(runtime: PlatformRuntime, tenant: Tenant) -> str:
    """A segment of 4 users: three identified (one without email), one anonymous; returns its id."""
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [
            {
                "external_id": "ada",
                "first_name": "Ada",
                "email": "ada@example.com",
                "custom_attributes": {"plan": "gold"},
            },
            {"external_id": "bob", "first_name": "Bob", "email": "bob@example.com"},
            {"external_id": "cy", "first_name": "Cy"},
            {"first_name": "Anon", "email": "anon@example.com"},
        ],
    )
    add_cohort_rows(runtime, tenant, "vip", "VIP customers", ids)
    with runtime.transaction() as conn:
        return service.create_segment(
            conn, tenant.workspace_id, "VIPs", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip"}
        ).id


def email_fields(segment_id: str, **extra: str) -> dict[str, str]:
    return {
        "name": "Welcome",
        "channel": "email",
        "segment_ids": segment_id,
        "from_address": "Acme <news@acme.example>",
        "subject": "Hello {{ first_name }}",
        "text": "Your plan: {{ plan | default: 'free' }}",
        **extra,
    }


def names(runtime: PlatformRuntime, workspace_id: str) -> list[str]:
    with runtime.transaction() as conn:
        return [c.name for c in campaigns.list_campaigns(conn, workspace_id)]


def test_editor_fragments_and_preview(
    messaging_server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, audience: str
) -> None:
    client = sign_in(messaging_server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/campaigns"
    new = client.get(f"{base}/new?segment={audience}")
    assert new.status_code == 200 and 'value="ada"' in new.text  # the first member is the preview user
    assert "To see the message as ada would get it: enter a sender, enter a subject, enter a text body." in new.text
    csrf = csrf_of(new.text)

    preview = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-preview", "preview_user": "ada", **email_fields(audience)},
        headers=FRAGMENT,
    )
    assert preview.text.lstrip().startswith('<div id="campaign-preview"')
    assert '<dd id="preview-subject">Hello Ada</dd>' in preview.text and "Your plan: gold" in preview.text
    # The user without an email address: a send would skip them, and the page says so.
    skipped = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-preview", "preview_user": "cy", **email_fields(audience)},
        headers=FRAGMENT,
    )
    assert "A send skips this user: unreachable: no email address." in skipped.text
    broken = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-preview", "preview_user": "ada",
              **email_fields(audience, subject="Hi {{ first_name")},
        headers=FRAGMENT,
    )  # fmt: skip
    assert "malformed Liquid template" in broken.text
    unknown = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-preview", "preview_user": "zed", **email_fields(audience)},
        headers=FRAGMENT,
    )
    assert "No user with external ID or Braze ID &#39;zed&#39; in this workspace." in unknown.text

    # The audience fragment offers members of the chosen segments to preview for.
    chosen = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-audience", "segment_ids": audience},
        headers=FRAGMENT,
    )
    assert chosen.text.lstrip().startswith('<section id="campaign-audience"')
    assert re.findall(r'<option value="([^"]+)">', chosen.text)[:3] == ["ada", "bob", "cy"]
    # Switching the channel redraws the editor with the webhook fields shown.
    editor = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "fragment": "campaign-editor", **email_fields(audience, channel="webhook")},
        headers=FRAGMENT,
    )
    assert editor.text.lstrip().startswith('<div id="campaign-editor"')
    assert re.search(r'<div class="stack" hidden>\s*<label for="from-address">', editor.text)
    client.close()


def test_bad_input_is_explained_and_saves_nothing(
    messaging_server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, audience: str
) -> None:
    client = sign_in(messaging_server.base_url, make_user(runtime, "admin", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/campaigns"
    csrf = csrf_of(client.get(f"{base}/new").text)
    hook = {"channel": "webhook", "url": "https://hooks.example/x", "body": "{}"}
    cases: list[tuple[dict[str, str], str]] = [
        (email_fields(audience, name=""), "Give the campaign a name."),
        ({**email_fields(audience), "segment_ids": ""}, "Choose at least one segment to send to."),
        (email_fields(audience, subject=" "), "Enter a subject."),
        (email_fields(audience, from_address="not an address"), "from_address must be an email address"),
        (email_fields(audience, text="{% for %}"), "malformed Liquid template"),
        (email_fields(audience, rate_limit="fast"), "The rate limit must be a whole number"),
        ({**email_fields(audience), **hook, "body": "[1]"}, "The body must be a JSON object"),
        ({**email_fields(audience), **hook, "body": "{"}, "The body is not valid JSON"),
        ({**email_fields(audience), **hook, "headers": "X-Token"}, "Header line 1 must read “Name: value”."),
        ({**email_fields(audience), **hook, "url": "ftp://x"}, "url must be an absolute http:// or https:// URL"),
        ({**email_fields(audience), "segment_ids": "seg_ghost"}, "segment &#39;seg_ghost&#39; does not exist"),
    ]
    for fields, message in cases:
        answer = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "save", **fields})
        assert answer.status_code == 400, fields
        assert "The campaign was not saved" in answer.text and message in answer.text, (message, answer.text[-4000:])
    assert client.post(f"{base}/new", data={"action": "save", **email_fields(audience)}).status_code == 403
    assert names(runtime, tenant.workspace_id) == []
    # A second campaign with the same name is refused too.
    first = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "save", **email_fields(audience)})
    assert "Campaign “Welcome” saved." in first.text
    again = client.post(f"{base}/new", data={"csrf_token": csrf, "action": "save", **email_fields(audience)})
    assert again.status_code == 400 and "already exists" in again.text
    assert names(runtime, tenant.workspace_id) == ["Welcome"]
    client.close()


def test_edit_send_now_and_schedule(
    messaging_server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, audience: str, webhook_sink: WebhookSink
) -> None:
    client = sign_in(messaging_server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    base = f"/dashboard/w/{tenant.workspace_id}/campaigns"
    csrf = csrf_of(client.get(f"{base}/new").text)
    path = f"/hook-{uuid.uuid4().hex[:8]}"
    saved = client.post(
        f"{base}/new",
        data={"csrf_token": csrf, "action": "save", **email_fields(audience, name="Hooked", channel="webhook"),
              "url": webhook_sink.url(path), "body": '{"who": "{{ external_id }}", "plan": "{{ plan }}"}',
              "headers": "X-Source: dashboard"},
        follow_redirects=False,
    )  # fmt: skip
    assert saved.status_code == 303, saved.text[-2000:]
    page_url = saved.headers["location"]
    campaign_id = page_url.rsplit("/", 1)[1]
    # Edit: the plan gets a default, so users without one are not failed.
    edit = client.get(f"{page_url}/edit")
    assert edit.status_code == 200 and "X-Source: dashboard" in edit.text
    edited = client.post(
        f"{page_url}/edit",
        data={"csrf_token": csrf, "action": "save", **email_fields(audience, name="Hooked", channel="webhook"),
              "url": webhook_sink.url(path),
              "body": '{"who": "{{ external_id }}", "plan": "{{ plan | default: \\"free\\" }}"}',
              "headers": "X-Source: dashboard"},
    )  # fmt: skip
    assert "Campaign “Hooked” saved." in edited.text

    sent = client.post(f"{page_url}/send-now", data={"csrf_token": csrf})
    assert "started: its counts update below" in sent.text
    deadline = time.monotonic() + 30
    while "status-completed" not in (table := client.get(f"{page_url}/sends", headers=FRAGMENT).text):
        assert time.monotonic() < deadline, table
        time.sleep(0.2)
    assert "data-poll-url" not in table  # done: the page stops polling
    assert re.search(r'class="count-sent">3<', table) and re.search(r'class="count-skipped">1<', table)
    bodies = sorted((c.body["who"], c.body["plan"], c.headers["x-source"]) for c in webhook_sink.at(path))
    assert bodies == [("ada", "gold", "dashboard"), ("bob", "free", "dashboard"), ("cy", "free", "dashboard")]
    send_id = int(re.findall(r"/sends/(\d+)\"", table)[0])
    log = client.get(f"{page_url}/sends/{send_id}?status=skipped")
    assert log.status_code == 200 and "unreachable: anonymous user" in log.text

    # Schedule: a time in the past or no time is refused and explained; a future one is listed.
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    refused = client.post(f"{page_url}/schedule", data={"csrf_token": csrf, "at": past})
    assert "Not scheduled: at must be in the future" in refused.text
    assert (
        "Not scheduled: enter a date and a time"
        in client.post(f"{page_url}/schedule", data={"csrf_token": csrf, "at": "soon"}).text
    )
    future = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    scheduled = client.post(f"{page_url}/schedule", data={"csrf_token": csrf, "at": future.strftime("%Y-%m-%dT%H:%M")})
    assert f"scheduled for {future.strftime('%Y-%m-%d %H:%M')} UTC" in scheduled.text
    assert 'data-poll-seconds="10"' in scheduled.text and "status-scheduled" in scheduled.text
    with runtime.transaction() as conn:
        assert [s.status for s in campaigns.list_sends(conn, tenant.workspace_id, campaign_id)] == [
            "completed",
            "scheduled",
        ]
    listing = client.get(base)
    assert "Hooked" in listing.text and "status-scheduled" in listing.text
    client.close()


def test_campaigns_are_scoped_to_the_workspace_and_need_a_session(
    messaging_server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, audience: str
) -> None:
    other = make_tenant(runtime)
    add_cohort_rows(runtime, other, "theirs", "Theirs", [])
    with runtime.transaction() as conn:
        segment = service.create_segment(
            conn,
            other.workspace_id,
            "Theirs",
            {"type": "partner_cohort", "partner": other.partner, "cohort_id": "theirs"},
        )
        theirs = campaigns.create_campaign(
            conn,
            other.workspace_id,
            {"name": "Theirs", "segment_ids": [segment.id],
             "message": {"channel": "webhook", "url": "http://127.0.0.1:9/", "body": {}}},
        )  # fmt: skip
    mine = f"/dashboard/w/{tenant.workspace_id}/campaigns"
    with httpx.Client(base_url=messaging_server.base_url) as anonymous:
        assert anonymous.get(f"{mine}/{theirs.id}/sends", headers=FRAGMENT).status_code == 401
        assert anonymous.get(mine, follow_redirects=False).status_code == 303
    client = sign_in(messaging_server.base_url, make_user(runtime, "marketer", [tenant.workspace_id]))
    csrf = csrf_of(client.get(mine).text)
    for path in ("", "/edit", "/sends", "/sends/1"):
        assert client.get(f"{mine}/{theirs.id}{path}").status_code == 404, path
    for path, data in (("/send-now", {}), ("/schedule", {"at": "2100-01-01T00:00"}), ("/edit", {"action": "save"})):
        assert client.post(f"{mine}/{theirs.id}{path}", data={"csrf_token": csrf, **data}).status_code == 404, path
    # Their segment cannot be targeted from here either.
    answer = client.post(
        f"{mine}/new", data={"csrf_token": csrf, "action": "save", **email_fields(segment.id, name="Sneaky")}
    )
    assert answer.status_code == 400 and "does not exist in this workspace" in answer.text
    with runtime.transaction() as conn:
        assert campaigns.list_sends(conn, other.workspace_id, theirs.id) == []
    assert names(runtime, tenant.workspace_id) == []
    client.close()
