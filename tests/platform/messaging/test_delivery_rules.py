"""Delivery rules through the API and worker processes: one "send now" at a time, stopping a send, global
frequency caps across campaigns and concurrent workers, Canvas exit criteria and re-entry; stats add up."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import delete, insert, select

from cohortflow.clock import utcnow
from cohortflow.platform.messaging.campaigns import request_send
from cohortflow.platform.messaging.canvas import advance_canvas
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import cohort_members, cohorts, user_events
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.conftest import messaging_env
from tests.platform.messaging.helpers import add_cohort, add_users, auth, create_segment, wait_for_send
from tests.platform.messaging.sinks import WebhookSink
from tests.platform.messaging.test_crash_resume import running_workers, worker_env
from tests.support import Tenant, start_server


def _audience(runtime: PlatformRuntime, api: httpx.Client, tenant: Tenant, n: int) -> tuple[str, str, list[int]]:
    """``n`` users in a new cohort, and a segment on it; returns (domain, segment id, user ids)."""
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = add_users(
        runtime, tenant.workspace_id, [{"external_id": f"u{i}-{domain}", "email": f"u{i}@{domain}"} for i in range(n)]
    )
    add_cohort(runtime, tenant, domain, ids)
    segment_id = create_segment(
        api, tenant, domain, {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": domain}
    )
    return domain, segment_id, ids


def _webhook_campaign(api: httpx.Client, tenant: Tenant, segment_id: str, url: str, **extra: Any) -> str:
    r = api.post(
        "/campaigns",
        json={
            "name": f"c-{uuid.uuid4().hex[:8]}",
            "segment_ids": [segment_id],
            "message": {"channel": "webhook", "url": url, "body": {"user": "{{ external_id }}"}},
            **extra,
        },
        headers=auth(tenant),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _wait(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _added_up(send: dict[str, Any]) -> None:
    counts = send["counts"]
    assert sum(counts.values()) == send["audience_size"]
    for status in ("failed", "skipped"):
        assert sum(send["reasons"][status].values()) == counts[status]


def test_send_now_twice_starts_one_send_and_a_stopped_send_sends_nothing_more(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink
) -> None:
    _domain, segment_id, _ids = _audience(runtime, api, tenant, 60)
    path = f"/stop/{uuid.uuid4().hex}"
    # 10 a second, so the send is still running when the second click and the stop arrive.
    campaign_id = _webhook_campaign(api, tenant, segment_id, webhook_sink.url(path), rate_limit_per_minute=600)

    first = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    assert first.status_code == 202, first.text
    again = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    assert again.status_code == 409, again.text
    assert "already pending or running" in again.json()["message"]
    sends = api.get(f"/campaigns/{campaign_id}/sends", headers=auth(tenant)).json()["sends"]
    assert [s["id"] for s in sends] == [first.json()["id"]]
    send_id = first.json()["id"]

    _wait(lambda: len(webhook_sink.at(path)) >= 5)
    r = api.post(f"/campaigns/{campaign_id}/sends/{send_id}/stop", headers=auth(tenant))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    at_stop = len(webhook_sink.at(path))
    time.sleep(1.5)
    after = len(webhook_sink.at(path))
    # Only what was already on its way (at 10 a second, the stop is seen within 0.2 s).
    assert after - at_stop <= 3
    time.sleep(1.5)
    assert len(webhook_sink.at(path)) == after

    send = api.get(f"/campaigns/{campaign_id}/sends/{send_id}", headers=auth(tenant)).json()
    assert send["status"] == "canceled"
    assert send["counts"]["sent"] == len({c.body["user"] for c in webhook_sink.at(path)}) == after, (
        send["counts"],
        send["reasons"],
    )
    assert send["reasons"]["skipped"].get("stopped", 0) == 60 - after - send["counts"]["claimed"]
    _added_up(send) if send["counts"]["claimed"] == 0 else None
    again = api.post(f"/campaigns/{campaign_id}/sends/{send_id}/stop", headers=auth(tenant))
    assert again.status_code == 400, again.text
    # Stopped, the campaign can be sent again.
    assert api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant)).status_code == 202


def test_a_campaign_rate_limit_spaces_its_messages(
    api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, webhook_sink: WebhookSink
) -> None:
    _domain, segment_id, _ids = _audience(runtime, api, tenant, 25)
    path = f"/paced/{uuid.uuid4().hex}"
    campaign_id = _webhook_campaign(api, tenant, segment_id, webhook_sink.url(path), rate_limit_per_minute=1200)
    send = api.post(f"/campaigns/{campaign_id}/send-now", headers=auth(tenant))
    assert send.status_code == 202, send.text
    done = wait_for_send(api, tenant, campaign_id, send.json()["id"])
    assert done["counts"]["sent"] == 25, done
    arrivals = sorted(c.received_at for c in webhook_sink.at(path))
    assert len(arrivals) == 25
    # 1,200 a minute is one every 50 ms: at most 21 in any second (a lower bound on time, so a slow machine only
    # spreads them further; without the limiter all 25 arrive in a few milliseconds).
    for i, start in enumerate(arrivals):
        within = sum(1 for t in arrivals[i:] if t < start + 1.0)
        assert within <= 21, (within, arrivals)
    assert arrivals[-1] - arrivals[0] >= 24 * 0.05 * 0.9


def test_a_worker_slower_than_its_lease_keeps_its_claims(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    database_url: str,
    messaging_settings: MessagingSettings,
    webhook_sink: WebhookSink,
) -> None:
    """Claims last one second (the lease) and each batch takes longer than that to send: a live worker renews
    what it holds, so neither it nor another worker takes those rows for a dead worker's and sends them twice."""
    n = 24
    _domain, segment_id, _ids = _audience(runtime, api, tenant, n)
    path = f"/slow/{uuid.uuid4().hex}"
    campaign_id = _webhook_campaign(api, tenant, segment_id, webhook_sink.url(path))

    def slow(call: Any) -> int:
        if call.path == path:
            time.sleep(0.3)  # 8 rows over 2 connections: 1.2 s a batch, and the next batch waits as long
        return 200

    webhook_sink.on_call = slow
    try:
        with runtime.transaction() as conn:
            send_id = request_send(conn, tenant.workspace_id, campaign_id).id
        env = worker_env(
            database_url,
            messaging_settings.smtp_port,
            COHORTFLOW_MESSAGING__DELIVERY_BATCH_SIZE="8",
            COHORTFLOW_MESSAGING__WEBHOOK_CONNECTIONS="2",
        )
        with running_workers(database_url, env):
            done = wait_for_send(api, tenant, campaign_id, send_id)
    finally:
        webhook_sink.on_call = None
    users = [c.body["user"] for c in webhook_sink.at(path)]
    assert len(users) == len(set(users)) == n, sorted(users)
    assert done["status"] == "completed" and done["counts"]["sent"] == n, done


def test_concurrent_cap_saves_each_win_or_wait_never_fail(api: httpx.Client, tenant: Tenant) -> None:
    """Saves racing on one channel's cap (two admins, a retried request) all succeed; the last one stays."""
    bodies = [{"caps": [{"channel": "webhook", "max_messages": m, "period_seconds": 3600}]} for m in range(1, 25)]

    def save(body: dict[str, Any]) -> int:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            return client.put("/messaging/frequency_caps", json=body, headers=auth(tenant)).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(save, bodies))
    try:
        assert statuses == [200] * len(bodies)
        caps = api.get("/messaging/frequency_caps", headers=auth(tenant)).json()["caps"]
        assert len(caps) == 1 and caps[0]["max_messages"] in range(1, 25)
    finally:
        api.put("/messaging/frequency_caps", json={"caps": []}, headers=auth(tenant))


def test_frequency_caps_hold_across_campaigns_and_concurrent_workers(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    database_url: str,
    messaging_settings: MessagingSettings,
    webhook_sink: WebhookSink,
) -> None:
    bad = api.put(
        "/messaging/frequency_caps",
        json={"caps": [{"channel": "webhook", "max_messages": 0, "period_seconds": 86400}]},
        headers=auth(tenant),
    )
    assert bad.status_code == 400, bad.text
    r = api.put(
        "/messaging/frequency_caps",
        json={"caps": [{"channel": "webhook", "max_messages": 1, "period_seconds": 86400}]},
        headers=auth(tenant),
    )
    assert r.status_code == 200, r.text
    assert api.get("/messaging/frequency_caps", headers=auth(tenant)).json()["caps"] == r.json()["caps"]
    try:
        n = 80
        _domain, segment_id, _ids = _audience(runtime, api, tenant, n)
        path = f"/caps/{uuid.uuid4().hex}"
        capped = [_webhook_campaign(api, tenant, segment_id, webhook_sink.url(path)) for _ in range(3)]
        with runtime.transaction() as conn:
            sends = [request_send(conn, tenant.workspace_id, c).id for c in capped]
        env = worker_env(database_url, messaging_settings.smtp_port)
        with running_workers(database_url, env):
            for campaign_id, send_id in zip(capped, sends, strict=True):
                assert wait_for_send(api, tenant, campaign_id, send_id)["status"] == "completed"
        calls = webhook_sink.at(path)
        per_user: dict[str, int] = {}
        for call in calls:
            per_user[call.body["user"]] = per_user.get(call.body["user"], 0) + 1
        assert len(per_user) == n and set(per_user.values()) == {1}
        results = [
            api.get(f"/campaigns/{c}/sends/{s}", headers=auth(tenant)).json()
            for c, s in zip(capped, sends, strict=True)
        ]
        assert sum(s["counts"]["sent"] for s in results) == n
        assert sum(s["reasons"]["skipped"].get("frequency capped", 0) for s in results) == 2 * n
        for send in results:
            _added_up(send)

        # A campaign that ignores the caps reaches everyone anyway.
        ignoring = _webhook_campaign(api, tenant, segment_id, webhook_sink.url(path), ignore_frequency_capping=True)
        sent = api.post(f"/campaigns/{ignoring}/send-now", headers=auth(tenant)).json()
        assert wait_for_send(api, tenant, ignoring, sent["id"])["counts"]["sent"] == n
    finally:
        api.put("/messaging/frequency_caps", json={"caps": []}, headers=auth(tenant))


def _canvas(api: httpx.Client, tenant: Tenant, definition: dict[str, Any]) -> str:
    r = api.post("/canvases", json=definition, headers=auth(tenant))
    assert r.status_code == 201, r.text
    canvas_id = str(r.json()["id"])
    assert api.post(f"/canvases/{canvas_id}/start", headers=auth(tenant)).status_code == 200
    return canvas_id


def test_canvas_exit_criteria_event_and_leaving_the_segment(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    webhook_sink: WebhookSink,
    messaging_settings: MessagingSettings,
) -> None:
    domain, segment_id, ids = _audience(runtime, api, tenant, 4)
    path = f"/exit/{uuid.uuid4().hex}"
    canvas_id = _canvas(
        api,
        tenant,
        {
            "name": f"exit-{domain}",
            "entry_segment_id": segment_id,
            "exit_criteria": {"leaves_entry_segment": True, "performs_events": ["purchased"]},
            "steps": [
                {"id": "wait", "type": "delay", "days": 1, "next": "nudge"},
                {
                    "id": "nudge",
                    "type": "message",
                    "message": {
                        "channel": "webhook",
                        "url": webhook_sink.url(path),
                        "body": {"u": "{{ external_id }}"},
                    },
                },
            ],
        },
    )
    base = utcnow() + timedelta(minutes=1)

    def advance(at: Any) -> Any:
        return advance_canvas(runtime.engine, messaging_settings, canvas_id, clock=lambda: at)

    assert advance(base).entered == 4
    with runtime.transaction() as conn:
        # u0 buys (an exit event after entering); u1 leaves the cohort, so the entry segment; u2 does an
        # unrelated event.
        for uid, name in ((ids[0], "purchased"), (ids[2], "browsed")):
            conn.execute(
                insert(user_events).values(
                    workspace_id=tenant.workspace_id,
                    user_id=uid,
                    name=name,
                    time=base + timedelta(hours=1),
                    properties={},
                )
            )
        cohort_pk = conn.execute(select(cohorts.c.id).where(cohorts.c.cohort_id == domain)).scalar_one()
        conn.execute(
            delete(cohort_members).where(cohort_members.c.cohort_pk == cohort_pk, cohort_members.c.user_id == ids[1])
        )
    advance(base + timedelta(days=1, seconds=1))
    assert sorted(c.body["u"] for c in webhook_sink.at(path)) == [f"u2-{domain}", f"u3-{domain}"]
    stats = api.get(f"/canvases/{canvas_id}/stats", headers=auth(tenant)).json()
    assert stats["exited"] == 4 and stats["steps"][1]["sent"] == 2
    assert stats["steps"][0]["exited"] == 2  # the two who met an exit criterion, at the step they were at


def test_canvas_reentry_only_when_allowed_with_a_new_idempotency_key(
    api: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    webhook_sink: WebhookSink,
    messaging_settings: MessagingSettings,
) -> None:
    domain, segment_id, ids = _audience(runtime, api, tenant, 3)
    paths = {allowed: f"/reentry/{allowed}/{uuid.uuid4().hex}" for allowed in (True, False)}
    canvases = {
        allowed: _canvas(
            api,
            tenant,
            {
                "name": f"re-{allowed}-{domain}",
                "entry_segment_id": segment_id,
                "entry_schedule": {"type": "recurring", "cron": "* * * * *"},
                "reentry": {"allowed": allowed, "after_seconds": 600},
                "steps": [
                    {
                        "id": "hi",
                        "type": "message",
                        "message": {
                            "channel": "webhook",
                            "url": webhook_sink.url(paths[allowed]),
                            "body": {"u": "{{ external_id }}"},
                        },
                    }
                ],
            },
        )
        for allowed in (True, False)
    }
    base = utcnow() + timedelta(minutes=2)
    for minutes in (0, 5, 11):  # entries at +0; +5 is too soon to re-enter; +11 is after the 600 s wait
        for canvas_id in canvases.values():
            advance_canvas(
                runtime.engine, messaging_settings, canvas_id, clock=lambda m=minutes: base + timedelta(minutes=m)
            )
    allowed_calls = webhook_sink.at(paths[True])
    assert len(allowed_calls) == 6
    for i, uid in enumerate(ids):
        keys = sorted(c.headers["idempotency-key"] for c in allowed_calls if c.body["u"] == f"u{i}-{domain}")
        assert keys == [f"cf-canvas-{canvases[True]}-hi-{uid}", f"cf-canvas-{canvases[True]}-hi-{uid}-2"]
    assert len(webhook_sink.at(paths[False])) == 3
    stats = api.get(f"/canvases/{canvases[True]}/stats", headers=auth(tenant)).json()
    assert stats["steps"][0]["sent"] == 6 and stats["steps"][0]["entered"] == 6


def test_serve_runs_the_messaging_worker_in_process(
    database_url: str, runtime: PlatformRuntime, tenant: Tenant, smtp_sink: Any, webhook_sink: WebhookSink
) -> None:
    """A scheduled send is delivered by ``cohortflow platform serve`` alone: no worker process runs."""
    env = {**messaging_env(smtp_sink.port), "COHORTFLOW_MESSAGING__WORKER_POLL_SECONDS": "0.2"}
    server = start_server(database_url, extra_env=env, workers=1)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as api:
            _domain, segment_id, _ids = _audience(runtime, api, tenant, 5)
            path = f"/inproc/{uuid.uuid4().hex}"
            campaign_id = _webhook_campaign(api, tenant, segment_id, webhook_sink.url(path))
            at = (utcnow() + timedelta(seconds=2)).isoformat()
            r = api.post(f"/campaigns/{campaign_id}/schedule", json={"at": at}, headers=auth(tenant))
            assert r.status_code == 201, r.text
            assert wait_for_send(api, tenant, campaign_id, r.json()["id"])["counts"]["sent"] == 5
    finally:
        server.stop()
    assert len(webhook_sink.at(path)) == 5
