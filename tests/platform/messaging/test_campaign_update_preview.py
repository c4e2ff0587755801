"""``PUT /campaigns/{id}`` and ``POST /campaigns/preview``: the domain functions the dashboard's editor uses."""

from __future__ import annotations

import uuid

import httpx

from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.messaging.helpers import add_cohort, add_users, auth, create_segment, wait_for_send
from tests.platform.messaging.sinks import SmtpSink
from tests.support import Tenant

EMAIL = {"channel": "email", "from_address": "news@acme.example", "subject": "Hi {{ first_name }}", "text": "x"}


def test_update_replaces_the_definition_or_changes_nothing(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, smtp_sink: SmtpSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [{"external_id": f"upd-{i}", "first_name": f"N{i}", "email": f"upd{i}@{domain}"} for i in range(3)],
    )
    add_cohort(runtime, tenant, "all", ids)
    add_cohort(runtime, tenant, "one", ids[:1])
    everyone = create_segment(
        api, tenant, "Everyone", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "all"}
    )
    first = create_segment(
        api, tenant, "First", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "one"}
    )
    created = api.post(
        "/campaigns", json={"name": "News", "segment_ids": [everyone], "message": EMAIL}, headers=auth(tenant)
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    other = api.post(
        "/campaigns", json={"name": "Other", "segment_ids": [first], "message": EMAIL}, headers=auth(tenant)
    )
    assert other.status_code == 201

    bad = [
        ({"name": "Other", "segment_ids": [first], "message": EMAIL}, 409, "already exists"),
        ({"name": "News", "segment_ids": ["seg_nope"], "message": EMAIL}, 400, "does not exist in this workspace"),
        (
            {"name": "News", "segment_ids": [first], "message": {**EMAIL, "subject": "{% if %}"}},
            400,
            "malformed Liquid",
        ),
    ]
    for body, status, words in bad:
        answer = api.put(f"/campaigns/{campaign_id}", json=body, headers=auth(tenant))
        assert answer.status_code == status and words in answer.json()["message"], answer.text
    assert api.get(f"/campaigns/{campaign_id}", headers=auth(tenant)).json()["segment_ids"] == [everyone]

    updated = api.put(
        f"/campaigns/{campaign_id}",
        json={
            "name": "News (first only)",
            "segment_ids": [first],
            "message": {**EMAIL, "subject": "Yo {{ first_name }}"},
        },
        headers=auth(tenant),
    )
    assert updated.status_code == 200 and updated.json()["name"] == "News (first only)", updated.text
    send = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant)).json()
    assert wait_for_send(api, tenant, campaign_id, send["id"])["counts"]["sent"] == 1
    (message,) = smtp_sink.for_domain(domain)
    assert message["Subject"] == "Yo N0"


def test_preview_renders_for_one_user_as_a_send_would(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_users(
        runtime,
        tenant.workspace_id,
        [
            {
                "external_id": "pv-1",
                "first_name": "Ada",
                "email": "ada@preview.example",
                "custom_attributes": {"plan": "gold"},
            },
            {"external_id": "pv-2", "email": "nobody@preview.example", "email_subscribe": "unsubscribed"},
        ],
    )
    message = {**EMAIL, "text": "Plan: {{ plan }}"}
    shown = api.post("/campaigns/preview", json={"message": message, "user": "pv-1"}, headers=auth(tenant)).json()
    assert shown["rendered"] == {"to": "ada@preview.example", "subject": "Hi Ada", "text": "Plan: gold", "html": None}
    assert shown["skipped"] is None and shown["failed"] is None
    # The second user lacks first_name and plan, and is unsubscribed: a send would skip them.
    other = api.post("/campaigns/preview", json={"message": message, "user": "pv-2"}, headers=auth(tenant)).json()
    assert other["skipped"] == "unreachable: unsubscribed from email"
    assert other["failed"].startswith("template error") and other["rendered"] is None
    hook = {"channel": "webhook", "url": "https://hooks.example/x", "body": {"id": "{{ external_id }}"}}
    shown = api.post("/campaigns/preview", json={"message": hook, "user": "pv-1"}, headers=auth(tenant)).json()
    assert shown["rendered"] == {"url": "https://hooks.example/x", "body": {"id": "pv-1"}, "headers": {}}
    missing = api.post("/campaigns/preview", json={"message": hook, "user": "ghost"}, headers=auth(tenant))
    assert missing.status_code == 404 and "ghost" in missing.json()["message"]
