"""Credentials in a webhook's URL and headers are stored (sending needs them) but never shown."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid

import httpx

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.redact import redact_urls
from tests.platform.messaging.helpers import add_users, auth, create_segment, wait_for_send
from tests.platform.messaging.sinks import WebhookSink
from tests.support import Tenant


def test_redact_urls_masks_every_url_with_credentials_in_a_text() -> None:
    assert redact_urls("failed: postgresql://a:b@h/db and https://c:d@e/x?y=1, not https://f/g?n=a@b") == (
        "failed: postgresql://***@h/db and https://***@e/x?y=1, not https://f/g?n=a@b"
    )
    assert redact_urls("url 'ftp://u:p@ss@h/x' refused") == "url 'ftp://***@h/x' refused"
    assert redact_urls("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_webhook_credentials_are_used_but_never_shown(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink, database_url: str
) -> None:
    (user_id,) = add_users(runtime, tenant.workspace_id, [{"external_id": f"hook-{uuid.uuid4().hex[:8]}"}])
    segment_id = create_segment(api, tenant, f"one-{user_id}", {"type": "identity", "state": "identified"})
    path = f"/hook/{uuid.uuid4().hex}"
    url = webhook_sink.url(path).replace("http://", "http://hookuser:hookpass@")
    r = api.post(
        "/campaigns",
        json={
            "name": f"secret-hook-{user_id}",
            "segment_ids": [segment_id],
            "message": {
                "channel": "webhook",
                "url": url,
                "body": {"u": "{{ external_id }}"},
                "headers": {"X-Api-Key": "tok-123456", "X-Source": "cf"},
            },
        },
        headers=auth(tenant),
    )
    assert r.status_code == 201, r.text
    campaign_id = r.json()["id"]
    shown = [
        r.text,
        api.get(f"/campaigns/{campaign_id}", headers=auth(tenant)).text,
        api.get("/campaigns", headers=auth(tenant)).text,
    ]
    cli = subprocess.run(
        [sys.executable, "-m", "cohortflow", "platform", "campaign", "show", "-w", tenant.workspace_id, campaign_id],
        env={**os.environ, "COHORTFLOW_PLATFORM_DATABASE_URL": database_url, "COHORTFLOW_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    shown.append(cli.stdout)
    for text in shown:
        assert "hookpass" not in text and "hookuser" not in text and "tok-123456" not in text, text
        assert "http://***@127.0.0.1" in text and '"X-Source": "cf"'.replace(" ", "") in text.replace(" ", "")

    r = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    assert wait_for_send(api, tenant, campaign_id, r.json()["id"])["status"] == "completed"
    calls = webhook_sink.at(path)
    assert calls, "the stored URL, credentials included, still sends"
    assert {c.headers["authorization"] for c in calls} == {"Basic " + base64.b64encode(b"hookuser:hookpass").decode()}
    assert {c.headers["x-api-key"] for c in calls} == {"tok-123456"}


def test_a_webhook_url_refused_with_credentials_does_not_echo_them(api: httpx.Client, tenant: Tenant) -> None:
    r = api.post(
        "/campaigns",
        json={
            "name": "bad",
            "segment_ids": ["s"],
            "message": {"channel": "webhook", "url": "ftp://u:pw9@h/x", "body": {}},
        },
        headers=auth(tenant),
    )
    assert r.status_code == 400
    assert "pw9" not in r.text and "ftp://***@h/x" in r.text
