"""Segments over HTTP on the real server: the cohort filter from the partner import API combined with other
filters, exact sizes and reachability, live evaluation, CRUD, the filter catalogue and bad definitions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import users
from tests.platform.segments.seed import add_users, auth, import_cohort, remove_from_cohort
from tests.support import Tenant


def cohort_leaf(tenant: Tenant, cohort_id: str, operator: str = "includes") -> dict[str, Any]:
    return {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": cohort_id, "operator": operator}


FR = {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"}


def members(client: httpx.Client, tenant: Tenant, segment_id: str) -> set[str]:
    r = client.get(f"/segments/{segment_id}/preview", params={"limit": 1000}, headers=auth(tenant))
    assert r.status_code == 200, r.text
    return {m["first_name"] for m in r.json()["members"]}


def size(client: httpx.Client, tenant: Tenant, segment_id: str) -> tuple[int, int, int]:
    r = client.get(f"/segments/{segment_id}/size", headers=auth(tenant))
    assert r.status_code == 200, r.text
    body = r.json()
    return body["total"], body["reachable_email"], body["reachable_webhook"]


def create(client: httpx.Client, tenant: Tenant, name: str, tree: dict[str, Any]) -> str:
    r = client.post("/segments", json={"name": name, "filter": tree}, headers=auth(tenant))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def audience(runtime: PlatformRuntime, client: httpx.Client, tenant: Tenant) -> dict[str, int]:
    ids = add_users(
        runtime,
        tenant.workspace_id,
        {
            "u1": {"external_id": "u1", "country": "FR", "email": "u1@example.com", "email_subscribe": "subscribed"},
            "u2": {"external_id": "u2", "country": "FR", "email": "u2@example.com", "email_subscribe": "unsubscribed"},
            "u3": {"external_id": "u3", "country": "FR"},
            "u4": {"external_id": "u4", "country": "FR", "email": "bad-address"},
            "u5": {"external_id": "u5", "country": "DE", "email": "u5@example.com"},
            "u6": {"external_id": "u6", "country": "FR", "email": "u6@example.com", "email_subscribe": "opted_in"},
            "u7": {"external_id": "u7", "email": "u7@example.com"},
            "anon": {"country": "FR", "email": "anon@example.com"},
        },
    )
    import_cohort(client, tenant, "cohort-x", "Churn risk", ["u1", "u2", "u3", "u5", "u7", "nobody"])
    import_cohort(client, tenant, "cohort-y", "VIP", ["u6"])
    return ids


def test_cohort_includes_and_country(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    segment_id = create(
        client, tenant, "X in France", {"type": "and", "filters": [cohort_leaf(tenant, "cohort-x"), FR]}
    )
    assert members(client, tenant, segment_id) == {"u1", "u2", "u3"}
    # u1 only for email (u2 unsubscribed, u3 no address); all three are identified for webhooks
    assert size(client, tenant, segment_id) == (3, 1, 3)


def test_cohort_does_not_include_and_country(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    tree = {"type": "and", "filters": [cohort_leaf(tenant, "cohort-x", "does_not_include"), FR]}
    segment_id = create(client, tenant, "France outside X", tree)
    assert members(client, tenant, segment_id) == {"u4", "u6", "anon"}
    # email: u6 (opted in) and anon (unset = subscribed), not u4's invalid address; webhook: u4 and u6
    assert size(client, tenant, segment_id) == (3, 2, 2)


def test_cohorts_combine_with_or(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    tree = {"type": "or", "filters": [cohort_leaf(tenant, "cohort-x"), cohort_leaf(tenant, "cohort-y")]}
    segment_id = create(client, tenant, "X or Y", tree)
    assert members(client, tenant, segment_id) == {"u1", "u2", "u3", "u5", "u6", "u7"}
    assert size(client, tenant, segment_id) == (6, 4, 6)


def test_membership_is_evaluated_at_call_time(
    runtime: PlatformRuntime, client: httpx.Client, tenant: Tenant, audience: dict[str, int]
) -> None:
    segment_id = create(
        client, tenant, "X in France", {"type": "and", "filters": [cohort_leaf(tenant, "cohort-x"), FR]}
    )
    assert size(client, tenant, segment_id)[0] == 3
    remove_from_cohort(client, tenant, "cohort-x", ["u2"])
    import_cohort(client, tenant, "cohort-x", "Churn risk", ["u4"])
    assert members(client, tenant, segment_id) == {"u1", "u3", "u4"}
    with runtime.transaction() as conn:
        conn.execute(update(users).where(users.c.id == audience["u1"]).values(country="DE"))
    assert members(client, tenant, segment_id) == {"u3", "u4"}
    assert size(client, tenant, segment_id) == (2, 0, 2)


def test_cohort_filter_is_scoped_to_the_workspace(
    runtime: PlatformRuntime, client: httpx.Client, tenant: Tenant, audience: dict[str, int]
) -> None:
    """Another workspace with the same partner and the same cohort id has its own members."""
    from cohortflow.platform.workspaces import create_workspace

    with runtime.transaction() as conn:
        other_ws = create_workspace(conn, "other")
        _info, key = create_import_key(conn, other_ws.id, tenant.partner)
    other = Tenant(other_ws.id, other_ws.rest_api_key.plain, other_ws.app_key.plain, tenant.partner,
                   tenant.partner_api_key, key.plain)  # fmt: skip
    add_users(runtime, other.workspace_id, {"o1": {"external_id": "u1", "country": "FR"}})
    import_cohort(client, other, "cohort-x", "Other X", ["u1"])
    tree = {"type": "and", "filters": [cohort_leaf(tenant, "cohort-x"), FR]}
    assert members(client, other, create(client, other, "theirs", tree)) == {"o1"}
    assert members(client, tenant, create(client, tenant, "ours", tree)) == {"u1", "u2", "u3"}
    # and a workspace cannot read another's segment
    mine = create(client, tenant, "mine", tree)
    assert client.get(f"/segments/{mine}", headers=auth(other)).status_code == 404
    assert client.get(f"/segments/{mine}/size", headers=auth(other)).status_code == 404


def test_filter_catalogue_lists_partner_cohorts(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    r = client.get("/segments/filters", headers=auth(tenant))
    assert r.status_code == 200, r.text
    cohort_filters = [f for f in r.json()["filters"] if f["type"] == "partner_cohort"]
    assert len(cohort_filters) == 1
    (entry,) = cohort_filters
    assert entry["partner"] == tenant.partner
    assert entry["name"] == f"{tenant.partner.capitalize()} Cohorts"
    assert entry["operators"] == ["includes", "does_not_include"]
    assert entry["cohorts"] == [
        {"cohort_id": "cohort-x", "name": "Churn risk"},
        {"cohort_id": "cohort-y", "name": "VIP"},
    ]
    types = {f["type"] for f in r.json()["filters"]}
    assert {"custom_attribute", "standard_attribute", "custom_event", "purchase", "random_bucket"} <= types


def test_crud(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    headers = auth(tenant)
    segment_id = create(client, tenant, "  First  ", cohort_leaf(tenant, "cohort-x"))
    got = client.get(f"/segments/{segment_id}", headers=headers).json()
    assert got["name"] == "First"
    assert got["filter"] == cohort_leaf(tenant, "cohort-x")
    assert [s["id"] for s in client.get("/segments", headers=headers).json()["segments"]] == [segment_id]

    r = client.put(f"/segments/{segment_id}", json={"name": "Renamed"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed"
    assert r.json()["filter"] == cohort_leaf(tenant, "cohort-x")
    assert size(client, tenant, segment_id)[0] == 5

    r = client.put(f"/segments/{segment_id}", json={"filter": cohort_leaf(tenant, "cohort-y")}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed"
    assert members(client, tenant, segment_id) == {"u6"}

    assert client.delete(f"/segments/{segment_id}", headers=headers).status_code == 204
    assert client.get(f"/segments/{segment_id}", headers=headers).status_code == 404
    assert client.delete(f"/segments/{segment_id}", headers=headers).status_code == 404
    assert client.get("/segments", headers=headers).json()["segments"] == []


def test_preview_limit(client: httpx.Client, tenant: Tenant, audience: dict[str, int]) -> None:
    segment_id = create(client, tenant, "X", cohort_leaf(tenant, "cohort-x"))
    r = client.get(f"/segments/{segment_id}/preview", params={"limit": 2}, headers=auth(tenant))
    assert [m["external_id"] for m in r.json()["members"]] == ["u1", "u2"]
    r = client.get(f"/segments/{segment_id}/preview", params={"limit": 0}, headers=auth(tenant))
    assert r.status_code == 400


def test_requires_rest_api_key(client: httpx.Client) -> None:
    assert client.get("/segments").status_code == 401
    assert client.post("/segments", json={"name": "x", "filter": {"type": "has_email"}}).status_code == 401
    r = client.get("/segments", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


BAD: list[tuple[str, Any, str]] = [
    ("unknown-type", {"type": "favourite_colour", "value": "red"}, "unknown filter type 'favourite_colour'"),
    (
        "unknown-type-nested",
        {"type": "and", "filters": [{"type": "has_email"}, {"type": "nope"}]},
        "at filters.1: unknown filter type 'nope'",
    ),
    (
        "wrong-operator-for-value",
        {"type": "custom_attribute", "attribute": "plan", "operator": "greater_than", "value": "gold"},
        "operator 'greater_than' on custom attribute 'plan' needs a number, got string 'gold'",
    ),
    (
        "wrong-operator-for-column",
        {"type": "standard_attribute", "attribute": "country", "operator": "less_than", "value": "FR"},
        "operator 'less_than' does not apply to text attribute 'country'",
    ),
    (
        "bad-date",
        {"type": "custom_attribute", "attribute": "signup", "operator": "before", "value": "yesterday"},
        "'yesterday' is not an ISO-8601 date or date-time",
    ),
    ("unknown-field", {"type": "has_email", "value": True, "colour": "red"}, "unknown field 'colour'"),
    ("empty-group", {"type": "or", "filters": []}, "at filters: List should have at least 1 item"),
    ("unknown-cohort", "UNKNOWN_COHORT", "has no cohort 'no-such-cohort'"),
    ("unknown-partner", "UNKNOWN_PARTNER", "partner 'no-such-partner' has no cohort"),
]


@pytest.mark.parametrize(("tree", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_definitions_are_rejected_and_nothing_is_saved(
    client: httpx.Client, tenant: Tenant, audience: dict[str, int], tree: Any, needle: str
) -> None:
    headers = auth(tenant)
    if tree == "UNKNOWN_COHORT":
        tree = {"type": "and", "filters": [FR, cohort_leaf(tenant, "no-such-cohort")]}
    elif tree == "UNKNOWN_PARTNER":
        tree = {"type": "partner_cohort", "partner": "no-such-partner", "cohort_id": "cohort-x"}
    existing = create(client, tenant, "keep me", FR)

    r = client.post("/segments", json={"name": "bad", "filter": tree}, headers=headers)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]

    r = client.put(f"/segments/{existing}", json={"name": "changed", "filter": tree}, headers=headers)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]

    listed = client.get("/segments", headers=headers).json()["segments"]
    assert [(s["id"], s["name"], s["filter"]) for s in listed] == [(existing, "keep me", FR)]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"filter": FR}, "name"),
        ({"name": "   ", "filter": FR}, "segment name must be a non-empty string"),
        ({"name": "x"}, "filter"),
        ({"name": "x", "filter": FR, "colour": 1}, "colour"),
        ({"name": "x", "filter": []}, "filter"),
    ],
)
def test_bad_envelopes(client: httpx.Client, tenant: Tenant, body: dict[str, Any], needle: str) -> None:
    r = client.post("/segments", json=body, headers=auth(tenant))
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert client.get("/segments", headers=auth(tenant)).json()["segments"] == []
