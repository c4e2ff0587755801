"""SDK-style device ingestion (POST /sdk/data) through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cohortflow.platform.api.sdk_lane import ingest_device_data_batch
from cohortflow.platform.errors import AuthenticationFailed, InvalidRequest
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.sdk import SdkDataRequest, SdkDataResponse
from cohortflow.platform.store.schema import user_devices, user_events, users
from tests.support import Tenant, chunked, make_tenant


def sdk(client: httpx.Client, tenant: Tenant, **body: Any) -> httpx.Response:
    return client.post("/sdk/data", json={"api_key": tenant.app_key, **body})


def export(client: httpx.Client, tenant: Tenant, **ids: Any) -> list[dict[str, Any]]:
    r = client.post("/users/export/ids", json=ids, headers={"Authorization": f"Bearer {tenant.rest_api_key}"})
    assert r.status_code == 201, r.text
    found: list[dict[str, Any]] = r.json()["users"]
    return found


def device_owner(runtime: PlatformRuntime, tenant: Tenant, device_id: str) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(users.c.id, users.c.external_id, users.c.braze_id)
            .join(user_devices, user_devices.c.user_id == users.c.id)
            .where(user_devices.c.workspace_id == tenant.workspace_id, user_devices.c.device_id == device_id)
        ).one()
    return dict(row._mapping)


def user_count(runtime: PlatformRuntime, tenant: Tenant) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(users).where(users.c.workspace_id == tenant.workspace_id)
            ).scalar_one()
        )


def test_a_new_device_creates_an_anonymous_user(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    r = sdk(
        client,
        tenant,
        device_id="dev-1",
        attributes={"first_name": "Anon", "favorite": "tea"},
        events=[{"name": "app_open"}, {"name": "viewed", "time": "2024-01-01T00:00:00Z", "properties": {"item": 3}}],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["external_id"] is None and body["user_created"] is True
    assert body["attributes_processed"] == 1 and body["events_processed"] == 2
    again = sdk(client, tenant, device_id="dev-1", events=[{"name": "app_open"}]).json()
    assert again["braze_id"] == body["braze_id"] and again["user_created"] is False
    [user] = export(client, tenant, device_id="dev-1")
    assert "external_id" not in user
    assert user["braze_id"] == body["braze_id"]
    assert user["first_name"] == "Anon" and user["custom_attributes"] == {"favorite": "tea"}
    assert [d["device_id"] for d in user["devices"]] == ["dev-1"]
    assert {e["name"]: e["count"] for e in user["custom_events"]} == {"app_open": 2, "viewed": 1}
    assert user_count(runtime, tenant) == 1


def test_change_user_identifies_the_anonymous_user(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    anon = sdk(client, tenant, device_id="dev-1", attributes={"first_name": "Anon"}).json()
    r = sdk(client, tenant, device_id="dev-1", external_id="u1", attributes={"last_name": "Known"})
    assert r.status_code == 201
    body = r.json()
    assert body["identified"] is True and body["merged"] is False
    assert body["braze_id"] == anon["braze_id"] and body["external_id"] == "u1"
    [user] = export(client, tenant, external_ids=["u1"])
    assert user["first_name"] == "Anon" and user["last_name"] == "Known"
    # The device id stays visible on the identified profile...
    assert [d["device_id"] for d in user["devices"]] == ["dev-1"]
    assert export(client, tenant, device_id="dev-1")[0]["external_id"] == "u1"
    # ...and its owner now has an external id, so cohort import no longer matches it by device id.
    assert device_owner(runtime, tenant, "dev-1")["external_id"] == "u1"
    # Repeating changeUser with the same id is a no-op.
    again = sdk(client, tenant, device_id="dev-1", external_id="u1").json()
    assert again["identified"] is False and again["merged"] is False and again["braze_id"] == anon["braze_id"]
    assert user_count(runtime, tenant) == 1


def test_change_user_merges_into_the_existing_profile(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    headers = {"Authorization": f"Bearer {tenant.rest_api_key}"}
    client.post(
        "/users/track",
        json={"attributes": [{"external_id": "u1", "first_name": "Known", "plan": "gold"}]},
        headers=headers,
    )
    [known] = export(client, tenant, external_ids=["u1"])
    anon = sdk(
        client,
        tenant,
        device_id="dev-1",
        attributes={"first_name": "Anon", "home_city": "Oslo", "plan": "free", "device_color": "red"},
        events=[{"name": "app_open"}],
    ).json()
    r = sdk(client, tenant, device_id="dev-1", external_id="u1")
    assert r.status_code == 201
    body = r.json()
    assert body["merged"] is True and body["identified"] is False
    assert body["braze_id"] == known["braze_id"] != anon["braze_id"]
    [user] = export(client, tenant, external_ids=["u1"])
    assert user["first_name"] == "Known" and user["home_city"] == "Oslo"
    assert user["custom_attributes"] == {"plan": "gold", "device_color": "red"}
    assert [d["device_id"] for d in user["devices"]] == ["dev-1"]
    assert {e["name"] for e in user["custom_events"]} == {"app_open"}
    r = client.post("/users/export/ids", json={"braze_id": anon["braze_id"]}, headers=headers)
    assert r.json()["invalid_user_ids"] == [anon["braze_id"]]
    assert user_count(runtime, tenant) == 1
    # Later data from the device goes to the identified profile.
    sdk(client, tenant, device_id="dev-1", events=[{"name": "purchase_screen"}])
    [user] = export(client, tenant, external_ids=["u1"])
    assert {e["name"] for e in user["custom_events"]} == {"app_open", "purchase_screen"}


def test_change_user_on_a_device_of_another_identified_user_moves_the_device(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    first = sdk(client, tenant, device_id="shared-tablet", external_id="alice", events=[{"name": "a"}]).json()
    r = sdk(client, tenant, device_id="shared-tablet", external_id="bob", events=[{"name": "b"}])
    assert r.status_code == 201
    body = r.json()
    assert body["device_moved"] is True and body["external_id"] == "bob" and body["braze_id"] != first["braze_id"]
    alice, bob = export(client, tenant, external_ids=["alice"])[0], export(client, tenant, external_ids=["bob"])[0]
    assert "devices" not in alice
    assert [d["device_id"] for d in bob["devices"]] == ["shared-tablet"]
    assert [e["name"] for e in alice["custom_events"]] == ["a"]
    assert [e["name"] for e in bob["custom_events"]] == ["b"]
    # Back to an existing user: the device moves again, no new user.
    back = sdk(client, tenant, device_id="shared-tablet", external_id="alice").json()
    assert back["braze_id"] == first["braze_id"] and back["device_moved"] is True
    assert device_owner(runtime, tenant, "shared-tablet")["external_id"] == "alice"
    assert user_count(runtime, tenant) == 2


def test_app_key_authentication_and_workspace_isolation(client: httpx.Client, runtime: PlatformRuntime) -> None:
    w1, w2 = make_tenant(runtime), make_tenant(runtime)
    assert client.post("/sdk/data", json={"device_id": "d"}).status_code == 401
    r = client.post("/sdk/data", json={"api_key": "cfapp_wrong", "device_id": "d"})
    assert r.status_code == 401 and r.json()["message"] == "Invalid app key"
    for wrong in (w1.rest_api_key, w1.client_secret):
        assert client.post("/sdk/data", json={"api_key": wrong, "device_id": "d"}).status_code == 401
    assert user_count(runtime, w1) == 0

    assert sdk(client, w1, device_id="d", external_id="u1").status_code == 201
    assert export(client, w2, device_id="d") == [] and export(client, w2, external_ids=["u1"]) == []
    # The same device id and external id in W2 are W2's own.
    b2 = sdk(client, w2, device_id="d", external_id="u1").json()
    assert b2["user_created"] is True and b2["identified"] is True
    assert export(client, w1, device_id="d")[0]["braze_id"] != b2["braze_id"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "d", "attributes": {"email_subscribe": "sometimes"}}, "email_subscribe"),
        ({"device_id": "d", "attributes": {"external_id": "sneaky"}}, "identifies a user"),
        ({"device_id": "d", "events": [{"time": "2024-01-01T00:00:00Z"}]}, "name"),
        ({"device_id": "d", "events": [{"name": "e", "time": "soon"}]}, "ISO-8601"),
        ({"device_id": "d", "events": [{"name": "e"}] * 76}, "at most 75"),
        ({"device_id": "d", "purchases": []}, "purchases"),
        ({"device_id": "d", "external_id": ""}, "external_id"),
    ],
)
def test_invalid_sdk_data_changes_nothing(
    client: httpx.Client, runtime: PlatformRuntime, body: dict[str, Any], mentions: str
) -> None:
    tenant = make_tenant(runtime)
    r = sdk(client, tenant, **body)
    assert r.status_code == 400, r.text
    assert mentions in r.json()["message"]
    assert user_count(runtime, tenant) == 0


def test_a_failing_inc_rolls_back_the_new_device(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    sdk(client, tenant, device_id="d0", attributes={"plan": "gold"}, external_id="u1")
    r = sdk(client, tenant, device_id="d1", external_id="u1", attributes={"plan": {"inc": 1}})
    assert r.status_code == 400
    with runtime.engine.connect() as conn:
        devices = set(
            conn.execute(
                select(user_devices.c.device_id).where(user_devices.c.workspace_id == tenant.workspace_id)
            ).scalars()
        )
        events = conn.execute(
            select(func.count()).select_from(user_events).where(user_events.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
    assert devices == {"d0"} and events == 0
    assert user_count(runtime, tenant) == 1


def test_openapi_documents_the_sdk_endpoint(client: httpx.Client) -> None:
    op = client.get("/openapi.json").json()["paths"]["/sdk/data"]["post"]
    assert op["summary"] and "api_key" in op["description"]
    assert {"201", "400", "401"} <= set(op["responses"]) and "422" not in op["responses"]


def test_cohort_import_matches_the_device_only_while_its_user_is_anonymous(
    client: httpx.Client, tenant: Tenant
) -> None:
    sdk(client, tenant, device_id="anon-phone")
    sdk(client, tenant, device_id="later-known")
    sdk(client, tenant, device_id="later-known", external_id="u-known")
    r = client.post(
        f"/partners/{tenant.partner}/cohorts/users",
        json={
            **tenant.creds(),
            "cohort_id": "devices",
            "cohort_changes": [{"device_ids": ["anon-phone", "later-known"]}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["matched"] == 1 and r.json()["unmatched"] == 1
    [anon] = export(client, tenant, device_id="anon-phone")
    [known] = export(client, tenant, device_id="later-known")
    assert [c["cohort_id"] for c in anon["cohorts"]] == ["devices"]
    assert "cohorts" not in known


def test_a_batch_commits_each_request_alone_in_effect(runtime: PlatformRuntime) -> None:
    """The group commit (api/sdk_lane.py): a request of the batch that fails, for a bad value or a bad key, leaves
    nothing and changes nothing for the others; a device named twice is the same user."""
    tenant = make_tenant(runtime)
    bodies = [
        SdkDataRequest.model_validate({"api_key": tenant.app_key, **body})
        for body in (
            {"device_id": "b1", "attributes": {"plan": "gold"}, "external_id": "bu1"},
            {"device_id": "b2", "external_id": "bu1", "attributes": {"plan": {"inc": 1}}},
            {"device_id": "b3", "events": [{"name": "app_open"}]},
            {"device_id": "b4"},
            {"device_id": "b3", "external_id": "bu3"},
        )
    ]
    bodies[3] = bodies[3].model_copy(update={"api_key": "cfapp_wrong"})
    outcomes = ingest_device_data_batch(runtime, bodies)
    assert isinstance(outcomes[1], InvalidRequest) and isinstance(outcomes[3], AuthenticationFailed)
    first, third, fifth = outcomes[0], outcomes[2], outcomes[4]
    assert isinstance(first, SdkDataResponse) and first.identified
    assert isinstance(third, SdkDataResponse) and third.user_created
    assert isinstance(fifth, SdkDataResponse) and fifth.identified and fifth.braze_id == third.braze_id
    with runtime.engine.connect() as conn:
        devices = set(
            conn.execute(
                select(user_devices.c.device_id).where(user_devices.c.workspace_id == tenant.workspace_id)
            ).scalars()
        )
    assert devices == {"b1", "b3"}
    assert user_count(runtime, tenant) == 2


def test_concurrent_sdk_requests_each_get_their_own_answer(client: httpx.Client, tenant: Tenant) -> None:
    """Requests that arrive together are committed together on SQLite; each still gets its own response, and a
    bad one among them its own error."""

    def send(i: int) -> httpx.Response:
        body: dict[str, Any] = {"device_id": f"c-{i}", "external_id": f"cu-{i}"}
        if i % 5 == 0:
            body["attributes"] = {"email_subscribe": "sometimes"}
        return sdk(client, tenant, **body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(40)))
    for i, r in enumerate(responses):
        if i % 5 == 0:
            assert r.status_code == 400 and "email_subscribe" in r.json()["message"]
        else:
            assert r.status_code == 201, r.text
            assert r.json()["external_id"] == f"cu-{i}" and r.json()["device_id"] == f"c-{i}"
    assert {u["external_id"] for u in export(client, tenant, external_ids=[f"cu-{i}" for i in range(1, 5)])} == {
        f"cu-{i}" for i in range(1, 5)
    }


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b'{"device_id": ', "application/json"), (b"device_id=d", "application/x-www-form-urlencoded"), (b"", None)],
    ids=["truncated-json", "form", "empty"],
)
def test_bodies_the_lane_does_not_take_get_the_routes_answer(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime, content: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/sdk/data", content=content, headers=headers)
    assert r.status_code in (400, 401) and r.json()["message"]
    assert user_count(runtime, tenant) == 0


def test_a_batch_without_failures_commits_every_request(runtime: PlatformRuntime) -> None:
    """The group commit's first attempt (no savepoint per request) keeps every request of a batch that succeeds."""
    tenant = make_tenant(runtime)
    bodies = [
        SdkDataRequest.model_validate({"api_key": tenant.app_key, "device_id": f"ok-{i}", **extra})
        for i, extra in enumerate(({}, {"external_id": "ok-user"}, {"events": [{"name": "app_open"}]}))
    ]
    outcomes = ingest_device_data_batch(runtime, bodies)
    assert all(isinstance(o, SdkDataResponse) and o.user_created for o in outcomes)
    assert user_count(runtime, tenant) == 3


@pytest.mark.parametrize(
    "value",
    [b"18446744073709551616", b"1e400", b"NaN"],
    ids=["past-64-bits", "overflowing-float", "nan"],
)
def test_the_lane_and_the_route_answer_numbers_json_decoders_disagree_on_alike(
    client: httpx.Client, runtime: PlatformRuntime, value: bytes
) -> None:
    outcomes = []
    for lane in (True, False):
        tenant = make_tenant(runtime)
        raw = b'{"api_key": "%s", "device_id": "d-n", "attributes": {"n": %s}}' % (tenant.app_key.encode(), value)
        r = client.post(
            "/sdk/data", content=raw if lane else chunked(raw), headers={"content-type": "application/json"}
        )
        outcomes.append((r.status_code, r.json().get("message"), user_count(runtime, tenant)))
    assert outcomes[0] == outcomes[1], outcomes
