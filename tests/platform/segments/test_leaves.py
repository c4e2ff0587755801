"""Every leaf type and operator, and the groups, evaluated by the real server on SQLite and PostgreSQL.

One small population with awkward data (a number stored as a string, an invalid date, an anonymous user,
missing values) is shared by all cases; each case saves a segment over HTTP and reads its members back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from cohortflow.clock import utcnow
from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.segments.seed import add_events, add_purchases, add_users, auth
from tests.support import Tenant, make_tenant

NOW = utcnow()


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Population:
    tenant: Tenant
    ids: dict[str, int]


@pytest.fixture(scope="module")
def population(runtime: PlatformRuntime) -> Population:
    tenant = make_tenant(runtime)
    ws = tenant.workspace_id
    ids = add_users(
        runtime,
        ws,
        {
            "ana": {
                "external_id": "ana",
                "email": "ana@example.com",
                "country": "FR",
                "email_subscribe": "subscribed",
                "random_bucket": 10,
                "dob": "1990-05-01",
                "created_at": NOW - timedelta(days=1),
                "custom_attributes": {
                    "plan": "gold",
                    "age": 34,
                    "vip": True,
                    "tags": ["a", "b"],
                    "nick": "anna banana",
                    "signup": ago(3),
                },
            },
            "bob": {
                "external_id": "bob",
                "email": "bob@example.com",
                "country": "DE",
                "email_subscribe": "unsubscribed",
                "random_bucket": 5000,
                "dob": "2001-01-01",
                "created_at": NOW - timedelta(days=100),
                "custom_attributes": {"plan": "silver", "age": 20, "vip": False, "tags": ["b"], "signup": ago(40)},
            },
            "cid": {  # anonymous; values of the "wrong" JSON type
                "country": "FR",
                "random_bucket": 9999,
                "created_at": NOW - timedelta(days=10),
                "custom_attributes": {"plan": 5, "age": "34", "tags": "a,b", "signup": "not a date"},
            },
            "dee": {
                "external_id": "dee",
                "email": "not-an-email",
                "email_subscribe": "opted_in",
                "random_bucket": 0,
                "created_at": NOW - timedelta(days=10),
                "custom_attributes": {
                    "age": 34.0,
                    "signup": "2026-02-31T00:00:00Z",
                    "vip": None,
                    "renewal": "2030-01-01T01:00:00+02:00",
                },
            },
            "eve": {
                "external_id": "eve",
                "email": "eve@example.org",
                "country": "FR",
                "random_bucket": 2500,
                "created_at": NOW - timedelta(days=10),
            },
        },
    )
    add_events(runtime, ws, ids["ana"], "played", [NOW - timedelta(days=d) for d in (1, 2, 3)])
    add_events(runtime, ws, ids["bob"], "played", [NOW - timedelta(days=d) for d in (1, 60, 61, 62, 63, 64)])
    add_events(runtime, ws, ids["cid"], "played", [NOW - timedelta(days=d) for d in (5, 6)])
    add_events(runtime, ws, ids["eve"], "opened", [NOW - timedelta(days=1)])
    add_purchases(runtime, ws, ids["ana"], "sku1", [NOW - timedelta(days=2)])
    add_purchases(runtime, ws, ids["bob"], "sku2", [NOW - timedelta(days=90)])
    return Population(tenant, ids)


def ca(attribute: str, operator: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "custom_attribute", "attribute": attribute, "operator": operator}
    if value is not None:
        node["value"] = value
    return node


def sa(attribute: str, operator: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "standard_attribute", "attribute": attribute, "operator": operator}
    if value is not None:
        node["value"] = value
    return node


EVERYONE = {"ana", "bob", "cid", "dee", "eve"}

CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    # custom attributes: the stored JSON type must fit the operator
    ("ca-equals-string", ca("plan", "equals", "gold"), {"ana"}),
    ("ca-equals-number-not-string", ca("plan", "equals", 5), {"cid"}),
    ("ca-not-equals-includes-missing", ca("plan", "not_equals", "gold"), EVERYONE - {"ana"}),
    ("ca-equals-int-matches-float", ca("age", "equals", 34), {"ana", "dee"}),
    ("ca-greater-than-skips-strings", ca("age", "greater_than", 30), {"ana", "dee"}),
    ("ca-less-than", ca("age", "less_than", 30), {"bob"}),
    ("ca-equals-true", ca("vip", "equals", True), {"ana"}),
    ("ca-equals-false", ca("vip", "equals", False), {"bob"}),
    ("ca-exists", ca("plan", "exists"), {"ana", "bob", "cid"}),
    ("ca-exists-not-null", ca("vip", "exists"), {"ana", "bob"}),
    ("ca-does-not-exist", ca("plan", "does_not_exist"), {"dee", "eve"}),
    ("ca-contains-substring", ca("nick", "contains", "banana"), {"ana"}),
    ("ca-contains-array-or-string", ca("tags", "contains", "a"), {"ana", "cid"}),
    ("ca-contains-array-element", ca("tags", "contains", "b"), {"ana", "bob", "cid"}),
    ("ca-in-strings", ca("plan", "in", ["gold", "silver"]), {"ana", "bob"}),
    ("ca-in-numbers", ca("age", "in", [20, 99]), {"bob"}),
    ("ca-date-after", ca("signup", "after", ago(10)), {"ana"}),
    ("ca-date-before", ca("signup", "before", ago(10)), {"bob"}),
    ("ca-date-before-date-only", ca("signup", "before", (NOW + timedelta(days=2)).date().isoformat()), {"ana", "bob"}),
    # 2030-01-01T01:00+02:00 is 2029-12-31T23:00Z: offsets are honoured, the local date is still valid
    ("ca-date-offset-before", ca("renewal", "before", "2029-12-31T23:30:00Z"), {"dee"}),
    ("ca-date-offset-after", ca("renewal", "after", "2029-12-31T22:30:00Z"), {"dee"}),
    ("ca-date-offset-not-after", ca("renewal", "after", "2029-12-31T23:30:00Z"), set()),
    ("ca-within-last-7-days", ca("signup", "within_last_days", 7), {"ana"}),
    ("ca-within-last-60-days", ca("signup", "within_last_days", 60), {"ana", "bob"}),
    # standard attributes (profile columns)
    ("sa-country-equals", sa("country", "equals", "FR"), {"ana", "cid", "eve"}),
    ("sa-country-not-equals-includes-missing", sa("country", "not_equals", "FR"), {"bob", "dee"}),
    ("sa-country-in", sa("country", "in", ["FR", "DE"]), {"ana", "bob", "cid", "eve"}),
    ("sa-country-exists", sa("country", "exists"), EVERYONE - {"dee"}),
    ("sa-country-does-not-exist", sa("country", "does_not_exist"), {"dee"}),
    ("sa-email-contains", sa("email", "contains", "example.org"), {"eve"}),
    ("sa-dob-before", sa("dob", "before", "1995-01-01"), {"ana"}),
    ("sa-dob-after", sa("dob", "after", "1995-01-01"), {"bob"}),
    ("sa-created-within-7-days", sa("created_at", "within_last_days", 7), {"ana"}),
    ("sa-created-before", sa("created_at", "before", ago(50)), {"bob"}),
    ("sa-created-after", sa("created_at", "after", ago(50)), EVERYONE - {"bob"}),
    # identity, email
    ("identified", {"type": "identity", "state": "identified"}, EVERYONE - {"cid"}),
    ("anonymous", {"type": "identity", "state": "anonymous"}, {"cid"}),
    ("has-email", {"type": "has_email", "value": True}, EVERYONE - {"cid"}),
    ("has-no-email", {"type": "has_email", "value": False}, {"cid"}),
    ("subscribed-includes-unset", {"type": "email_subscription", "state": "subscribed"}, {"ana", "cid", "eve"}),
    ("unsubscribed", {"type": "email_subscription", "state": "unsubscribed"}, {"bob"}),
    ("opted-in", {"type": "email_subscription", "state": "opted_in"}, {"dee"}),
    # events and purchases
    ("event-once-in-7-days", {"type": "custom_event", "event": "played", "within_days": 7}, {"ana", "bob", "cid"}),
    (
        "event-2-in-7-days",
        {"type": "custom_event", "event": "played", "min_count": 2, "within_days": 7},
        {"ana", "cid"},
    ),
    ("event-3-in-7-days", {"type": "custom_event", "event": "played", "min_count": 3, "within_days": 7}, {"ana"}),
    ("event-6-ever", {"type": "custom_event", "event": "played", "min_count": 6}, {"bob"}),
    ("event-7-ever", {"type": "custom_event", "event": "played", "min_count": 7}, set()),
    ("event-other-name", {"type": "custom_event", "event": "opened"}, {"eve"}),
    ("purchase-ever", {"type": "purchase"}, {"ana", "bob"}),
    ("purchase-in-30-days", {"type": "purchase", "within_days": 30}, {"ana"}),
    ("purchase-product", {"type": "purchase", "product_id": "sku2"}, {"bob"}),
    # random bucket
    ("bucket-less-than", {"type": "random_bucket", "operator": "less_than", "value": 2500}, {"ana", "dee"}),
    ("bucket-greater-than", {"type": "random_bucket", "operator": "greater_than", "value": 2500}, {"bob", "cid"}),
    ("bucket-equals", {"type": "random_bucket", "operator": "equals", "value": 2500}, {"eve"}),
    ("bucket-not-equals", {"type": "random_bucket", "operator": "not_equals", "value": 2500}, EVERYONE - {"eve"}),
    # groups
    ("not-country", {"type": "not", "filter": sa("country", "equals", "FR")}, {"bob", "dee"}),
    ("not-number-comparison", {"type": "not", "filter": ca("age", "greater_than", 30)}, {"bob", "cid", "eve"}),
    ("not-not", {"type": "not", "filter": {"type": "not", "filter": ca("age", "greater_than", 30)}}, {"ana", "dee"}),
    (
        "and-or",
        {
            "type": "and",
            "filters": [
                {"type": "identity", "state": "identified"},
                {
                    "type": "or",
                    "filters": [ca("plan", "equals", "gold"), {"type": "email_subscription", "state": "unsubscribed"}],
                },
            ],
        },
        {"ana", "bob"},
    ),
    (
        "not-and",
        {
            "type": "not",
            "filter": {"type": "and", "filters": [sa("country", "equals", "FR"), ca("vip", "equals", True)]},
        },
        EVERYONE - {"ana"},
    ),
]


@pytest.mark.parametrize(("filter_tree", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_leaf(client: httpx.Client, population: Population, filter_tree: dict[str, Any], expected: set[str]) -> None:
    headers = auth(population.tenant)
    r = client.post("/segments", json={"name": "case", "filter": filter_tree}, headers=headers)
    assert r.status_code == 201, r.text
    segment_id = r.json()["id"]
    preview = client.get(f"/segments/{segment_id}/preview", params={"limit": 1000}, headers=headers)
    assert preview.status_code == 200, preview.text
    assert {m["first_name"] for m in preview.json()["members"]} == expected
    size = client.get(f"/segments/{segment_id}/size", headers=headers).json()
    assert size["total"] == len(expected)
    client.delete(f"/segments/{segment_id}", headers=headers)
