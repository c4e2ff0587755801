"""Worker processes killed with SIGKILL at random instants while they share a send: every member gets the message,
and the only duplicates are messages of a killed worker's in-flight window, carrying the same idempotency key.

Two workers on PostgreSQL (they claim disjoint batches with ``FOR UPDATE SKIP LOCKED``), one on SQLite.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select

from cohortflow.platform.messaging.campaigns import create_campaign, get_send, request_send
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment
from cohortflow.platform.store.schema import campaign_deliveries
from tests.platform.messaging.conftest import messaging_env
from tests.platform.messaging.helpers import add_cohort, add_users
from tests.platform.messaging.sinks import SmtpSink, WebhookSink
from tests.support import Tenant

MEMBERS = 300
BATCH = 10
# A killed worker's in-flight window: the batch being sent, the next one already claimed, the previous one
# not yet recorded.
WINDOW = 3 * BATCH


def worker_env(database_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(messaging_env(smtp_port))
    env.update(
        {
            "COHORTFLOW_PLATFORM_DATABASE_URL": database_url,
            "COHORTFLOW_MESSAGING__SEND_LEASE_SECONDS": "1",
            "COHORTFLOW_MESSAGING__DELIVERY_BATCH_SIZE": str(BATCH),
            "COHORTFLOW_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cohortflow", "platform", "worker", "run", "--poll-seconds", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def running_workers(database_url: str, env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes sharing the sends: two on PostgreSQL, one on SQLite (one writer). The list is the
    caller's to kill and replace in; whatever it holds at the end is stopped."""
    workers = [start_worker(env) for _ in range(2 if database_url.startswith("postgresql") else 1)]
    try:
        yield workers
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)


def _campaign(runtime: PlatformRuntime, tenant: Tenant, domain: str, message: dict[str, Any]) -> tuple[str, list[int]]:
    ids = add_users(
        runtime,
        tenant.workspace_id,
        [{"external_id": f"m{i}-{domain}", "email": f"m{i}@{domain}"} for i in range(MEMBERS)],
    )
    add_cohort(runtime, tenant, f"all-{domain}", ids)
    with runtime.transaction() as conn:
        segment = create_segment(
            conn,
            tenant.workspace_id,
            f"all-{domain}",
            {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": f"all-{domain}"},
        )
        campaign = create_campaign(
            conn, tenant.workspace_id, {"name": f"Crash {domain}", "segment_ids": [segment.id], "message": message}
        )
    return campaign.id, ids


def _run_with_kills(
    runtime: PlatformRuntime, database_url: str, smtp_port: int, tenant: Tenant, campaign_id: str, seed: int
) -> tuple[int, int]:
    """Send with workers killed at random instants until the send completes; returns (send id, kills)."""
    with runtime.transaction() as conn:
        send_id = request_send(conn, tenant.workspace_id, campaign_id).id
    env = worker_env(database_url, smtp_port)
    rng = random.Random(seed)
    kills = 0
    deadline = time.monotonic() + 180
    with running_workers(database_url, env) as workers:
        while time.monotonic() < deadline:
            with runtime.engine.connect() as conn:
                if get_send(conn, tenant.workspace_id, campaign_id, send_id).status == "completed":
                    break
            time.sleep(rng.uniform(0.05, 0.5))
            if kills < 6:
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                kills += 1
                workers[victim] = start_worker(env)
    with runtime.engine.connect() as conn:
        assert get_send(conn, tenant.workspace_id, campaign_id, send_id).status == "completed"
    return send_id, kills


def _check_counts(runtime: PlatformRuntime, tenant: Tenant, campaign_id: str, send_id: int) -> None:
    with runtime.engine.connect() as conn:
        send = get_send(conn, tenant.workspace_id, campaign_id, send_id)
        attempts = conn.execute(
            select(campaign_deliveries.c.attempts).where(campaign_deliveries.c.send_id == send_id)
        ).scalars()
        assert all(a >= 1 for a in attempts)
    assert send.counts["sent"] == MEMBERS == send.audience_size
    assert sum(send.counts.values()) == send.audience_size


@pytest.mark.parametrize("seed", [1, 2])
def test_webhook_workers_killed_at_random_instants(
    runtime: PlatformRuntime,
    database_url: str,
    tenant: Tenant,
    smtp_sink: SmtpSink,
    webhook_sink: WebhookSink,
    seed: int,
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    path = f"/crash/{domain}"
    campaign_id, ids = _campaign(
        runtime,
        tenant,
        domain,
        {"channel": "webhook", "url": webhook_sink.url(path), "body": {"user": "{{ external_id }}"}},
    )
    send_id, kills = _run_with_kills(runtime, database_url, smtp_sink.port, tenant, campaign_id, seed)
    keys: dict[str, set[str]] = defaultdict(set)
    calls = webhook_sink.at(path)
    for call in calls:
        keys[call.body["user"]].add(call.headers["idempotency-key"])
    assert sorted(keys) == sorted(f"m{i}-{domain}" for i in range(MEMBERS))
    for i, user_id in enumerate(ids):
        assert keys[f"m{i}-{domain}"] == {f"cf-campaign-{send_id}-{user_id}"}
    duplicates = len(calls) - MEMBERS
    assert 0 <= duplicates <= kills * WINDOW
    _check_counts(runtime, tenant, campaign_id, send_id)


def test_email_workers_killed_at_random_instants(
    runtime: PlatformRuntime, database_url: str, tenant: Tenant, smtp_sink: SmtpSink
) -> None:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    campaign_id, ids = _campaign(
        runtime,
        tenant,
        domain,
        {"channel": "email", "from_address": "a@acme.example", "subject": "Hi", "text": "x"},
    )
    send_id, kills = _run_with_kills(runtime, database_url, smtp_sink.port, tenant, campaign_id, 3)
    received = smtp_sink.for_domain(domain)
    per_address = Counter(str(m["To"]) for m in received)
    assert sorted(per_address) == sorted(f"m{i}@{domain}" for i in range(MEMBERS))
    for i, user_id in enumerate(ids):
        ids_seen = {str(m["Message-ID"]) for m in smtp_sink.to(f"m{i}@{domain}")}
        assert ids_seen == {f"<cf-campaign-{send_id}-{user_id}@acme.example>"}
    assert 0 <= len(received) - MEMBERS <= kills * WINDOW
    _check_counts(runtime, tenant, campaign_id, send_id)
