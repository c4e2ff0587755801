"""Audiences in the REST API (``/api/v1/parents``, ``/audiences``), over HTTP against a real ``cohortflow sync
serve``: sizes and overlaps equal a plain-Python reading of the definitions on generated data; a definition saved
through the API lands in cohortflow.yaml with its comments kept and a sync of it sends exactly its members; every bad
definition is a 400 naming the problem, and the file stays byte for byte what it was."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.sync.audiences.oracle import Oracle
from tests.sync.audiences.warehouse import Data, generate, workspace_doc, write_duckdb
from tests.sync.service_support import ServiceProcess, start_service
from tests.sync.support import FAST_RETRY, FakeBraze, run_cli

HEADER = "# The marketing team's workspace: audiences are reviewed like code.\n"
VIP: dict[str, Any] = {"type": "property", "column": "vip", "operator": "equals", "value": True}
BUYERS: dict[str, Any] = {
    "type": "and",
    "filters": [
        {"type": "property", "column": "country", "operator": "in", "value": ["FR", "DE"]},
        {
            "type": "related",
            "relation": "orders",
            "count": {"operator": "at_least", "value": 1},
            "where": {"type": "property", "column": "status", "operator": "equals", "value": "paid"},
        },
    ],
}
AUDIENCES: dict[str, Any] = {
    "vip": {"parent": "people", "description": "Our VIPs", "filter": VIP},
    "buyers": {"parent": "people", "filter": BUYERS, "splits": {"groups": {"treatment": 80, "holdout": 20}}},
}


@pytest.fixture
def served(tmp_path: Path, fake: FakeBraze, state_url: str) -> Iterator[tuple[ServiceProcess, str, Path, Data]]:
    data = generate()
    fake.users = {f"u{p['id']}" for p in data.rows("customers")}
    doc = workspace_doc(write_duckdb(data, tmp_path / "wh.duckdb"), AUDIENCES)
    doc["destinations"] = {
        "braze": {
            "type": "braze_cohorts",
            "rest_endpoint": fake.url,
            "partner": fake.partner,
            "partner_api_key": fake.partner_api_key,
            "data_import_key": fake.client_secret,
            "retry": FAST_RETRY,
        }
    }
    doc["syncs"] = {
        "vip_cohort": {
            "audience": "vip",
            "destination": "braze",
            "identifier": {"external_id": "external_id"},
            "cohort": {"mode": "create", "name": "VIP"},
        }
    }
    path = tmp_path / "cohortflow.yaml"
    path.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
    created = run_cli(path, state_url, "token", "create", "tests")
    assert created.returncode == 0, created.stderr
    process = start_service(path, state_url)
    try:
        yield process, created.stdout.strip(), path, data
    finally:
        process.stop()


def _wait(api: httpx.Client, sync: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/syncs/{sync}/runs/{run_id}").json()
        if run["status"] in ("succeeded", "partial", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def _api(process: ServiceProcess, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{process.base_url}/api/v1", headers=headers, timeout=60)


def test_audiences_need_a_token(served: tuple[ServiceProcess, str, Path, Data]) -> None:
    process, _token, path, _data = served
    before = path.read_text()
    anonymous = _api(process, None)
    for method, url, body in (
        ("GET", "/parents", None),
        ("GET", "/audiences", None),
        ("GET", "/audiences/vip", None),
        ("GET", "/audiences/vip/size", None),
        ("GET", "/audiences/overlap?a=vip&b=buyers", None),
        ("POST", "/audiences/preview", {"definition": {"parent": "people"}}),
        ("PUT", "/audiences/new_one", {"parent": "people"}),
        ("DELETE", "/audiences/buyers", None),
    ):
        answer = anonymous.request(method, url, json=body)
        assert answer.status_code == 401 and answer.json()["message"], (method, url)
    assert path.read_text() == before


def test_list_get_size_and_overlap_match_the_rules(served: tuple[ServiceProcess, str, Path, Data]) -> None:
    process, token, _path, data = served
    api = _api(process, token)
    oracle = Oracle(data, AUDIENCES)
    everyone = len(data.rows("customers"))
    vip, buyers = oracle.members(VIP), oracle.members(BUYERS)
    assert 3 < len(vip) < everyone and 3 < len(buyers) < everyone and vip & buyers

    parents = api.get("/parents").json()["data"]
    people = parents[0]
    assert people["parent"] == "people"
    country = next(c for c in people["columns"] if c["name"] == "country")
    assert "contains" in country["operators"] and "greater_than" not in country["operators"]
    assert {r["name"] for r in people["related"]} >= {"orders", "account"}
    assert {e["name"] for e in people["events"]} == {"page_views", "logins"}

    listed = {a["id"]: a for a in api.get("/audiences").json()["data"]}
    assert set(listed) == {"vip", "buyers"}
    assert listed["vip"]["syncIds"] == ["vip_cohort"] and listed["vip"]["description"] == "Our VIPs"
    assert listed["buyers"]["splits"] == {"treatment": 80, "holdout": 20}
    got = api.get("/audiences/buyers").json()
    assert got["definition"]["filter"]["filters"][1]["relation"] == "orders"

    size = api.get("/audiences/buyers/size", params={"sample": 5}).json()
    assert size["size"] == len(buyers) and size["parentRows"] == everyone
    assert sum(size["groups"].values()) == len(buyers) and set(size["groups"]) == {"treatment", "holdout"}
    assert len(size["sample"]) == min(5, len(buyers)) and {r["id"] for r in size["sample"]} <= buyers
    assert 'FROM "customers"' in size["sql"]
    holdout = api.get("/audiences/buyers/size", params={"split": "holdout"}).json()
    assert holdout["size"] == size["groups"]["holdout"]
    assert holdout["audience"] == {"name": "buyers", "split": "holdout", "priorityList": None}

    overlap = api.get("/audiences/overlap", params={"a": "vip", "b": "buyers"}).json()
    assert (overlap["aSize"], overlap["bSize"], overlap["both"]) == (len(vip), len(buyers), len(vip & buyers))
    assert (overlap["onlyA"], overlap["onlyB"], overlap["either"]) == (
        len(vip - buyers),
        len(buyers - vip),
        len(vip | buyers),
    )

    sync = api.get("/syncs/vip_cohort").json()
    assert sync["modelId"] is None and sync["audience"] == {"name": "vip", "split": None, "priorityList": None}

    assert api.get("/audiences/nope").status_code == 404
    assert api.get("/audiences/nope/size").status_code == 404
    assert api.get("/audiences/vip/size", params={"split": "nope"}).status_code == 404
    assert api.get("/audiences/vip/size", params={"sample": 5000}).status_code == 400


def test_preview_a_draft_then_save_it_and_sync_it(
    served: tuple[ServiceProcess, str, Path, Data], fake: FakeBraze
) -> None:
    process, token, path, data = served
    api = _api(process, token)
    before = path.read_text()
    draft = {
        "parent": "people",
        "filter": {
            "type": "or",
            "filters": [
                {"type": "in_audience", "audience": "vip"},
                # "at least" is the default count: the saved definition leaves it out, as sent.
                {"type": "performed", "event": "page_views", "count": {"value": 3}},
            ],
        },
    }
    want = Oracle(data, {**AUDIENCES, "loyal": draft}).members(draft["filter"])
    assert 3 < len(want) < len(data.rows("customers"))
    preview = api.post("/audiences/preview", json={"definition": draft, "sample": 3})
    assert preview.status_code == 200, preview.text
    assert preview.json()["size"] == len(want) and len(preview.json()["sample"]) == 3
    assert path.read_text() == before  # a preview writes nothing

    saved = api.put("/audiences/loyal", json=draft)
    assert saved.status_code == 200, saved.text
    assert saved.json()["definition"] == draft
    text = path.read_text()
    assert text.startswith(HEADER) and "loyal:" in text
    assert yaml.safe_load(text)["audiences"]["vip"] == AUDIENCES["vip"]  # the others are untouched
    assert api.get("/audiences/loyal/size").json()["size"] == len(want)

    # A sync of the saved audience, created through the API, sends exactly its members.
    sync = {
        "slug": "loyal_cohort",
        "audience": {"name": "loyal"},
        "destinationId": "braze",
        "identifier": {"external_id": "external_id"},
        "cohort": {"mode": "create", "name": "Loyal"},
    }
    refused = api.post("/syncs", json={**sync, "identifier": {"external_id": "ltv"}})
    assert refused.status_code == 400 and "identifiers" in refused.json()["message"], refused.text
    both = api.post("/syncs", json={**sync, "modelId": "customers"})
    assert both.status_code == 400 and "exactly one of modelId or audience" in both.json()["message"]
    created = api.post("/syncs", json=sync)
    assert created.status_code == 201, created.text
    assert created.json()["audience"] == {"name": "loyal", "split": None, "priorityList": None}
    assert yaml.safe_load(path.read_text())["syncs"]["loyal_cohort"]["audience"] == "loyal"
    run = _wait(api, "loyal_cohort", api.post("/syncs/loyal_cohort/trigger").json()["id"])
    assert run["status"] == "succeeded", run
    assert fake.members["cohortflow-loyal_cohort"] == {f"u{i}" for i in want}

    # Replacing keeps its place; deleting is refused while a sync names it, and works once nothing does.
    narrower = {**draft, "filter": {"type": "in_audience", "audience": "vip"}}
    assert api.put("/audiences/loyal", json=narrower).status_code == 200
    assert api.get("/audiences/loyal/size").json()["size"] == len(Oracle(data, AUDIENCES).members(VIP))
    refused = api.delete("/audiences/loyal")
    assert refused.status_code == 400 and "loyal_cohort" in refused.json()["message"], refused.text
    assert "loyal:" in path.read_text()
    # Once the sync sends another audience (a split group of it), nothing names loyal any more.
    moved = api.put("/syncs/loyal_cohort", json={**sync, "audience": {"name": "buyers", "split": "holdout"}})
    assert moved.status_code == 200 and moved.json()["audience"]["split"] == "holdout", moved.text
    assert api.delete("/audiences/loyal").status_code == 200
    assert "loyal" not in yaml.safe_load(path.read_text())["audiences"]
    assert api.delete("/audiences/loyal").status_code == 404


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"parent": "people", "filter": {"type": "property", "column": "contry", "operator": "equals", "value": "FR"}},
        "audiences.bad.filter.column: unknown column 'contry'",
    ),
    (
        {"parent": "people", "filter": {"type": "property", "column": "country", "operator": "after", "value": "F"}},
        "operator 'after' does not apply to the text column 'country'",
    ),
    (
        {"parent": "people", "filter": {"type": "property", "column": "ltv", "operator": "equals", "value": "100"}},
        "needs a number, got string '100'",
    ),
    (
        {"parent": "people", "filter": {"type": "in_audience", "audience": "bad"}},
        "audience 'bad' includes itself",
    ),
    ({"parent": "people", "filter": {"type": "related", "relation": "ordrs"}}, "ordrs"),
    ({"parent": "people", "colour": "blue"}, "audiences.bad.colour"),
    ({"parent": "nobody"}, "unknown parent 'nobody'"),
    ({"parent": "people", "splits": {"groups": {"a": 50, "b": 40}}}, "add up to 90"),
    ({"parent": "people", "filter": {"type": "xor", "filters": []}}, "'xor'"),
]


def test_a_bad_definition_is_a_clear_error_and_saves_nothing(served: tuple[ServiceProcess, str, Path, Data]) -> None:
    process, token, path, _data = served
    api = _api(process, token)
    before = path.read_text()
    for definition, message in BAD:
        for answer in (
            api.put("/audiences/bad", json=definition),
            api.post("/audiences/preview", json={"definition": definition, "name": "bad"}),
        ):
            assert answer.status_code == 400, (message, answer.text)
            assert message in answer.json()["message"], answer.json()["message"]
        assert path.read_text() == before
        assert api.get("/audiences/bad").status_code == 404


def test_bad_requests_around_the_definition(served: tuple[ServiceProcess, str, Path, Data]) -> None:
    process, token, path, _data = served
    api = _api(process, token)
    before = path.read_text()
    named = api.put("/audiences/Bad Name", json={"parent": "people"})
    assert named.status_code == 400 and "lower-case" in named.json()["message"]
    not_json = api.put("/audiences/x", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    extra = api.post("/audiences/preview", json={"definition": {"parent": "people"}, "colour": "blue"})
    assert extra.status_code == 400 and "colour: unknown field" in extra.json()["message"]
    over = api.post("/audiences/preview", json={"definition": {"parent": "people"}, "sample": -1})
    assert over.status_code == 400 and "sample" in over.json()["message"]
    other = api.get("/audiences/overlap", params={"a": "vip", "b": "nope"})
    assert other.status_code == 404 and "nope" in other.json()["message"]
    assert path.read_text() == before
