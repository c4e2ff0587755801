"""The campaign, canvas and worker CLI (as subprocesses) on a database of their own, so the worker's pass
over every due send and active Canvas sees only this test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.segments.service import create_segment
from tests.platform.messaging.conftest import messaging_env
from tests.platform.messaging.helpers import add_cohort, add_users
from tests.platform.messaging.sinks import SmtpSink, WebhookSink
from tests.support import Tenant, fresh_database, make_tenant, open_runtime


@pytest.fixture
def own_db(backend: str, tmp_path: Path) -> Iterator[tuple[str, PlatformRuntime]]:
    with fresh_database(backend, tmp_path) as url:
        runtime = open_runtime(url)
        try:
            yield url, runtime
        finally:
            runtime.close()


def _run(url: str, smtp_port: int, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(messaging_env(smtp_port))
    env.update({"COHORTFLOW_PLATFORM_DATABASE_URL": url, "COHORTFLOW_LOG_LEVEL": "WARNING"})
    result = subprocess.run(
        [sys.executable, "-m", "cohortflow", "platform", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_campaign_and_canvas_through_the_cli_and_one_worker_pass(
    own_db: tuple[str, PlatformRuntime], smtp_sink: SmtpSink, webhook_sink: WebhookSink, tmp_path: Path
) -> None:
    url, runtime = own_db
    tenant: Tenant = make_tenant(runtime)
    ws = tenant.workspace_id
    domain = f"{uuid.uuid4().hex[:8]}.example"
    ids = add_users(
        runtime,
        ws,
        [{"external_id": f"c{i}-{domain}", "email": f"c{i}@{domain}", "first_name": f"C{i}"} for i in range(3)],
    )
    add_cohort(runtime, tenant, "cli", ids)
    with runtime.transaction() as conn:
        segment = create_segment(
            conn, ws, "cli", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "cli"}
        )
    path = f"/cli/{uuid.uuid4().hex}"

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "name": "Bad",
                "segment_ids": [segment.id],
                "message": {"channel": "webhook", "url": webhook_sink.url(path), "body": {"u": "{% for %}"}},
            }
        )
    )
    result = _run(url, smtp_sink.port, "campaign", "create", "-w", ws, "-f", str(bad), ok=False)
    assert result.returncode == 1
    assert "message.body.u: malformed Liquid template" in result.stderr
    assert "Traceback" not in result.stderr

    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "name": "Good",
                "segment_ids": [segment.id],
                "message": {"channel": "webhook", "url": webhook_sink.url(path), "body": {"u": "{{ external_id }}"}},
            }
        )
    )
    campaign_id = _json(_run(url, smtp_sink.port, "campaign", "create", "-w", ws, "-f", str(good), "--json"))["id"]
    listed = _json(_run(url, smtp_sink.port, "campaign", "list", "-w", ws, "--json"))
    assert [c["name"] for c in listed] == ["Good"]
    queued = _json(_run(url, smtp_sink.port, "campaign", "send-now", "-w", ws, campaign_id, "--queue", "--json"))
    assert queued["status"] == "scheduled"

    canvas = tmp_path / "canvas.yaml"
    canvas.write_text(
        yaml.safe_dump(
            {
                "name": "Hello journey",
                "entry_segment_id": segment.id,
                "steps": [
                    {
                        "id": "hello",
                        "type": "message",
                        "next": "bye",
                        "message": {
                            "channel": "email",
                            "from_address": "cli@acme.example",
                            "subject": "Hello {{ first_name }}",
                            "text": "hi",
                        },
                    },
                    {"id": "bye", "type": "exit"},
                ],
            }
        )
    )
    canvas_id = _json(_run(url, smtp_sink.port, "canvas", "create", "-w", ws, "-f", str(canvas), "--json"))["id"]
    _run(url, smtp_sink.port, "canvas", "start", "-w", ws, canvas_id)

    summary = _json(_run(url, smtp_sink.port, "worker", "run", "--once", "--json"))
    assert summary["sends_completed"] == [queued["id"]]
    assert summary["canvases_advanced"] == [canvas_id]
    assert summary["users_entered"] == 3

    assert sorted(c.body["u"] for c in webhook_sink.at(path)) == sorted(f"c{i}-{domain}" for i in range(3))
    for i in range(3):
        assert [m["Subject"] for m in smtp_sink.to(f"c{i}@{domain}")] == [f"Hello C{i}"]

    stats = _json(_run(url, smtp_sink.port, "campaign", "stats", "-w", ws, campaign_id, "--json"))
    assert stats["totals"]["sent"] == 3
    log = _json(_run(url, smtp_sink.port, "campaign", "log", "-w", ws, campaign_id, str(queued["id"]), "--json"))
    assert sorted(e["external_id"] for e in log) == sorted(f"c{i}-{domain}" for i in range(3))
    canvas_stats = _json(_run(url, smtp_sink.port, "canvas", "stats", "-w", ws, canvas_id, "--json"))
    assert canvas_stats["steps"][0]["sent"] == 3 and canvas_stats["exited"] == 3
