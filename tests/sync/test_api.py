"""The sync service's REST API over HTTP, against a real ``cohortflow sync serve`` process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sync.service_support import ServiceProcess, start_service, workspace_doc, write_doc
from tests.sync.support import FakeBraze, Warehouse, run_cli


@pytest.fixture
def service(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str
) -> Iterator[tuple[ServiceProcess, str]]:
    fake.users = {f"u{i}" for i in range(0, 3000, 2)}
    warehouse.set_range(range(3000))
    doc = workspace_doc(
        fake,
        {"vip": {}, "paused": {"enabled": False}, "slow": {}},
        batch_size=100,
        concurrency=1,
    )
    doc["destinations"]["wrong_key"] = {**doc["destinations"]["braze"], "data_import_key": "not-the-key"}
    path = write_doc(tmp_path, doc)
    created = run_cli(path, state_url, "token", "create", "tests")
    assert created.returncode == 0, created.stderr
    process = start_service(path, state_url)
    try:
        yield process, created.stdout.strip()
    finally:
        process.stop()


def _client(base_url: str, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=60)


def _wait(api: httpx.Client, sync: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/syncs/{sync}/runs/{run_id}").json()
        if run["status"] in ("succeeded", "partial", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def test_tokens_are_required_and_revocable(service: tuple[ServiceProcess, str], tmp_path: Path, state_url: str) -> None:
    process, token = service
    assert token.startswith("cfsync_")
    for bad in (None, "cfsync_wrong"):
        answer = _client(process.base_url, bad).get("/syncs")
        assert answer.status_code == 401 and answer.json()["message"], answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    listed = run_cli(tmp_path / "cohortflow.yaml", state_url, "token", "list", "--json")
    assert token not in listed.stdout and '"state": "active"' in listed.stdout
    second = run_cli(tmp_path / "cohortflow.yaml", state_url, "token", "create", "other").stdout.strip()
    assert _client(process.base_url, second).get("/syncs").status_code == 200
    revoked = run_cli(tmp_path / "cohortflow.yaml", state_url, "token", "revoke", second[:15])
    assert revoked.returncode == 0, revoked.stderr
    assert _client(process.base_url, second).get("/syncs").status_code == 401
    assert _client(process.base_url, token).get("/syncs").status_code == 200


def test_read_sources_models_destinations_and_syncs(service: tuple[ServiceProcess, str], fake: FakeBraze) -> None:
    process, token = service
    api = _client(process.base_url, token)
    sources = api.get("/sources").json()
    assert sources["hasMore"] is False and sources["data"][0]["id"] == "warehouse"
    assert api.post("/sources/warehouse/test").json()["ok"] is True
    model = api.get("/models/customers").json()
    assert model == {
        "id": "customers",
        "slug": "customers",
        "name": "customers",
        "sourceId": "warehouse",
        "queryType": "table",
        "raw": None,
        "table": {"name": "customers"},
        "primaryKey": "id",
    }
    preview = api.get("/models/customers/preview", params={"limit": 2}).json()
    assert preview["columns"] == ["id", "uid", "email", "device"] and len(preview["rows"]) == 2
    assert api.get("/models/customers/preview", params={"limit": 0}).status_code == 400
    destinations = api.get("/destinations")
    assert fake.client_secret not in destinations.text and fake.partner_api_key not in destinations.text
    braze = api.get("/destinations/braze").json()
    assert braze["typeName"] == "Braze Cohorts" and braze["configuration"]["rest_endpoint"] == fake.url
    assert "accepted the keys" in api.post("/destinations/braze/test").json()["message"]
    refused = api.post("/destinations/wrong_key/test")
    assert refused.status_code == 502 and "refused the credentials" in refused.json()["message"]
    missing = api.get("/syncs/nope")
    assert missing.status_code == 404 and "no sync named 'nope'" in missing.json()["message"]
    syncs = {s["id"]: s for s in api.get("/syncs").json()["data"]}
    assert syncs["vip"]["status"] == "pending" and syncs["paused"]["status"] == "disabled"
    assert syncs["vip"]["configuration"]["cohortId"] == "cohortflow-vip"
    schema = httpx.get(f"{process.base_url}/openapi.json").json()
    assert "/api/v1/syncs/{sync_id}/trigger" in schema["paths"]


def test_trigger_read_list_and_cancel_runs(service: tuple[ServiceProcess, str], fake: FakeBraze) -> None:
    process, token = service
    api = _client(process.base_url, token)
    dry = api.post("/syncs/vip/trigger", json={"dryRun": True}).json()
    run = _wait(api, "vip", dry["id"])
    assert run["status"] == "succeeded" and run["dryRun"] and run["plannedRows"]["addedCount"] == 3000
    assert run["successfulRows"]["addedCount"] == 0 and not fake.membership_requests()
    real = api.post("/syncs/trigger", json={"syncSlug": "vip"}).json()
    run = _wait(api, "vip", real["id"])
    assert run["status"] == "succeeded", run
    assert run["querySize"] == 3000 and run["successfulRows"]["addedCount"] == 3000
    assert run["matchRate"] == pytest.approx(0.5) and run["trigger"] == "api" and run["completionRatio"] == 1.0
    assert fake.members["cohortflow-vip"] == fake.users
    full = api.post("/syncs/vip/trigger", json={"fullResync": True}).json()
    assert _wait(api, "vip", full["id"])["fullResync"] is True
    listed = api.get("/syncs/vip/runs", params={"limit": 2}).json()["data"]
    assert [r["id"] for r in listed] == [full["id"], real["id"]]
    assert api.get("/syncs/vip/runs", params={"runId": dry["id"]}).json()["data"][0]["dryRun"] is True
    # Bad input changes nothing.
    for body, status in (({"fullResync": "yes please"}, 400), ({"bogus": True}, 400)):
        answer = api.post("/syncs/vip/trigger", json=body)
        assert answer.status_code == status and answer.json()["message"], answer.text
    disabled = api.post("/syncs/paused/trigger")
    assert disabled.status_code == 409 and "disabled" in disabled.json()["message"]
    assert api.get(f"/syncs/paused/runs/{real['id']}").status_code == 404  # another sync's run
    # Cancel a run in flight: it stops after the batches in flight and says what it did not attempt.
    fake.delay = 0.2
    slow = api.post("/syncs/slow/trigger").json()
    deadline = time.monotonic() + 30
    while not [r for r in fake.membership_requests() if r.cohort_id == "cohortflow-slow"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.post(f"/syncs/slow/runs/{slow['id']}/cancel").status_code == 200
    cancelled = _wait(api, "slow", slow["id"])
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["not_attempted"] > 0
    again = api.post(f"/syncs/slow/runs/{slow['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["message"]
