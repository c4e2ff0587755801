"""A campaign send killed with SIGKILL in the middle, then resumed through the CLI: one message per member."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

from aiosmtpd.smtp import Envelope
from sqlalchemy import select

from cohortflow.platform.messaging.campaigns import create_campaign
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment
from cohortflow.platform.store.schema import campaign_deliveries, campaign_sends
from tests.platform.messaging.conftest import messaging_env
from tests.platform.messaging.helpers import add_cohort, add_users
from tests.platform.messaging.sinks import SmtpSink, WebhookCall, WebhookSink
from tests.support import Tenant

MEMBERS = 30
KILL_AT = 12  # the message in flight when the sender dies


def _campaign(runtime: PlatformRuntime, tenant: Tenant, domain: str, message: dict[str, Any]) -> tuple[str, list[int]]:
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [{"external_id": f"m{i}-{domain}", "email": f"m{i}@{domain}", "first_name": f"M{i}"} for i in range(MEMBERS)],
    )
    add_cohort(runtime, tenant, "all", ids)
    with runtime.transaction() as conn:
        segment = create_segment(
            conn, tenant.workspace_id, "all", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "all"}
        )
        campaign = create_campaign(
            conn, tenant.workspace_id, {"name": "Crash", "segment_ids": [segment.id], "message": message}
        )
    return campaign.id, ids


def _env(database_url: str, smtp_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(messaging_env(smtp_port))
    env.update(
        {
            "COHORTFLOW_PLATFORM_DATABASE_URL": database_url,
            "COHORTFLOW_MESSAGING__SEND_LEASE_SECONDS": "1",
            "COHORTFLOW_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cohortflow", "platform", *args]


def _send_state(runtime: PlatformRuntime, campaign_id: str) -> tuple[int, dict[int, tuple[str, int]]]:
    with runtime.engine.connect() as conn:
        send_id = conn.execute(
            select(campaign_sends.c.id).where(campaign_sends.c.campaign_id == campaign_id)
        ).scalar_one()
        rows = conn.execute(
            select(campaign_deliveries.c.user_id, campaign_deliveries.c.status, campaign_deliveries.c.attempts).where(
                campaign_deliveries.c.send_id == send_id
            )
        ).all()
    return int(send_id), {int(r.user_id): (str(r.status), int(r.attempts)) for r in rows}


def _kill_and_resume(
    runtime: PlatformRuntime, database_url: str, smtp_port: int, tenant: Tenant, campaign_id: str, arm: Any
) -> tuple[int, dict[int, tuple[str, int]], dict[str, Any]]:
    env = _env(database_url, smtp_port)
    sender = subprocess.Popen(
        _cli("campaign", "send-now", "-w", tenant.workspace_id, campaign_id, "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    arm(sender.pid)
    sender.wait(timeout=120)
    assert sender.returncode == -signal.SIGKILL, sender.stderr.read() if sender.stderr else ""
    send_id, mid = _send_state(runtime, campaign_id)

    resumed = subprocess.run(
        _cli("campaign", "resume", str(send_id), "--json"), env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    return send_id, mid, json.loads(resumed.stdout)


def test_email_send_killed_mid_flight_then_resumed_sends_each_member_exactly_one_email(
    runtime: PlatformRuntime, database_url: str, tenant: Tenant, smtp_sink: SmtpSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    campaign_id, ids = _campaign(
        runtime,
        tenant,
        domain,
        {"channel": "email", "from_address": "a@acme.example", "subject": "Hi {{ first_name }}", "text": "x"},
    )
    seen = 0

    def arm(pid: int) -> None:
        def on_data(envelope: Envelope) -> str | None:
            nonlocal seen
            if not str(envelope.rcpt_tos[0]).endswith("@" + domain):
                return None
            seen += 1
            if seen == KILL_AT:
                # The sender dies while its message is in the SMTP transaction, before the server's 250:
                # the server never accepts that message.
                os.kill(pid, signal.SIGKILL)
                return "451 4.3.0 sender went away"
            return None

        smtp_sink.on_data = on_data

    try:
        send_id, mid, final = _kill_and_resume(runtime, database_url, smtp_sink.port, tenant, campaign_id, arm)
    finally:
        smtp_sink.on_data = None

    statuses = [status for status, _ in mid.values()]
    assert statuses.count("sent") == KILL_AT - 1
    # The message in flight and the rest of its claimed chunk are "claimed"; anything later is "pending".
    assert statuses.count("claimed") >= 1
    assert statuses.count("claimed") + statuses.count("pending") == MEMBERS - (KILL_AT - 1)
    assert final["status"] == "completed"
    assert final["counts"]["sent"] == MEMBERS
    for i in range(MEMBERS):
        got = smtp_sink.to(f"m{i}@{domain}")
        assert [m["Subject"] for m in got] == [f"Hi M{i}"], i
    in_flight = sorted(ids)[KILL_AT - 1]  # the send goes in user id order
    assert mid[in_flight] == ("claimed", 1)
    _, after = _send_state(runtime, campaign_id)
    assert after[in_flight] == ("sent", 2)
    message_id = smtp_sink.to(f"m{ids.index(in_flight)}@{domain}")[0]["Message-ID"]
    assert message_id == f"<cf-campaign-{send_id}-{in_flight}@acme.example>"


def test_webhook_send_killed_mid_flight_is_resent_with_the_same_idempotency_key(
    runtime: PlatformRuntime, database_url: str, tenant: Tenant, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    path = f"/crash/{uuid.uuid4().hex}"
    campaign_id, _ids = _campaign(
        runtime,
        tenant,
        domain,
        {"channel": "webhook", "url": webhook_sink.url(path), "body": {"user": "{{ external_id }}"}},
    )
    seen = 0

    def arm(pid: int) -> None:
        def on_call(call: WebhookCall) -> int:
            nonlocal seen
            if call.path == path:
                seen += 1
                if seen == KILL_AT:
                    # The receiver got the request, but the sender dies before it hears the answer.
                    os.kill(pid, signal.SIGKILL)
            return 200

        webhook_sink.on_call = on_call

    try:
        _send_id, mid, final = _kill_and_resume(runtime, database_url, smtp_sink.port, tenant, campaign_id, arm)
    finally:
        webhook_sink.on_call = None

    assert [status for status, _ in mid.values()].count("sent") == KILL_AT - 1
    assert final["status"] == "completed" and final["counts"]["sent"] == MEMBERS
    calls = webhook_sink.at(path)
    keys_by_user: dict[str, set[str]] = {}
    for call in calls:
        keys_by_user.setdefault(call.body["user"], set()).add(call.headers["idempotency-key"])
    # Every member got the message under exactly one idempotency key: a receiver that honours the key
    # processes each member once, even the one whose delivery was in doubt at the crash.
    assert sorted(keys_by_user) == sorted(f"m{i}-{domain}" for i in range(MEMBERS))
    assert all(len(keys) == 1 for keys in keys_by_user.values())
    assert MEMBERS <= len(calls) <= MEMBERS + 1
