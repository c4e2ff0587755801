"""Alerts to a loopback webhook receiver and a local SMTP server (aiosmtpd): exactly once per incident."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from cohortflow.settings import SyncSettings
from cohortflow.sync import load_workspace, run_sync
from cohortflow.sync.alerts import deliver, evaluate, open_incidents, rules_for
from cohortflow.sync.errors import ConfigError
from cohortflow.sync.workspace import Workspace
from tests.support import free_port
from tests.sync.service_support import FakeClock, workspace_doc, write_doc
from tests.sync.support import FakeBraze, Warehouse


class Receiver:
    """A webhook receiver on loopback; ``fail_next`` answers that many requests with 500."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status = 200
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    status = 500
                else:
                    receiver.bodies.append(body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[tuple[str, str]]:
        return [(b["cohortflow"]["event"], b["cohortflow"]["kind"]) for b in self.bodies]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, SyncSettings]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, SyncSettings(smtp_host="127.0.0.1", smtp_port=port, alert_from="cohortflow <alerts@example.com>")
    controller.stop()


def _workspace(tmp_path: Path, fake: FakeBraze, receiver: Receiver, state_url: str, **sync: Any) -> Workspace:
    doc = workspace_doc(fake, {"vip": sync})
    doc["alerts"] = {
        "channels": {
            "slack": {"type": "webhook", "url": receiver.url},
            "oncall": {"type": "email", "to": ["oncall@example.com"]},
        },
        "notify": ["slack", "oncall"],
        "rejected_rows_percent": 20,
        "no_success_hours": 6,
    }
    return load_workspace(write_doc(tmp_path, doc), state_url=state_url)


def _cycle(ws: Workspace, settings: SyncSettings) -> None:
    evaluate(ws, base_url="http://sync.example")
    deliver(ws, "test", settings)


def test_one_alert_per_incident_and_one_recovery(
    tmp_path: Path,
    fake: FakeBraze,
    warehouse: Warehouse,
    state_url: str,
    receiver: Receiver,
    smtp: tuple[Mailbox, SyncSettings],
) -> None:
    box, settings = smtp
    fake.users = {"u0", "u1", "u2"}
    warehouse.set_range(range(3))
    with _workspace(tmp_path, fake, receiver, state_url) as ws:
        # Three failed runs (the destination refuses the key): one alert on each channel.
        for _ in range(3):
            fake.fail_next = [401]
            assert run_sync(ws, "vip").status == "failed"
            _cycle(ws, settings)
        assert receiver.events() == [("alert", "failed")]
        assert [m["Subject"] for m in box.messages] == ["[cohortflow] Sync vip failed"]
        body = receiver.bodies[0]
        assert body["text"].startswith(":red_circle: cohortflow: Sync vip failed") and body["blocks"]
        assert body["cohortflow"]["url"].startswith("http://sync.example/app/syncs/vip/runs/")
        assert "refused the credentials" in body["cohortflow"]["message"]
        # Success: one recovery per channel; more successes say nothing.
        for _ in range(2):
            assert run_sync(ws, "vip").status == "succeeded"
            _cycle(ws, settings)
        assert receiver.events() == [("alert", "failed"), ("recovery", "failed")]
        assert [m["Subject"] for m in box.messages][-1] == "[cohortflow] Sync vip recovered"
        # A new failure is a new incident.
        warehouse.set_range(range(2))
        fake.fail_next = [401]
        run_sync(ws, "vip")
        _cycle(ws, settings)
        assert receiver.events()[-1] == ("alert", "failed") and len(box.messages) == 3
        assert [i.kind for i in open_incidents(ws, "vip")] == ["failed"]


def test_rejected_rows_above_the_threshold(
    tmp_path: Path,
    fake: FakeBraze,
    warehouse: Warehouse,
    state_url: str,
    receiver: Receiver,
    smtp: tuple[Mailbox, SyncSettings],
) -> None:
    box, settings = smtp
    fake.users = {f"u{i}" for i in range(10)}
    rows = [{"id": str(i), "uid": f"u{i}" if i >= 3 else None} for i in range(10)]  # 30% without identifier
    warehouse.set_rows(rows)
    with _workspace(tmp_path, fake, receiver, state_url, alerts={"notify": ["slack"]}) as ws:
        for _ in range(2):
            run_sync(ws, "vip")
            _cycle(ws, settings)
        assert receiver.events() == [("alert", "rejected")]
        assert "30.0% of the model's rows were rejected (threshold 20%)" in receiver.bodies[0]["cohortflow"]["message"]
        assert box.messages == []  # the sync's notify overrides the workspace's
        warehouse.set_rows([{"id": str(i), "uid": f"u{i}"} for i in range(10)])
        run_sync(ws, "vip")
        _cycle(ws, settings)
        assert receiver.events() == [("alert", "rejected"), ("recovery", "rejected")]


def test_no_successful_run_for_hours_with_a_fake_clock_and_webhook_retries(
    tmp_path: Path,
    fake: FakeBraze,
    warehouse: Warehouse,
    state_url: str,
    receiver: Receiver,
    smtp: tuple[Mailbox, SyncSettings],
) -> None:
    box, settings = smtp
    fake.users = {"u0"}
    warehouse.set_range(range(1))
    clock = FakeClock()
    with _workspace(tmp_path, fake, receiver, state_url, alerts={"failed": False}) as ws:
        ws.store.clock = clock
        assert run_sync(ws, "vip").status == "succeeded"
        _cycle(ws, settings)
        clock.advance(hours=5)
        warehouse.set_range(range(2))
        fake.fail_next = [401]
        run_sync(ws, "vip")  # failed, but "failed" alerts are off for this sync
        _cycle(ws, settings)
        assert receiver.events() == []
        receiver.fail_next = 1  # the first delivery attempt gets a 500
        clock.advance(hours=1, minutes=1)
        for _ in range(3):
            _cycle(ws, settings)
        assert receiver.events() == []  # the retry waits for its backoff
        clock.advance(seconds=5)
        for _ in range(3):
            _cycle(ws, settings)
            clock.advance(minutes=30)
        assert receiver.events() == [("alert", "stale")]
        assert len(box.messages) == 1 and "no successful run for 6 hours" in box.messages[0].get_content()
        assert run_sync(ws, "vip").status == "succeeded"
        _cycle(ws, settings)
        assert receiver.events() == [("alert", "stale"), ("recovery", "stale")]


def test_two_processes_judging_at_once_alert_once(
    tmp_path: Path,
    fake: FakeBraze,
    warehouse: Warehouse,
    state_url: str,
    receiver: Receiver,
    smtp: tuple[Mailbox, SyncSettings],
) -> None:
    box, settings = smtp
    warehouse.set_range(range(2))
    with _workspace(tmp_path, fake, receiver, state_url) as first:
        fake.fail_next = [401]
        run_sync(first, "vip")
        with load_workspace(first.path, state_url=state_url) as second:
            assert second.store is not None  # opened (and migrated) before the threads share it
            threads = [threading.Thread(target=_cycle, args=(ws, settings)) for ws in (first, second, first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert receiver.events() == [("alert", "failed")] and len(box.messages) == 1


def test_alert_rules_merge_and_validate(tmp_path: Path, fake: FakeBraze, receiver: Receiver) -> None:
    doc = workspace_doc(fake, {"vip": {"alerts": {"rejected_rows_percent": None, "notify": []}}, "other": {}})
    doc["alerts"] = {
        "channels": {"slack": {"type": "webhook", "url": receiver.url}},
        "notify": ["slack"],
        "rejected_rows_percent": 5,
    }
    with load_workspace(write_doc(tmp_path, doc)) as ws:
        vip, other = rules_for(ws.config, "vip"), rules_for(ws.config, "other")
    assert (vip.rejected_rows_percent, vip.notify, vip.failed) == (None, (), True)
    assert (other.rejected_rows_percent, other.notify) == (5, ("slack",))
    doc["syncs"]["vip"]["alerts"] = {"notify": ["pager"]}
    with pytest.raises(ConfigError, match=r"syncs.vip.alerts.notify: unknown alert channel 'pager'"):
        load_workspace(write_doc(tmp_path, doc))
