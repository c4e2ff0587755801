"""The users API (/users/track, identify, alias/new, delete, export/ids) through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cohortflow.clock import as_utc
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import (
    cohort_members,
    user_aliases,
    user_events,
    user_purchases,
    users,
)
from tests.support import Tenant, add_cohort_rows, make_tenant


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.rest_api_key}"}


def post(client: httpx.Client, tenant: Tenant, path: str, body: Any) -> httpx.Response:
    return client.post(path, json=body, headers=auth(tenant))


def export_one(client: httpx.Client, tenant: Tenant, **ids: Any) -> dict[str, Any]:
    r = post(client, tenant, "/users/export/ids", ids)
    assert r.status_code == 201, r.text
    found = r.json()["users"]
    assert len(found) == 1, r.json()
    return dict(found[0])


def user_count(runtime: PlatformRuntime, tenant: Tenant) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(users).where(users.c.workspace_id == tenant.workspace_id)
            ).scalar_one()
        )


def add_cohort(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str, name: str, user_ids: list[int]) -> int:
    """A cohort with members, written directly (the cohort import API is tested elsewhere)."""
    return add_cohort_rows(runtime, tenant, cohort_id, name, user_ids)


def user_id_of(runtime: PlatformRuntime, tenant: Tenant, external_id: str) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                select(users.c.id).where(
                    users.c.workspace_id == tenant.workspace_id, users.c.external_id == external_id
                )
            ).scalar_one()
        )


# ----------------------------------------------------------------------------------------------------- /users/track


def test_track_creates_users_with_standard_and_custom_attributes(client: httpx.Client, tenant: Tenant) -> None:
    r = post(
        client,
        tenant,
        "/users/track",
        {
            "attributes": [
                {
                    "external_id": "u1",
                    "first_name": "Jon",
                    "last_name": "Snow",
                    "email": "jon@example.com",
                    "phone": "+15043277269",
                    "country": "us",
                    "home_city": "Winterfell",
                    "language": "en",
                    "gender": "m",
                    "dob": "1980-12-21",
                    "time_zone": "America/New_York",
                    "email_subscribe": "opted_in",
                    "push_subscribe": "unsubscribed",
                    "plan": "gold",
                    "score": 4.5,
                    "vip": True,
                    "tags": ["a", "b", "a"],
                    "address": {"city": "Paris", "zip": "75001"},
                }
            ]
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"message": "success", "attributes_processed": 1}
    user = export_one(client, tenant, external_ids=["u1"])
    assert re.fullmatch(r"[0-9a-f]{24}", user["braze_id"])
    assert 0 <= user["random_bucket"] <= 9999
    assert user["external_id"] == "u1"
    assert user["first_name"] == "Jon" and user["last_name"] == "Snow"
    assert user["email"] == "jon@example.com" and user["phone"] == "+15043277269"
    assert user["country"] == "US" and user["gender"] == "M" and user["dob"] == "1980-12-21"
    assert user["time_zone"] == "America/New_York" and user["language"] == "en" and user["home_city"] == "Winterfell"
    assert user["email_subscribe"] == "opted_in" and user["push_subscribe"] == "unsubscribed"
    assert user["custom_attributes"] == {
        "plan": "gold",
        "score": 4.5,
        "vip": True,
        "tags": ["a", "b"],
        "address": {"city": "Paris", "zip": "75001"},
    }


def test_track_null_removes_attributes(client: httpx.Client, tenant: Tenant) -> None:
    body = {
        "attributes": [{"external_id": "u1", "first_name": "Jon", "email": "j@example.com", "plan": "gold", "x": 1}]
    }
    assert post(client, tenant, "/users/track", body).status_code == 201
    r = post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1", "first_name": None, "plan": None}]})
    assert r.status_code == 201, r.text
    user = export_one(client, tenant, external_ids=["u1"])
    assert "first_name" not in user
    assert user["email"] == "j@example.com"
    assert user["custom_attributes"] == {"x": 1}


def test_track_custom_attribute_operations(client: httpx.Client, tenant: Tenant) -> None:
    first = {"external_id": "u1", "visits": {"inc": 2}, "colors": ["red", "blue"], "fruits": {"add": ["apple"]}}
    assert post(client, tenant, "/users/track", {"attributes": [first]}).status_code == 201
    second = [
        {"external_id": "u1", "visits": {"inc": 3}, "colors": {"add": ["red", "green"]}},
        {"external_id": "u1", "visits": {"inc": -1}, "colors": {"remove": ["blue"]}, "fruits": {"add": ["pear"]}},
    ]
    r = post(client, tenant, "/users/track", {"attributes": second})
    assert r.status_code == 201, r.text
    assert r.json()["attributes_processed"] == 2
    custom = export_one(client, tenant, external_ids=["u1"])["custom_attributes"]
    # An element already present moves to the end of the array (Braze).
    assert custom == {"visits": 4, "colors": ["red", "green"], "fruits": ["apple", "pear"]}


def test_track_inc_on_a_non_integer_rejects_the_whole_request(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    assert (
        post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1", "plan": "gold"}]}).status_code == 201
    )
    before = user_count(runtime, tenant)
    r = post(
        client,
        tenant,
        "/users/track",
        {"attributes": [{"external_id": "new-user", "x": 1}, {"external_id": "u1", "plan": {"inc": 1}}]},
    )
    assert r.status_code == 400
    assert "cannot increment custom attribute 'plan'" in r.json()["message"]
    assert user_count(runtime, tenant) == before
    assert export_one(client, tenant, external_ids=["u1"])["custom_attributes"] == {"plan": "gold"}


def test_track_events_and_purchases_are_stored(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    r = post(
        client,
        tenant,
        "/users/track",
        {
            "events": [
                {
                    "external_id": "u1",
                    "name": "rented_movie",
                    "time": "2022-12-06T19:20:45+01:00",
                    "properties": {"a": 1},
                },
                {"external_id": "u1", "name": "rented_movie", "time": "2023-01-01T00:00:00Z"},
                {"external_id": "u1", "name": "watched", "time": "2013-07-16T19:20:30:045+0100", "app_id": "app"},
                {"external_id": "u1", "name": "future", "time": "2999-01-01T00:00:00Z"},
            ],
            "purchases": [
                {
                    "external_id": "u1",
                    "product_id": "backpack",
                    "currency": "usd",
                    "price": 40,
                    "quantity": 2,
                    "time": "2017-05-12T18:47:12Z",
                    "properties": {"color": "red"},
                },
                {
                    "external_id": "u1",
                    "product_id": "pen",
                    "currency": "EUR",
                    "price": 2.5,
                    "time": "2017-05-13T00:00:00Z",
                },
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"message": "success", "events_processed": 4, "purchases_processed": 2}
    uid = user_id_of(runtime, tenant, "u1")
    with runtime.engine.connect() as conn:
        events = conn.execute(select(user_events).where(user_events.c.user_id == uid).order_by(user_events.c.id)).all()
        buys = conn.execute(
            select(user_purchases).where(user_purchases.c.user_id == uid).order_by(user_purchases.c.id)
        ).all()
    assert [e.name for e in events] == ["rented_movie", "rented_movie", "watched", "future"]
    assert as_utc(events[0].time) == datetime(2022, 12, 6, 18, 20, 45, tzinfo=UTC)
    assert events[0].properties == {"a": 1} and events[1].properties == {}
    assert as_utc(events[2].time) == datetime(2013, 7, 16, 18, 20, 30, 45000, tzinfo=UTC)
    assert as_utc(events[3].time).year < 2999  # a future time is recorded as the time of the request
    assert [(b.product_id, b.currency, b.price, b.quantity) for b in buys] == [
        ("backpack", "USD", 40.0, 2),
        ("pen", "EUR", 2.5, 1),
    ]
    assert buys[0].properties == {"color": "red"}
    user = export_one(client, tenant, external_ids=["u1"])
    summary = {e["name"]: e["count"] for e in user["custom_events"]}
    assert summary == {"rented_movie": 2, "watched": 1, "future": 1}
    assert {p["name"]: p["count"] for p in user["purchases"]} == {"backpack": 1, "pen": 1}
    assert user["total_revenue"] == pytest.approx(82.5)


@pytest.mark.parametrize("array", ["attributes", "events", "purchases"])
def test_track_allows_75_objects_per_array_and_rejects_76(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime, array: str
) -> None:
    def obj(i: int) -> dict[str, Any]:
        base: dict[str, Any] = {"external_id": f"u{i}"}
        if array == "events":
            base.update(name="e", time="2024-01-01T00:00:00Z")
        elif array == "purchases":
            base.update(product_id="p", currency="USD", price=1, time="2024-01-01T00:00:00Z")
        else:
            base.update(first_name="n")
        return base

    r = post(client, tenant, "/users/track", {array: [obj(i) for i in range(76)]})
    assert r.status_code == 400
    assert r.json()["message"] == (
        f"Max Input Length Exceeded: {array} has 76 objects; at most 75 objects are allowed per array per request"
    )
    assert user_count(runtime, tenant) == 0
    r = post(client, tenant, "/users/track", {array: [obj(i) for i in range(75)]})
    assert r.status_code == 201, r.text
    assert r.json()[f"{array}_processed"] == 75
    assert user_count(runtime, tenant) == 75


INVALID_OBJECTS: list[tuple[str, dict[str, Any], str]] = [
    ("attributes", {"external_id": "x", "email_subscribe": "yes"}, "email_subscribe"),
    ("attributes", {"external_id": "x", "push_subscribe": "maybe"}, "push_subscribe"),
    ("attributes", {"external_id": "x", "dob": "21/12/1980"}, "dob"),
    ("attributes", {"external_id": "x", "dob": "1980-02-30"}, "dob"),
    ("attributes", {"external_id": "x", "email": "not-an-email"}, "email"),
    ("attributes", {"external_id": "x", "gender": "X"}, "gender"),
    ("attributes", {"external_id": "x", "time_zone": "Mars/Olympus"}, "time_zone"),
    ("attributes", {"external_id": "x", "time_zone": "0" * 300}, "time_zone"),  # too long for a file name
    ("attributes", {"external_id": "x", "first_name": 12}, "first_name"),
    ("attributes", {"external_id": "x", "$bad": 1}, "'$bad'"),
    ("attributes", {"external_id": "x", "n": {"inc": 1.5}}, "'inc' takes an integer"),
    ("attributes", {"external_id": "x", "push_tokens": []}, "not supported"),
    ("attributes", {"first_name": "no identifier"}, "exactly one of external_id, user_alias or braze_id"),
    ("attributes", {"external_id": "x", "braze_id": "y"}, "exactly one of"),
    ("attributes", {"external_id": "x", "_update_existing_only": "yes"}, "_update_existing_only"),
    ("attributes", {"user_alias": {"alias_name": "a"}}, "alias_label"),
    ("events", {"external_id": "x", "name": "e"}, "time"),
    ("events", {"external_id": "x", "name": "e", "time": "yesterday"}, "ISO-8601"),
    ("events", {"external_id": "x", "name": "", "time": "2024-01-01T00:00:00Z"}, "name"),
    ("events", {"external_id": "x", "name": "e", "time": "2024-01-01T00:00:00Z", "extra": 1}, "extra"),
    ("events", {"external_id": "x", "name": "e", "time": "2024-01-01T00:00:00Z", "properties": {"$p": 1}}, "'$p'"),
    (
        "purchases",
        {"external_id": "x", "product_id": "p", "currency": "US", "price": 1, "time": "2024-01-01"},
        "currency",
    ),
    (
        "purchases",
        {"external_id": "x", "product_id": "p", "currency": "USD", "price": "1", "time": "2024-01-01"},
        "price",
    ),
    (
        "purchases",
        {"external_id": "x", "product_id": "p", "currency": "USD", "price": 1, "quantity": 101, "time": "2024-01-01"},
        "quantity",
    ),
    ("purchases", {"external_id": "x", "currency": "USD", "price": 1, "time": "2024-01-01"}, "product_id"),
]


@pytest.mark.parametrize(("array", "bad", "mentions"), INVALID_OBJECTS)
def test_track_invalid_object_rejects_the_whole_request(
    client: httpx.Client, runtime: PlatformRuntime, array: str, bad: dict[str, Any], mentions: str
) -> None:
    tenant = make_tenant(runtime)
    body: dict[str, Any] = {"attributes": [{"external_id": "valid", "first_name": "ok"}]}
    body.setdefault(array, []).append(bad)
    r = post(client, tenant, "/users/track", body)
    assert r.status_code == 400, r.text
    assert mentions in r.json()["message"]
    assert "Traceback" not in r.text
    assert user_count(runtime, tenant) == 0


def test_track_bodies_that_are_not_track_requests(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    for body in ({}, {"attributes": "x"}, {"attributes": [1]}, {"users": []}, [1, 2]):
        r = post(client, tenant, "/users/track", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["message"]
    r = client.post("/users/track", content=b"{not json", headers={**auth(tenant), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert user_count(runtime, tenant) == 0


def test_track_user_alias_updates_existing_only_by_default(client: httpx.Client, tenant: Tenant) -> None:
    alias = {"alias_name": "device123", "alias_label": "my_device_identifier"}
    r = post(client, tenant, "/users/track", {"attributes": [{"user_alias": alias, "first_name": "Alice"}]})
    assert r.status_code == 201
    assert r.json()["attributes_processed"] == 0
    assert r.json()["errors"][0]["input_array"] == "attributes"
    r = post(client, tenant, "/users/export/ids", {"user_aliases": [alias]})
    assert r.json()["users"] == [] and r.json()["invalid_user_aliases"] == [alias]

    r = post(
        client,
        tenant,
        "/users/track",
        {"attributes": [{"user_alias": alias, "_update_existing_only": False, "first_name": "Alice"}]},
    )
    assert r.status_code == 201 and r.json()["attributes_processed"] == 1
    r = post(
        client,
        tenant,
        "/users/track",
        {
            "attributes": [{"user_alias": alias, "last_name": "Liddell"}],
            "events": [{"user_alias": alias, "name": "opened", "time": "2024-01-01T00:00:00Z"}],
        },
    )
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 1}
    user = export_one(client, tenant, user_aliases=[alias])
    assert "external_id" not in user
    assert user["first_name"] == "Alice" and user["last_name"] == "Liddell"
    assert user["user_aliases"] == [alias]


def test_track_update_existing_only_and_braze_id(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    r = post(client, tenant, "/users/track", {"attributes": [{"external_id": "ghost", "_update_existing_only": True}]})
    assert r.status_code == 201 and r.json()["attributes_processed"] == 0
    assert user_count(runtime, tenant) == 0

    assert post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}]}).status_code == 201
    braze_id = export_one(client, tenant, external_ids=["u1"])["braze_id"]
    r = post(
        client,
        tenant,
        "/users/track",
        {"attributes": [{"braze_id": braze_id, "home_city": "Lyon"}, {"braze_id": "0" * 24, "home_city": "x"}]},
    )
    assert r.status_code == 201
    assert r.json()["attributes_processed"] == 1
    assert r.json()["errors"] == [{"type": "braze_id does not exist", "input_array": "attributes", "index": 1}]
    assert export_one(client, tenant, braze_id=braze_id)["home_city"] == "Lyon"
    assert user_count(runtime, tenant) == 1


def test_track_attributes_create_the_user_events_then_name(client: httpx.Client, tenant: Tenant) -> None:
    r = post(
        client,
        tenant,
        "/users/track",
        {
            "events": [
                {"external_id": "u9", "name": "signup", "time": "2024-01-01T00:00:00Z", "_update_existing_only": True}
            ],
            "attributes": [{"external_id": "u9", "first_name": "Nine"}],
        },
    )
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 1}


# ------------------------------------------------------------------------------------------------- authentication


ENDPOINTS = ["/users/track", "/users/identify", "/users/alias/new", "/users/delete", "/users/export/ids"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_users_endpoint_needs_a_rest_api_key(client: httpx.Client, tenant: Tenant, path: str) -> None:
    r = client.post(path, json={})
    assert r.status_code == 401
    assert r.json()["message"].startswith("Invalid API key")
    r = client.post(path, json={}, headers={"Authorization": "Bearer cfrest_not-a-key"})
    assert r.status_code == 401
    # An app key or a data import key is not a REST API key.
    for other in (tenant.app_key, tenant.client_secret):
        assert client.post(path, json={}, headers={"Authorization": f"Bearer {other}"}).status_code == 401


def test_a_workspace_key_never_reads_or_changes_another_workspace(
    client: httpx.Client, runtime: PlatformRuntime
) -> None:
    w1, w2 = make_tenant(runtime), make_tenant(runtime)
    alias = {"alias_name": "shared", "alias_label": "crm"}
    assert (
        post(client, w1, "/users/track", {"attributes": [{"external_id": "u1", "first_name": "One"}]}).status_code
        == 201
    )
    assert post(client, w1, "/users/alias/new", {"user_aliases": [{"external_id": "u1", **alias}]}).status_code == 201
    braze_id = export_one(client, w1, external_ids=["u1"])["braze_id"]

    r = post(client, w2, "/users/export/ids", {"external_ids": ["u1"], "braze_id": braze_id, "user_aliases": [alias]})
    assert r.json()["users"] == []
    assert r.json()["invalid_user_ids"] == ["u1", braze_id]
    r = post(client, w2, "/users/delete", {"external_ids": ["u1"], "braze_ids": [braze_id], "user_aliases": [alias]})
    assert r.json()["deleted"] == 0
    r = post(client, w2, "/users/track", {"attributes": [{"braze_id": braze_id, "first_name": "Hacked"}]})
    assert r.json()["attributes_processed"] == 0
    r = post(client, w2, "/users/identify", {"aliases_to_identify": [{"external_id": "evil", "user_alias": alias}]})
    assert r.json()["aliases_processed"] == 0
    # The same external id and alias in W2 are W2's own users.
    assert (
        post(client, w2, "/users/track", {"attributes": [{"external_id": "u1", "first_name": "Two"}]}).status_code
        == 201
    )
    assert post(client, w2, "/users/alias/new", {"user_aliases": [{"external_id": "u1", **alias}]}).status_code == 201

    mine = export_one(client, w1, external_ids=["u1"])
    assert mine["braze_id"] == braze_id and mine["first_name"] == "One" and mine["user_aliases"] == [alias]
    theirs = export_one(client, w2, external_ids=["u1"])
    assert theirs["braze_id"] != braze_id and theirs["first_name"] == "Two"


# -------------------------------------------------------------------------------------------------- /users/alias/new


def test_alias_new_adds_aliases_and_creates_alias_only_users(client: httpx.Client, tenant: Tenant) -> None:
    assert post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}]}).status_code == 201
    r = post(
        client,
        tenant,
        "/users/alias/new",
        {
            "user_aliases": [
                {"external_id": "u1", "alias_name": "jon@crm", "alias_label": "crm"},
                {"external_id": "u1", "alias_name": "123", "alias_label": "shop"},
                {"alias_name": "anon-1", "alias_label": "crm"},
            ]
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"message": "success", "aliases_processed": 3, "users_created": 1}
    user = export_one(client, tenant, external_ids=["u1"])
    assert user["user_aliases"] == [
        {"alias_name": "jon@crm", "alias_label": "crm"},
        {"alias_name": "123", "alias_label": "shop"},
    ]
    alias_only = export_one(client, tenant, user_aliases=[{"alias_name": "anon-1", "alias_label": "crm"}])
    assert "external_id" not in alias_only
    # Adding an alias the user already has is harmless (a retried request).
    r = post(
        client,
        tenant,
        "/users/alias/new",
        {"user_aliases": [{"external_id": "u1", "alias_name": "123", "alias_label": "shop"}]},
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("item", "mentions"),
    [
        ({"external_id": "u2", "alias_name": "jon@crm", "alias_label": "crm"}, "already belongs to another user"),
        ({"external_id": "u1", "alias_name": "other", "alias_label": "crm"}, "one alias name per label"),
        ({"external_id": "nobody", "alias_name": "n", "alias_label": "l"}, "no user has external_id 'nobody'"),
        ({"alias_name": "jon@crm", "alias_label": "crm"}, "already exists"),
        ({"external_id": "u1", "alias_name": "", "alias_label": "l"}, "alias_name"),
        ({"external_id": "u1", "alias_name": "n"}, "alias_label"),
        ({"external_id": "u1", "alias_name": "n", "alias_label": "l", "extra": 1}, "extra"),
    ],
)
def test_alias_new_conflicts_reject_the_whole_request(
    client: httpx.Client, runtime: PlatformRuntime, item: dict[str, Any], mentions: str
) -> None:
    tenant = make_tenant(runtime)
    post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}, {"external_id": "u2"}]})
    post(
        client,
        tenant,
        "/users/alias/new",
        {"user_aliases": [{"external_id": "u1", "alias_name": "jon@crm", "alias_label": "crm"}]},
    )
    r = post(
        client,
        tenant,
        "/users/alias/new",
        {
            "user_aliases": [
                {"external_id": "u2", "alias_name": "fine", "alias_label": "fine"},
                {"alias_name": "new", "alias_label": "x"},
                item,
            ]
        },
    )
    assert r.status_code == 400, r.text
    assert mentions in r.json()["message"]
    # The valid objects before the bad one were not applied either.
    assert "user_aliases" not in export_one(client, tenant, external_ids=["u2"])
    assert user_count(runtime, tenant) == 2


def test_alias_new_and_identify_allow_50_and_reject_51(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    many = [{"alias_name": f"n{i}", "alias_label": "l"} for i in range(51)]
    r = post(client, tenant, "/users/alias/new", {"user_aliases": many})
    assert r.status_code == 400
    assert r.json()["message"].startswith("The max number of external_ids and aliases per request was exceeded")
    assert user_count(runtime, tenant) == 0
    assert post(client, tenant, "/users/alias/new", {"user_aliases": many[:50]}).status_code == 201
    assert user_count(runtime, tenant) == 50

    items = [{"external_id": f"e{i}", "user_alias": a} for i, a in enumerate(many)]
    r = post(client, tenant, "/users/identify", {"aliases_to_identify": items})
    assert r.status_code == 400
    assert r.json()["message"].startswith("The max number of external_ids and aliases per request was exceeded")
    r = post(client, tenant, "/users/identify", {"aliases_to_identify": items[:50]})
    assert r.status_code == 201
    assert r.json()["identified"] == 50


# ---------------------------------------------------------------------------------------------------- /users/identify


def test_identify_gives_an_alias_only_profile_an_external_id(client: httpx.Client, tenant: Tenant) -> None:
    alias = {"alias_name": "anon", "alias_label": "crm"}
    post(client, tenant, "/users/alias/new", {"user_aliases": [alias]})
    before = export_one(client, tenant, user_aliases=[alias])
    body = {"aliases_to_identify": [{"external_id": "u1", "user_alias": alias}]}
    r = post(client, tenant, "/users/identify", body)
    assert r.status_code == 201
    assert r.json() == {"message": "success", "aliases_processed": 1, "identified": 1, "merged": 0}
    after = export_one(client, tenant, external_ids=["u1"])
    assert after["braze_id"] == before["braze_id"] and after["user_aliases"] == [alias]
    # A retry changes nothing and is not an error.
    r = post(client, tenant, "/users/identify", body)
    assert r.json() == {"message": "success", "aliases_processed": 1, "identified": 0, "merged": 0}


def test_identify_skips_unknown_and_already_identified_aliases(client: httpx.Client, tenant: Tenant) -> None:
    post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}]})
    post(
        client,
        tenant,
        "/users/alias/new",
        {"user_aliases": [{"external_id": "u1", "alias_name": "a", "alias_label": "l"}]},
    )
    r = post(
        client,
        tenant,
        "/users/identify",
        {
            "aliases_to_identify": [
                {"external_id": "u2", "user_alias": {"alias_name": "missing", "alias_label": "l"}},
                {"external_id": "u2", "user_alias": {"alias_name": "a", "alias_label": "l"}},
            ]
        },
    )
    assert r.status_code == 201
    assert r.json()["aliases_processed"] == 0
    assert [e["index"] for e in r.json()["errors"]] == [0, 1]
    r = post(client, tenant, "/users/export/ids", {"external_ids": ["u2"]})
    assert r.json()["invalid_user_ids"] == ["u2"]


def test_identify_validation(client: httpx.Client, tenant: Tenant) -> None:
    for body in (
        {},
        {"aliases_to_identify": [{"external_id": "u1"}]},
        {"aliases_to_identify": [{"external_id": "", "user_alias": {"alias_name": "a", "alias_label": "l"}}]},
        {"aliases_to_identify": [{"external_id": "u1", "user_alias": {"alias_name": "a", "alias_label": "l"}, "x": 1}]},
    ):
        r = post(client, tenant, "/users/identify", body)
        assert r.status_code == 400, (body, r.text)


# ------------------------------------------------------------------------------------------------------ /users/delete


def test_delete_by_every_identifier_and_cascade(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    alias = {"alias_name": "a", "alias_label": "l"}
    post(client, tenant, "/users/track", {"attributes": [{"external_id": f"u{i}"} for i in range(4)]})
    post(client, tenant, "/users/alias/new", {"user_aliases": [{"external_id": "u1", **alias}]})
    post(
        client,
        tenant,
        "/users/track",
        {"events": [{"external_id": "u0", "name": "e", "time": "2024-01-01T00:00:00Z"}]},
    )
    braze_id = export_one(client, tenant, external_ids=["u2"])["braze_id"]
    ids = [user_id_of(runtime, tenant, f"u{i}") for i in range(4)]
    add_cohort(runtime, tenant, "c1", "Cohort 1", ids)

    r = post(
        client,
        tenant,
        "/users/delete",
        {"external_ids": ["u0", "nobody"], "user_aliases": [alias], "braze_ids": [braze_id]},
    )
    assert r.status_code == 201
    assert r.json() == {"message": "success", "deleted": 3}
    r = post(client, tenant, "/users/export/ids", {"external_ids": ["u0", "u1", "u2", "u3"]})
    assert [u["external_id"] for u in r.json()["users"]] == ["u3"]
    with runtime.engine.connect() as conn:
        members = set(conn.execute(select(cohort_members.c.user_id).where(cohort_members.c.user_id.in_(ids))).scalars())
        assert members == {ids[3]}
        assert (
            conn.execute(
                select(func.count()).select_from(user_events).where(user_events.c.user_id == ids[0])
            ).scalar_one()
            == 0
        )
        assert (
            conn.execute(
                select(func.count()).select_from(user_aliases).where(user_aliases.c.user_id == ids[1])
            ).scalar_one()
            == 0
        )


def test_delete_limits(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    post(client, tenant, "/users/track", {"attributes": [{"external_id": "keep"}]})
    r = post(
        client,
        tenant,
        "/users/delete",
        {"external_ids": ["keep"] + [f"x{i}" for i in range(30)], "braze_ids": [f"b{i}" for i in range(20)]},
    )
    assert r.status_code == 400
    assert r.json()["message"].startswith("The max number of ids per request was exceeded")
    assert user_count(runtime, tenant) == 1
    for body in ({}, {"external_ids": []}, {"external_ids": "keep"}, {"emails": ["a@b.c"]}):
        assert post(client, tenant, "/users/delete", body).status_code == 400
    assert user_count(runtime, tenant) == 1
    r = post(client, tenant, "/users/delete", {"external_ids": ["keep"] + [f"x{i}" for i in range(49)]})
    assert r.json()["deleted"] == 1


# -------------------------------------------------------------------------------------------------- /users/export/ids


def test_export_by_email_device_and_fields(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    post(
        client,
        tenant,
        "/users/track",
        {
            "attributes": [
                {"external_id": "u1", "email": "Same@example.com", "first_name": "A"},
                {"external_id": "u2", "email": "same@example.com", "first_name": "B", "plan": "x"},
            ]
        },
    )
    r = post(client, tenant, "/users/export/ids", {"email_address": "same@example.com"})
    assert sorted(u["external_id"] for u in r.json()["users"]) == ["u1", "u2"]
    r = post(client, tenant, "/users/export/ids", {"email_address": "none@example.com"})
    assert r.json() == {"message": "success", "users": [], "invalid_user_ids": ["none@example.com"]}

    r = post(
        client,
        tenant,
        "/users/export/ids",
        {"external_ids": ["u2"], "fields_to_export": ["first_name", "custom_attributes"]},
    )
    assert r.json()["users"] == [{"first_name": "B", "custom_attributes": {"plan": "x"}}]
    r = post(client, tenant, "/users/export/ids", {"external_ids": ["u2"], "fields_to_export": ["first_name", "apps"]})
    assert r.status_code == 400 and "'apps'" in r.json()["message"]
    r = post(client, tenant, "/users/export/ids", {"device_id": "d", "email_address": "same@example.com"})
    assert r.status_code == 400 and "only one of device_id, email_address or phone" in r.json()["message"]
    assert post(client, tenant, "/users/export/ids", {}).status_code == 400
    r = post(client, tenant, "/users/export/ids", {"external_ids": [f"x{i}" for i in range(51)]})
    assert r.status_code == 400 and r.json()["message"].startswith("The max number of external_ids and aliases")
    r = post(client, tenant, "/users/export/ids", {"device_id": "unknown-device"})
    assert r.json()["invalid_user_ids"] == ["unknown-device"]


def test_export_lists_cohorts_the_user_belongs_to(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    post(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}, {"external_id": "u2"}]})
    u1, u2 = user_id_of(runtime, tenant, "u1"), user_id_of(runtime, tenant, "u2")
    suffix = uuid.uuid4().hex[:6]
    add_cohort(runtime, tenant, f"b-{suffix}", "Big spenders", [u1, u2])
    add_cohort(runtime, tenant, f"a-{suffix}", "Churn risk", [u1])
    user = export_one(client, tenant, external_ids=["u1"])
    assert user["cohorts"] == [
        {"partner": tenant.partner, "cohort_id": f"a-{suffix}", "name": "Churn risk"},
        {"partner": tenant.partner, "cohort_id": f"b-{suffix}", "name": "Big spenders"},
    ]
    assert [c["name"] for c in export_one(client, tenant, external_ids=["u2"])["cohorts"]] == ["Big spenders"]


def test_openapi_documents_the_users_endpoints(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    for path in ENDPOINTS:
        op = doc["paths"][path]["post"]
        assert op["summary"]
        assert "requestBody" in op
        assert {"201", "400", "401"} <= set(op["responses"])
        assert "422" not in op["responses"]  # validation errors are 400, as in Braze
        assert op["security"]  # Bearer REST API key
    attributes = doc["components"]["schemas"]["AttributesObject"]["properties"]
    assert {"external_id", "user_alias", "braze_id", "_update_existing_only", "email_subscribe", "dob"} <= set(
        attributes
    )


# ------------------------------------------------------------------------------------------- arbitrary input, no 5xx

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
identifiers = st.fixed_dictionaries({"external_id": st.text(max_size=10)}) | st.fixed_dictionaries(
    {"user_alias": st.fixed_dictionaries({"alias_name": st.text(max_size=5), "alias_label": st.text(max_size=5)})}
)
track_objects = st.tuples(identifiers, st.dictionaries(st.text(max_size=12), json_values, max_size=5)).map(
    lambda pair: {**pair[1], **pair[0]}
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"attributes": st.lists(track_objects, max_size=3), "events": st.lists(track_objects, max_size=2)}
    ),
    st.fixed_dictionaries(
        {"aliases_to_identify": st.lists(st.dictionaries(st.text(max_size=12), json_values), max_size=3)}
    ),
    st.fixed_dictionaries({"user_aliases": st.lists(st.dictionaries(st.text(max_size=12), json_values), max_size=3)}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([*ENDPOINTS, "/sdk/data"]), body=bodies)
def test_arbitrary_bodies_never_cause_a_server_error(
    client: httpx.Client, tenant: Tenant, path: str, body: Any
) -> None:
    r = post(client, tenant, path, body)
    assert r.status_code < 500, (path, body, r.text)
    assert "Traceback" not in r.text
    assert isinstance(r.json()["message"], str)


@pytest.mark.parametrize("text", ["nul\u0000inside", "lone\ud800surrogate"])
def test_strings_the_databases_cannot_store_are_rejected(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime, text: str
) -> None:
    escaped = json.dumps(text)  # ASCII JSON: "\u0000" and "\ud800" escapes, as a client would send them
    raw = '{"attributes": [{"external_id": "u1", "note": ' + escaped + "}]}"
    r = client.post("/users/track", content=raw.encode(), headers={**auth(tenant), "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "strings" in r.json()["message"]
    raw = '{"api_key": "' + tenant.app_key + '", "device_id": ' + escaped + "}"
    r = client.post("/sdk/data", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "strings" in r.json()["message"]
    assert user_count(runtime, tenant) == 0


def test_track_objects_apply_in_request_order(client: httpx.Client, tenant: Tenant) -> None:
    r = post(
        client,
        tenant,
        "/users/track",
        {
            "attributes": [
                {"external_id": "z", "_update_existing_only": True, "first_name": "skipped"},
                {"external_id": "z", "last_name": "Created"},
                {"external_id": "z", "_update_existing_only": True, "home_city": "Applied"},
            ]
        },
    )
    assert r.json()["attributes_processed"] == 2
    assert r.json()["errors"] == [
        {
            "type": "external_id does not exist and _update_existing_only is true",
            "input_array": "attributes",
            "index": 0,
        }
    ]
    user = export_one(client, tenant, external_ids=["z"])
    assert "first_name" not in user and user["last_name"] == "Created" and user["home_city"] == "Applied"


@pytest.mark.parametrize("named_by", ["external_id", "user_alias"])
def test_concurrent_requests_creating_the_same_users_lose_no_change(
    server: Any, tenant: Tenant, runtime: PlatformRuntime, named_by: str
) -> None:
    """Eight connections create the same 75 new users (by external id, or alias-only users by alias) at once,
    each incrementing a counter and adding to a list: every user exists once and carries every request's changes
    (the loser of a creation race replays its changes on the winner's row)."""
    from concurrent.futures import ThreadPoolExecutor

    tag = uuid.uuid4().hex[:8]
    ids = [f"race-{tag}-{i}" for i in range(75)]

    def named(e: str) -> dict[str, Any]:
        if named_by == "external_id":
            return {"external_id": e}
        return {"user_alias": {"alias_label": "crm", "alias_name": e}, "_update_existing_only": False}

    def send(n: int) -> int:
        body = {
            "attributes": [
                {**named(e), "visits": {"inc": 1}, "tags": {"add": [f"r{n}"]}, "country": "FR"} for e in ids
            ],
            "events": [{**named(ids[n]), "name": "raced", "time": "2026-01-01T00:00:00Z"}],
        }
        body["events"][0].pop("_update_existing_only", None)
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            return post(c, tenant, "/users/track", body).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, range(8))) == [201] * 8
    with runtime.engine.connect() as conn:
        key = users.c.external_id if named_by == "external_id" else user_aliases.c.alias_name
        rows = conn.execute(
            select(key, users.c.custom_attributes, users.c.country)
            .select_from(users.outerjoin(user_aliases, user_aliases.c.user_id == users.c.id))
            .where(users.c.workspace_id == tenant.workspace_id, key.in_(ids))
        ).all()
        everyone = conn.execute(
            select(func.count()).select_from(users).where(users.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
        events = conn.execute(
            select(func.count()).select_from(user_events).where(user_events.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
    assert len(rows) == 75 == everyone  # no profile left behind by a lost race
    for _key, custom, country in rows:
        assert custom["visits"] == 8 and sorted(custom["tags"]) == sorted(f"r{n}" for n in range(8))
        assert country == "FR"
    assert events == 8
