"""Campaigns through the HTTP API against the real server, with a real SMTP server and webhook receiver."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.messaging.campaigns import create_campaign
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.helpers import add_cohort, add_users, auth, create_segment, full_log, wait_for_send
from tests.platform.messaging.sinks import SmtpSink, WebhookSink
from tests.support import Tenant


def _audience(runtime: PlatformRuntime, tenant: Tenant, domain: str) -> dict[str, int]:
    """Users by label; the cohort "vip" holds everyone but ``outsider``; ``de`` lives in Germany."""
    specs: dict[str, dict[str, Any]] = {
        "alice": {
            "external_id": f"alice-{domain}",
            "first_name": "Alice",
            "email": f"alice@{domain}",
            "custom_attributes": {"visits": 4, "plan": "gold"},
        },
        "nofirst": {
            "external_id": f"nofirst-{domain}",
            "email": f"nofirst@{domain}",
            "custom_attributes": {"visits": 2},
        },
        "optin": {
            "external_id": f"optin-{domain}",
            "first_name": "Olga",
            "email": f"optin@{domain}",
            "email_subscribe": "opted_in",
            "custom_attributes": {"visits": 1},
        },
        "zero": {
            "external_id": f"zero-{domain}",
            "first_name": "Zed",
            "email": f"zero@{domain}",
            "custom_attributes": {"visits": 0},
        },
        "unsub": {
            "external_id": f"unsub-{domain}",
            "first_name": "Una",
            "email": f"unsub@{domain}",
            "email_subscribe": "unsubscribed",
            "custom_attributes": {"visits": 3},
        },
        "noemail": {"external_id": f"noemail-{domain}", "first_name": "Ned", "custom_attributes": {"visits": 3}},
        "anon": {"first_name": "Ann", "email": f"anon@{domain}", "custom_attributes": {"visits": 5}},
        "de": {
            "external_id": f"de-{domain}",
            "first_name": "Dieter",
            "email": f"de@{domain}",
            "country": "DE",
            "custom_attributes": {"visits": 5},
        },
        "outsider": {
            "external_id": f"outsider-{domain}",
            "first_name": "Otto",
            "email": f"outsider@{domain}",
            "custom_attributes": {"visits": 5},
        },
    }
    for spec in specs.values():
        spec.setdefault("country", "FR")
    ids = dict(zip(specs, add_users(runtime, tenant.workspace_id, list(specs.values())), strict=True))
    add_cohort(runtime, tenant, "vip", [uid for label, uid in ids.items() if label != "outsider"])
    return ids


def _vip_fr_segment(api: httpx.Client, tenant: Tenant) -> str:
    return create_segment(
        api,
        tenant,
        "VIP in France",
        {
            "type": "and",
            "filters": [
                {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "vip", "operator": "includes"},
                {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"},
            ],
        },
    )


def test_email_campaign_delivers_one_rendered_email_per_reachable_member(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, smtp_sink: SmtpSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = _audience(runtime, tenant, domain)
    segment_id = _vip_fr_segment(api, tenant)
    r = api.post(
        "/campaigns",
        json={
            "name": "Welcome",
            "segment_ids": [segment_id],
            "message": {
                "channel": "email",
                "from_address": "Acme <news@acme.example>",
                "subject": "Hi {{ first_name | default: 'there' }}",
                "text": 'Hello {{ first_name | default: "there" }}, score {{ 100 | divided_by: visits }}.',
                "html": "<p>Hello <b>{{ first_name | default: 'there' }}</b></p>",
            },
        },
        headers=auth(tenant),
    )
    assert r.status_code == 201, r.text
    campaign_id = r.json()["id"]

    r = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    assert r.status_code == 202, r.text
    send = wait_for_send(api, tenant, campaign_id, r.json()["id"])
    assert send["status"] == "completed"
    # Members: everyone in "vip" living in FR (not "de", not "outsider").
    assert send["audience_size"] == 7

    delivered = {"alice", "nofirst", "optin"}
    for label in ("alice", "nofirst", "optin", "zero", "unsub", "noemail", "anon", "de", "outsider"):
        got = smtp_sink.to(f"{label}@{domain}")
        assert len(got) == (1 if label in delivered or label == "anon" else 0), label
    alice = smtp_sink.to(f"alice@{domain}")[0]
    assert alice["Subject"] == "Hi Alice"
    assert alice["From"] == "Acme <news@acme.example>"
    plain = alice.get_body(("plain",))
    html = alice.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Hello Alice, score 25."
    assert "<b>Alice</b>" in html.get_content()
    assert smtp_sink.to(f"nofirst@{domain}")[0]["Subject"] == "Hi there"
    # Anonymous users are reachable by email (they have an address and no unsubscribe).
    assert smtp_sink.to(f"anon@{domain}")[0]["Subject"] == "Hi Ann"

    log = {e["user_id"]: e for e in full_log(api, tenant, campaign_id, send["id"])}
    assert set(log) == {ids[x] for x in ("alice", "nofirst", "optin", "zero", "unsub", "noemail", "anon")}
    for label in ("alice", "nofirst", "optin", "anon"):
        assert log[ids[label]]["status"] == "sent"
    assert log[ids["zero"]]["status"] == "failed"
    assert "divide" in log[ids["zero"]]["reason"] and "template error" in log[ids["zero"]]["reason"]
    assert log[ids["unsub"]]["status"] == "skipped"
    assert log[ids["unsub"]]["reason"] == "unreachable: unsubscribed from email"
    assert log[ids["noemail"]]["status"] == "skipped"
    assert log[ids["noemail"]]["reason"] == "unreachable: no email address"

    r = api.get(f"/campaigns/{campaign_id}/stats", headers=auth(tenant))
    assert r.json()["totals"] == {"pending": 0, "claimed": 0, "sent": 4, "failed": 1, "skipped": 2}
    r = api.get(f"/campaigns/{campaign_id}/sends/{send['id']}/log", params={"status": "failed"}, headers=auth(tenant))
    assert [e["external_id"] for e in r.json()["entries"]] == [f"zero-{domain}"]


def test_webhook_campaign_calls_once_per_identified_member(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = _audience(runtime, tenant, domain)
    segment_id = _vip_fr_segment(api, tenant)
    path = f"/hook/{uuid.uuid4().hex}"
    r = api.post(
        "/campaigns",
        json={
            "name": "Hook",
            "segment_ids": [segment_id],
            "extra_filter": {"type": "custom_attribute", "attribute": "visits", "operator": "greater_than", "value": 0},
            "message": {
                "channel": "webhook",
                "url": webhook_sink.url(path),
                "body": {
                    "user": "{{ external_id }}",
                    "greeting": "Hello {{ first_name | default: 'there' }}",
                    "tags": ["{{ country }}", 7],
                },
                "headers": {"X-Source": "cohortflow"},
            },
            "rate_limit_per_minute": 6000,
        },
        headers=auth(tenant),
    )
    assert r.status_code == 201, r.text
    campaign_id = r.json()["id"]
    r = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    send = wait_for_send(api, tenant, campaign_id, r.json()["id"])
    assert send["status"] == "completed"

    calls = webhook_sink.at(path)
    # vip AND FR AND visits > 0: everyone but "zero" (visits 0), "de" and "outsider"; "anon" has no external id.
    expected = {"alice", "nofirst", "optin", "unsub", "noemail"}
    assert sorted(c.body["user"] for c in calls) == sorted(f"{x}-{domain}" for x in expected)
    by_user = {c.body["user"]: c for c in calls}
    assert by_user[f"alice-{domain}"].body == {"user": f"alice-{domain}", "greeting": "Hello Alice", "tags": ["FR", 7]}
    assert by_user[f"nofirst-{domain}"].body["greeting"] == "Hello there"
    alice = by_user[f"alice-{domain}"]
    assert alice.headers["x-source"] == "cohortflow"
    assert alice.headers["idempotency-key"] == f"cf-campaign-{send['id']}-{ids['alice']}"
    assert len({c.headers["idempotency-key"] for c in calls}) == len(calls)

    log = {e["user_id"]: e for e in full_log(api, tenant, campaign_id, send["id"])}
    assert log[ids["anon"]]["status"] == "skipped"
    assert "anonymous" in log[ids["anon"]]["reason"]
    assert send["counts"] == {"pending": 0, "claimed": 0, "sent": 5, "failed": 0, "skipped": 1}


def test_webhook_errors_are_retried_then_logged(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [{"external_id": f"{name}-{domain}", "country": "FR"} for name in ("flaky", "broken", "fine")],
    )
    add_cohort(runtime, tenant, "vip", ids)
    segment_id = _vip_fr_segment(api, tenant)
    path = f"/hook/{uuid.uuid4().hex}"
    seen: dict[str, int] = {}

    def answer(call: Any) -> int:
        if call.path != path:
            return 200
        user = call.body["user"]
        seen[user] = seen.get(user, 0) + 1
        if user.startswith("flaky"):
            return 503 if seen[user] == 1 else 200  # transient, then fine
        if user.startswith("broken"):
            return 422  # the receiver refuses this message: not retried
        return 200

    webhook_sink.on_call = answer
    try:
        r = api.post(
            "/campaigns",
            json={
                "name": "Flaky",
                "segment_ids": [segment_id],
                "message": {"channel": "webhook", "url": webhook_sink.url(path), "body": {"user": "{{ external_id }}"}},
            },
            headers=auth(tenant),
        )
        campaign_id = r.json()["id"]
        r = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
        send = wait_for_send(api, tenant, campaign_id, r.json()["id"])
    finally:
        webhook_sink.on_call = None
    assert seen == {f"flaky-{domain}": 2, f"broken-{domain}": 1, f"fine-{domain}": 1}
    log = {e["external_id"]: e for e in full_log(api, tenant, campaign_id, send["id"])}
    assert log[f"flaky-{domain}"]["status"] == "sent"
    assert log[f"broken-{domain}"]["status"] == "failed"
    assert log[f"broken-{domain}"]["reason"] == "webhook answered HTTP 422"
    # One Idempotency-Key per user, the same on the retry.
    keys = {c.headers["idempotency-key"] for c in webhook_sink.at(path) if c.body["user"].startswith("flaky")}
    assert len(keys) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"segment_ids": ["seg_does_not_exist"]}, "segment_ids: segment 'seg_does_not_exist' does not exist"),
        (
            {"message": {"channel": "email", "from_address": "a@b.example", "subject": "Hi {% if %}", "text": "x"}},
            "message.subject: malformed Liquid template",
        ),
        (
            {
                "message": {
                    "channel": "email",
                    "from_address": "a@b.example",
                    "subject": "s",
                    "text": "{{ first_name | shout }}",
                }
            },
            "message.text: unknown Liquid filter 'shout'",
        ),
        (
            {"message": {"channel": "webhook", "url": "ftp://example.com/x", "body": {}}},
            "url must be an absolute http:// or https:// URL",
        ),
        (
            {"message": {"channel": "email", "from_address": "not an address", "subject": "s", "text": "t"}},
            "from_address must be an email address",
        ),
        ({"message": {"channel": "sms", "body": "x"}}, "message"),
        (
            {"extra_filter": {"type": "partner_cohort", "partner": "nobody", "cohort_id": "x"}},
            "extra_filter:",
        ),
        ({"extra_filter": {"type": "shoe_size", "value": 3}}, "unknown filter type 'shoe_size'"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_campaign_definitions_are_rejected_and_nothing_is_saved(
    api: httpx.Client, tenant: Tenant, change: dict[str, Any], expected: str
) -> None:
    segment_id = create_segment(api, tenant, "everyone", {"type": "has_email", "value": True})
    body: dict[str, Any] = {
        "name": "Bad",
        "segment_ids": [segment_id],
        "message": {"channel": "email", "from_address": "a@b.example", "subject": "s", "text": "t"},
    }
    body.update(change)
    r = api.post("/campaigns", json=body, headers=auth(tenant))
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]
    assert api.get("/campaigns", headers=auth(tenant)).json() == {"campaigns": []}


def test_duplicate_name_unknown_campaign_and_auth(api: httpx.Client, tenant: Tenant) -> None:
    segment_id = create_segment(api, tenant, "everyone", {"type": "has_email", "value": True})
    body = {
        "name": "Once",
        "segment_ids": [segment_id],
        "message": {"channel": "email", "from_address": "a@b.example", "subject": "s", "text": "t"},
    }
    assert api.post("/campaigns", json=body, headers=auth(tenant)).status_code == 201
    r = api.post("/campaigns", json=body, headers=auth(tenant))
    assert r.status_code == 409 and "Once" in r.json()["message"]
    r = api.post("/campaigns/cmp_nope/send-now", headers=auth(tenant))
    assert r.status_code == 404 and "cmp_nope" in r.json()["message"]
    assert api.get("/campaigns").status_code == 401
    # A targeted segment cannot be deleted from under the campaign.
    r = api.delete(f"/segments/{segment_id}", headers=auth(tenant))
    assert r.status_code == 400


def test_bad_smtp_settings_are_named(runtime: PlatformRuntime, tenant: Tenant) -> None:
    with runtime.transaction() as conn:
        from cohortflow.platform.segments.service import create_segment as create_segment_here

        segment = create_segment_here(conn, tenant.workspace_id, "all", {"type": "has_email", "value": True})
    bad = MessagingSettings(smtp_starttls=True, smtp_ssl=True)
    with pytest.raises(InvalidRequest, match="smtp_starttls and smtp_ssl are exclusive"), runtime.transaction() as conn:
        create_campaign(
            conn,
            tenant.workspace_id,
            {
                "name": "x",
                "segment_ids": [segment.id],
                "message": {"channel": "email", "from_address": "a@b.example", "subject": "s", "text": "t"},
            },
            settings=bad,
        )
    bad_auth = MessagingSettings(smtp_username="user")
    with pytest.raises(InvalidRequest, match="smtp_username and smtp_password"), runtime.transaction() as conn:
        create_campaign(
            conn,
            tenant.workspace_id,
            {
                "name": "y",
                "segment_ids": [segment.id],
                "message": {"channel": "email", "from_address": "a@b.example", "subject": "s", "text": "t"},
            },
            settings=bad_auth,
        )


def test_scheduled_send_waits_for_its_time(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    webhook_sink: WebhookSink,
    messaging_settings: MessagingSettings,
) -> None:
    from datetime import timedelta

    from cohortflow.clock import utcnow
    from cohortflow.platform.messaging.campaigns import run_send

    external_id = f"s-{uuid.uuid4().hex[:6]}"
    ids = add_users(runtime, tenant.workspace_id, [{"external_id": external_id, "country": "FR"}])
    add_cohort(runtime, tenant, "vip", ids)
    segment_id = _vip_fr_segment(api, tenant)
    path = f"/hook/{uuid.uuid4().hex}"
    campaign_id = api.post(
        "/campaigns",
        json={
            "name": "Later",
            "segment_ids": [segment_id],
            "message": {"channel": "webhook", "url": webhook_sink.url(path), "body": {"u": "{{ external_id }}"}},
        },
        headers=auth(tenant),
    ).json()["id"]
    at = utcnow() + timedelta(hours=2)
    r = api.post(f"/campaigns/{campaign_id}/schedule", json={"at": at.isoformat()}, headers=auth(tenant))
    assert r.status_code == 201, r.text
    send_id = r.json()["id"]
    assert r.json()["status"] == "scheduled"
    r = api.post(f"/campaigns/{campaign_id}/schedule", json={"at": "2001-01-01T00:00:00Z"}, headers=auth(tenant))
    assert r.status_code == 400 and "future" in r.json()["message"]

    assert run_send(runtime.engine, messaging_settings, send_id) is None  # not due yet
    assert webhook_sink.at(path) == []
    result = run_send(runtime.engine, messaging_settings, send_id, clock=lambda: at + timedelta(seconds=1))
    assert result is not None and result.completed
    assert [c.body for c in webhook_sink.at(path)] == [{"u": external_id}]
    assert run_send(runtime.engine, messaging_settings, send_id, clock=lambda: at + timedelta(seconds=2)) is None
