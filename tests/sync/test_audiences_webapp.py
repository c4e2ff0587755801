"""The web app's audience pages over HTTP against a real ``sync serve``: who may do what (an operator sees and
sizes, only an admin saves or deletes), CSRF on the builder's JSON preview, a refused save writes nothing, and a
sync created from an audience with a split group and a priority list is written into cohortflow.yaml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.sync.audiences.oracle import Oracle
from tests.sync.audiences.warehouse import Data, generate, workspace_doc, write_duckdb
from tests.sync.service_support import ServiceProcess, start_service
from tests.sync.support import FakeBraze, run_cli

PASSWORD = "a long test password"
HEADER = "# Audiences live here too.\n"
FR: dict[str, Any] = {"type": "property", "column": "country", "operator": "equals", "value": "FR"}
AUDIENCES: dict[str, Any] = {
    "french": {"parent": "people", "filter": FR, "splits": {"groups": {"treatment": 90, "holdout": 10}}},
    "vip": {"parent": "people", "filter": {"type": "property", "column": "vip", "operator": "equals", "value": True}},
}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def _sign_in(base_url: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{base_url}/app", timeout=60, follow_redirects=True)
    form = client.get("/login")
    answer = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": _csrf(form.text)})
    assert answer.status_code == 200, answer.text[:300]
    return client


@pytest.fixture
def served(tmp_path: Path, fake: FakeBraze, state_url: str) -> Iterator[tuple[ServiceProcess, Path, Data]]:
    data = generate()
    doc = workspace_doc(
        write_duckdb(data, tmp_path / "wh.duckdb"),
        AUDIENCES,
        priority_lists={"lifecycle": {"audiences": ["vip", "french"]}},
    )
    doc["destinations"] = {
        "braze": {
            "type": "braze_cohorts",
            "rest_endpoint": fake.url,
            "partner": fake.partner,
            "partner_api_key": fake.partner_api_key,
            "data_import_key": fake.client_secret,
        }
    }
    path = tmp_path / "cohortflow.yaml"
    path.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
    for email, role in (("admin@example.com", "admin"), ("ops@example.com", "operator")):
        made = run_cli(path, state_url, "user", "create", email, "--role", role, "--password-stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
    process = start_service(path, state_url)
    try:
        yield process, path, data
    finally:
        process.stop()


def _preview(client: httpx.Client, token: str | None, definition: dict[str, Any]) -> httpx.Response:
    headers = {"X-Requested-With": "fetch", **({"X-CSRF-Token": token} if token else {})}
    return client.post("/audiences/preview", json={"definition": definition}, headers=headers)


def test_roles_csrf_and_refused_saves(served: tuple[ServiceProcess, Path, Data]) -> None:
    process, path, data = served
    before = path.read_text()
    ops = _sign_in(process.base_url, "ops@example.com")
    page = ops.get("/audiences/french")
    assert page.status_code == 200 and 'id="audience-data"' in page.text and "Save audience" not in page.text
    token = _csrf(page.text)
    assert _preview(ops, None, {"parent": "people"}).status_code == 403  # no CSRF token: refused
    sized = _preview(ops, token, {"parent": "people", "filter": FR})
    assert sized.status_code == 200 and sized.json()["size"] == len(Oracle(data, AUDIENCES).members(FR))
    garbled = ops.post("/audiences/preview", content=b"{nope", headers={"X-CSRF-Token": token})
    assert garbled.status_code == 400 and garbled.json()["ok"] is False
    bad = _preview(ops, token, {"parent": "people", "filter": {**FR, "column": "contry"}})
    assert bad.status_code == 400
    assert bad.json()["problems"][0]["path"] == "filter.column"
    assert "unknown column 'contry'" in bad.json()["problems"][0]["message"]
    refused = ops.post("/audiences/new", data={"csrf_token": token, "name": "x", "definition": '{"parent": "people"}'})
    assert refused.status_code == 403
    assert ops.post("/audiences/vip/delete", data={"csrf_token": token}).status_code == 403

    admin = _sign_in(process.base_url, "admin@example.com")
    token = _csrf(admin.get("/audiences/new").text)
    wrong = {"parent": "people", "filter": {"type": "and", "filters": [FR, {**FR, "column": "ltv"}]}}
    saved = admin.post("/audiences/new", data={"csrf_token": token, "name": "nope", "definition": json.dumps(wrong)})
    assert saved.status_code == 400 and "Nothing was saved" in saved.text
    assert "filter.filters.1.value" in saved.text and "needs a number" in saved.text
    broken = admin.post("/audiences/new", data={"csrf_token": token, "name": "nope", "definition": "{not json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.text
    taken = admin.post("/audiences/new", data={"csrf_token": token, "name": "vip", "definition": json.dumps(wrong)})
    assert taken.status_code == 400 and "already exists" in taken.text
    # vip is in a priority list: deleting it is refused with the engine's reason.
    kept = admin.post("/audiences/vip/delete", data={"csrf_token": token})
    assert kept.status_code == 400 and "lifecycle" in kept.text
    assert path.read_text() == before

    good = {"parent": "people", "description": "French VIPs", "filter": {"type": "and", "filters": [FR, {
        "type": "in_audience", "audience": "vip"}]}}  # fmt: skip
    fields = {"csrf_token": token, "name": "french_vip", "definition": json.dumps(good)}
    made = admin.post("/audiences/new", data=fields)
    assert made.status_code == 200 and made.url.path == "/app/audiences/french_vip"
    text = path.read_text()
    assert text.startswith(HEADER) and yaml.safe_load(text)["audiences"]["french_vip"] == good
    # Editing keeps the audience's place and name; a bad edit changes nothing.
    edited = {**good, "description": "French VIPs, edited"}
    same = path.read_text()
    bad_edit = {**good, "filter": {"type": "in_audience", "audience": "french_vip"}}
    refused = admin.post("/audiences/french_vip", data={**fields, "definition": json.dumps(bad_edit)})
    assert refused.status_code == 400 and "includes itself" in refused.text
    assert path.read_text() == same
    saved = admin.post("/audiences/french_vip", data={**fields, "definition": json.dumps(edited)})
    assert saved.url.path == "/app/audiences/french_vip" and "saved in cohortflow.yaml" in saved.text
    assert yaml.safe_load(path.read_text())["audiences"]["french_vip"] == edited
    good = edited
    listed = admin.get("/audiences").text
    assert "french_vip" in listed and "French VIPs, edited" in listed
    overlap = admin.get("/audiences/overlap", params={"a": "french", "b": "french_vip"})
    oracle = Oracle(data, {**AUDIENCES, "french_vip": good})
    both = oracle.members(FR) & oracle.members(good["filter"])
    assert f'data-field="both">{len(both)}<' in overlap.text
    assert admin.post("/audiences/french_vip/delete", data={"csrf_token": token}).url.path == "/app/audiences"
    assert "french_vip" not in yaml.safe_load(path.read_text())["audiences"]


def test_a_sync_from_an_audience_with_a_split_and_a_priority_list(served: tuple[ServiceProcess, Path, Data]) -> None:
    process, path, _data = served
    admin = _sign_in(process.base_url, "admin@example.com")
    choose = admin.get("/syncs/new")
    assert '<option value="audience:french">' in choose.text
    form = admin.get("/syncs/new", params={"what": "audience:french", "destination": "braze"})
    assert form.status_code == 200
    assert '<option value="holdout">Only the holdout group</option>' in form.text
    assert '<option value="lifecycle">' in form.text
    # What leaves an audience is its members, not a model's rows.
    assert "<legend>Members who leave the audience</legend>" in form.text and "leave the model" not in form.text
    # The columns to match on are the parent's identifiers.
    assert '<option value="external_id">' in form.text and '<option value="ltv">' not in form.text
    fields = {
        "csrf_token": _csrf(form.text),
        "audience": "french",
        "audience_split": "holdout",
        "audience_priority_list": "lifecycle",
        "destination": "braze",
        "name": "french_holdout",
        "id_kind_0": "external_id",
        "id_column_0": "external_id",
        "cohort_mode": "create",
        "cohort_name": "French holdout",
    }
    bad = admin.post("/syncs/new", data={**fields, "id_column_0": "ltv"})
    assert bad.status_code == 400 and "identifiers" in bad.text
    created = admin.post("/syncs/new", data=fields)
    assert created.url.path == "/app/syncs/french_holdout", created.text[:500]
    assert "audience french (split holdout, priority list lifecycle)" in created.text
    assert '<span class="label">Departed members</span>' in created.text
    sync = yaml.safe_load(path.read_text())["syncs"]["french_holdout"]
    assert sync["audience"] == {"name": "french", "split": "holdout", "priority_list": "lifecycle"}
    assert "model" not in sync
    edit = admin.get("/syncs/french_holdout/edit")
    assert '<option value="holdout" selected>' in edit.text
