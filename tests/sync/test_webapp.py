"""The sync web app over HTTP against a real ``sync serve``: access rules, config written back to the YAML (comments
kept, secrets in a 0600 file behind ${VAR}), bad input changes nothing, hand edits show on reload, the debugger."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from cohortflow.sync import load_workspace, run_sync
from cohortflow.sync.debugger import run_requests, sample_body
from cohortflow.sync.runs import list_runs
from tests.sync.service_support import ServiceProcess, start_service
from tests.sync.support import FakeBraze, Warehouse, run_cli

PASSWORD = "a long test password"
HEADER = "# Our sync workspace: reviewed in pull requests.\n"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def _sign_in(base_url: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{base_url}/app", timeout=60, follow_redirects=True)
    form = client.get("/login")
    answer = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": _csrf(form.text)})
    assert answer.status_code == 200 and answer.url.path == "/app/syncs", answer.text[:300]
    return client


@pytest.fixture
def served(tmp_path: Path, warehouse: Warehouse, state_url: str) -> Iterator[tuple[ServiceProcess, Path]]:
    warehouse.set_range(range(20))
    path = tmp_path / "cohortflow.yaml"
    path.write_text(
        HEADER
        + "version: 1\nsources:\n  warehouse: {type: duckdb, path: warehouse.duckdb}  # the warehouse\n"
        + "models: {}\ndestinations: {}\nsyncs: {}\n"
    )
    for email, role in (("admin@example.com", "admin"), ("ops@example.com", "operator")):
        made = run_cli(path, state_url, "user", "create", email, "--role", role, "--password-stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
    process = start_service(path, state_url)
    try:
        yield process, path
    finally:
        process.stop()


def test_pages_need_a_session_and_the_right_role(served: tuple[ServiceProcess, Path]) -> None:
    process, path = served
    anonymous = httpx.get(f"{process.base_url}/app/syncs", follow_redirects=False)
    assert anonymous.status_code == 303 and "/app/login" in anonymous.headers["location"]
    ops = _sign_in(process.base_url, "ops@example.com")
    assert ops.get("/syncs").status_code == 200
    for page in ("/destinations/new", "/models/new", "/sources/new", "/syncs/new"):
        refused = ops.get(page)
        assert refused.status_code == 403 and "Only an admin" in refused.text, page
    admin = _sign_in(process.base_url, "admin@example.com")
    form = admin.get("/sources/new")
    # Without the CSRF token nothing happens.
    refused = admin.post("/sources/new", data={"name": "other", "type": "duckdb", "path": "x.duckdb", "action": "save"})
    assert refused.status_code == 403
    assert "other" not in path.read_text()
    assert _csrf(form.text)


def test_config_is_written_back_with_comments_and_secrets_beside_it(
    served: tuple[ServiceProcess, Path], fake: FakeBraze, state_url: str
) -> None:
    process, path = served
    admin = _sign_in(process.base_url, "admin@example.com")
    token = _csrf(admin.get("/destinations/new/braze_cohorts").text)
    fields = {
        "csrf_token": token,
        "name": "braze",
        "rest_endpoint": fake.url,
        "data_import_key": fake.client_secret,
        "partner_api_key": fake.partner_api_key,
        "partner": fake.partner,
    }
    tested = admin.post("/destinations/new/braze_cohorts", data={**fields, "action": "test"})
    assert "Connection works" in tested.text and "accepted the keys" in tested.text
    assert "braze" not in yaml.safe_load(path.read_text())["destinations"]  # testing saves nothing
    wrong = admin.post("/destinations/new/braze_cohorts", data={**fields, "data_import_key": "wrong", "action": "test"})
    assert "refused the credentials" in wrong.text
    bad = admin.post("/destinations/new/braze_cohorts", data={**fields, "rest_endpoint": "ftp://x", "action": "save"})
    assert bad.status_code == 400 and "http(s) URL" in bad.text
    saved = admin.post("/destinations/new/braze_cohorts", data={**fields, "action": "save"})
    assert saved.url.path == "/app/destinations/braze", saved.text[:300]
    text = path.read_text()
    assert text.startswith(HEADER) and "# the warehouse" in text
    assert fake.client_secret not in text and "${COHORTFLOW_BRAZE_DATA_IMPORT_KEY}" in text
    secrets = path.with_name("cohortflow.secrets.env")
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f'COHORTFLOW_BRAZE_DATA_IMPORT_KEY="{fake.client_secret}"' in secrets.read_text()
    # A model: preview, then the primary key from its columns.
    token = _csrf(admin.get("/models/new").text)
    model = {
        "csrf_token": token,
        "name": "customers",
        "source": "warehouse",
        "query_type": "table",
        "table": "customers",
    }
    preview = admin.post("/models/new", data={**model, "action": "preview"})
    assert '<option value="uid"' in preview.text
    missing = admin.post("/models/new", data={**model, "action": "save", "primary_key": "nope"})
    assert missing.status_code == 400 and "one of the model&#39;s columns" in missing.text
    assert admin.post("/models/new", data={**model, "action": "save", "primary_key": "id"}).status_code == 200
    # A sync with a fallback identifier and a new cohort; a duplicate name changes nothing.
    form = admin.get("/syncs/new", params={"model": "customers", "destination": "braze"})
    assert '<option value="uid"' in form.text
    assert "<legend>Rows that leave the model</legend>" in form.text and "Remove them from the cohort" in form.text
    # To a custom attribute instead of a cohort, departed rows lose the attribute.
    attrs = {"csrf_token": token, "name": "attrs", "rest_endpoint": fake.url, "rest_api_key": "k", "action": "save"}
    assert admin.post("/destinations/new/braze_users_track", data=attrs).url.path == "/app/destinations/attrs"
    to_attrs = admin.get("/syncs/new", params={"model": "customers", "destination": "attrs"}).text
    assert "Remove the attribute from them" in to_attrs and "Remove them from the cohort" not in to_attrs
    assert "get the attribute set or removed" in to_attrs and "removed from the cohort" not in to_attrs
    assert "added to or removed from the cohort" in form.text
    sync = {
        "csrf_token": _csrf(form.text),
        "name": "vip",
        "model": "customers",
        "destination": "braze",
        "id_kind_0": "external_id",
        "id_column_0": "uid",
        "id_kind_1": "alias",
        "id_column_1": "email",
        "id_label_1": "email",
        "cohort_mode": "create",
        "cohort_name": "VIP customers",
        "on_row_removed": "remove",
        "schedule_type": "cron",
        "cron_expression": "0 6 * * 1-5",
        "cron_timezone": "Europe/Paris",
        "alerts_mode": "default",
    }
    created = admin.post("/syncs/new", data=sync)
    assert created.url.path == "/app/syncs/vip", created.text[:500]
    assert "cron 0 6 * * 1-5 (Europe/Paris)" in created.text
    assert '<span class="label">Departed rows</span>' in created.text
    before = path.read_text()
    duplicate = admin.post("/syncs/new", data={**sync, "cohort_name": "Other"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.text and path.read_text() == before
    bad_cron = admin.post("/syncs/vip/edit", data={**sync, "cron_expression": "every day"})
    assert bad_cron.status_code == 400 and "not a five-field cron expression" in bad_cron.text
    assert path.read_text() == before
    doc = yaml.safe_load(before)
    assert doc["syncs"]["vip"]["identifier"] == {
        "fallback": [{"external_id": "uid"}, {"alias": {"name_column": "email", "label": "email"}}]
    }
    # Disable from the app; a hand edit shows on reload.
    admin.post("/syncs/vip/enabled", data={"csrf_token": sync["csrf_token"], "enabled": "false"})
    assert yaml.safe_load(path.read_text())["syncs"]["vip"]["enabled"] is False
    path.write_text(path.read_text().replace("VIP customers", "Very important customers"))
    time.sleep(0.05)
    assert "Very important customers" in admin.get("/syncs/vip/edit").text
    with load_workspace(path, state_url=state_url) as ws:
        assert ws.sync("vip").enabled is False  # the file validates as every command reads it


def test_run_now_and_the_debugger(
    served: tuple[ServiceProcess, Path], fake: FakeBraze, state_url: str, warehouse: Warehouse
) -> None:
    process, path = served
    fake.users = {f"u{i}" for i in range(0, 20, 2)}
    doc = yaml.safe_load(path.read_text())
    doc["models"] = {"customers": {"source": "warehouse", "table": "customers", "primary_key": "id"}}
    doc["destinations"] = {
        "braze": {
            "type": "braze_cohorts",
            "rest_endpoint": fake.url,
            "partner": fake.partner,
            "partner_api_key": fake.partner_api_key,
            "data_import_key": fake.client_secret,
            "batch_size": 5,
        }
    }
    doc["syncs"] = {
        "vip": {
            "model": "customers",
            "destination": "braze",
            "identifier": {"external_id": "uid"},
            "cohort": {"mode": "create", "name": "VIP"},
        }
    }
    path.write_text(yaml.safe_dump(doc))
    ops = _sign_in(process.base_url, "ops@example.com")
    page = ops.get("/syncs/vip")
    ran = ops.post("/syncs/vip/run", data={"csrf_token": _csrf(page.text), "mode": "run"})
    assert "/app/syncs/vip/runs/" in str(ran.url)
    live_url = str(ran.url).split("/app", 1)[1] + "/live"
    deadline = time.monotonic() + 60
    while not (live := ops.get(live_url).json())["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert live["status"] == "succeeded" and live["fields"]["added"] == "20" and live["fields"]["match_rate"] == "50.0%"
    requests = live["requests"]
    assert requests[0]["path"].endswith("/cohorts") and requests[1]["path"].endswith("/cohorts/users")
    assert len(requests) == 5 and all(r["status"] == 201 for r in requests)
    assert fake.client_secret not in str(requests) and "client_secret" in requests[1]["body"]
    assert ops.get(live_url, params={"after": requests[-1]["seq"]}).json()["requests"] == []
    page = ops.get(str(ran.url).split("/app", 1)[1])
    assert "Request debugger" in page.text and "201" in page.text
    chart = ops.get("/syncs/vip")
    assert "<svg" in chart.text and "50.0%" in chart.text


def test_request_samples_are_bounded_and_masked(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = (
        b'{"partner_api_key": "cfpartner_abcdefghijkl", '
        b'"cohort_changes": [{"user_ids": ["a","b","c","d","e","f","g"]}]}'
    )
    body = sample_body(raw)
    assert "cfpartner_abcdefghijkl" not in body and '"cfpart' in body and "2 more" in body
    monkeypatch.setenv("COHORTFLOW_SYNC__DEBUGGER_SAMPLES_PER_RUN", "3")
    from cohortflow.settings import get_settings

    get_settings.cache_clear()
    try:
        warehouse.set_range(range(40))
        fake.users = {f"u{i}" for i in range(40)}
        fake.fail_next = [500]
        from tests.sync.service_support import workspace_doc, write_doc

        path = write_doc(tmp_path, workspace_doc(fake, {"vip": {}}, batch_size=4, concurrency=1))
        with load_workspace(path, state_url=state_url) as ws:
            assert run_sync(ws, "vip").status == "succeeded"
            run = list_runs(ws.store, "vip", 1)[0]
            samples = run_requests(ws.store, run.id)
        # Three kept (the cohort naming, the failed attempt, its retry), then only failures (none).
        assert [s.status for s in samples] == [201, 500, 201]
        assert samples[2].attempt == 2 and run.counts["requests"] == 12
    finally:
        get_settings.cache_clear()
