"""End to end with the platform's own write paths: users, attributes, events and purchases recorded through
``POST /users/track``, a cohort imported through the partner API, then segments over all of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.platform.segments.seed import auth, import_cohort
from tests.support import Tenant


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_segments_over_tracked_users(client: httpx.Client, tenant: Tenant) -> None:
    headers = auth(tenant)
    r = client.post(
        "/users/track",
        headers=headers,
        json={
            "attributes": [
                {"external_id": "t1", "country": "fr", "email": "t1@example.com", "plan": "pro", "visits": 12,
                 "renewal": _iso(timedelta(days=2)), "tags": ["beta", "early"]},
                {"external_id": "t2", "country": "FR", "email": "t2@example.com", "email_subscribe": "unsubscribed",
                 "plan": "free", "visits": 3},
                {"external_id": "t3", "country": "DE", "email": "t3@example.com", "plan": "pro", "visits": 40},
            ],
            "events": [
                {"external_id": "t1", "name": "checkout", "time": _iso(timedelta(days=1))},
                {"external_id": "t1", "name": "checkout", "time": _iso(timedelta(days=2))},
                {"external_id": "t2", "name": "checkout", "time": _iso(timedelta(days=40))},
            ],
            "purchases": [
                {"external_id": "t3", "product_id": "annual", "currency": "EUR", "price": 99.0,
                 "time": _iso(timedelta(days=3))},
            ],
        },
    )  # fmt: skip
    assert r.status_code == 201, r.text
    import_cohort(client, tenant, "tracked", "Tracked", ["t1", "t2", "t3"])

    def external_ids(tree: dict[str, Any]) -> set[str]:
        r = client.post("/segments", json={"name": "t", "filter": tree}, headers=headers)
        assert r.status_code == 201, r.text
        preview = client.get(f"/segments/{r.json()['id']}/preview", params={"limit": 100}, headers=headers)
        return {m["external_id"] for m in preview.json()["members"]}

    cohort = {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "tracked"}
    fr = {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"}
    assert external_ids({"type": "and", "filters": [cohort, fr]}) == {"t1", "t2"}
    assert external_ids(
        {"type": "and", "filters": [cohort, {"type": "custom_attribute", "attribute": "plan", "operator": "equals",
                                             "value": "pro"}]}
    ) == {"t1", "t3"}  # fmt: skip
    assert external_ids(
        {"type": "custom_attribute", "attribute": "visits", "operator": "greater_than", "value": 10}
    ) == {
        "t1",
        "t3",
    }
    assert external_ids({"type": "custom_attribute", "attribute": "tags", "operator": "contains", "value": "beta"}) == {
        "t1"
    }
    assert external_ids(
        {"type": "custom_attribute", "attribute": "renewal", "operator": "within_last_days", "value": 7}
    ) == {"t1"}
    assert external_ids({"type": "custom_event", "event": "checkout", "min_count": 2, "within_days": 7}) == {"t1"}
    assert external_ids({"type": "custom_event", "event": "checkout", "within_days": 30}) == {"t1"}
    assert external_ids({"type": "purchase", "product_id": "annual", "within_days": 7}) == {"t3"}
    assert external_ids({"type": "email_subscription", "state": "unsubscribed"}) == {"t2"}

    r = client.post(
        "/segments", json={"name": "fr", "filter": {"type": "and", "filters": [cohort, fr]}}, headers=headers
    )
    sized = client.get(f"/segments/{r.json()['id']}/size", headers=headers).json()
    assert (sized["total"], sized["reachable_email"], sized["reachable_webhook"]) == (2, 1, 2)
