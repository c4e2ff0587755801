"""Test data for segments: users, cohorts, events and purchases written straight into the store.

Users are created with Core inserts so each test controls every column a filter reads (the users API
fills them from track calls; segments only read them). Cohorts go through the partner import API when
the platform serves it (:func:`import_cohort`), which is what the segment tests are about.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import insert

from cohortflow.clock import utcnow
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import user_events, user_purchases, users
from tests.support import Tenant


def add_users(runtime: PlatformRuntime, workspace_id: str, specs: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Insert one user per ``name: columns``; returns ``name: user id``. ``braze_id`` is unique per call."""
    now = utcnow()
    ids: dict[str, int] = {}
    with runtime.transaction() as conn:
        for name, columns in specs.items():
            values: dict[str, Any] = {
                "workspace_id": workspace_id,
                "braze_id": uuid.uuid4().hex[:24],
                "created_at": now,
                "updated_at": now,
                "custom_attributes": {},
                "random_bucket": 0,
                "first_name": name,
            }
            values.update(columns)
            ids[name] = int(conn.execute(insert(users).values(**values).returning(users.c.id)).scalar_one())
    return ids


def import_cohort(client: httpx.Client, tenant: Tenant, cohort_id: str, name: str, external_ids: list[str]) -> None:
    """Name a cohort and add members through the partner cohort import API, as Hightouch does."""
    r = client.post(
        f"/partners/{tenant.partner}/cohorts",
        json={**tenant.creds(), "cohort_id": cohort_id, "name": name, "created_at": utcnow().isoformat()},
    )
    assert r.status_code in (200, 201), r.text
    for start in range(0, max(len(external_ids), 1), 1000):
        r = client.post(
            f"/partners/{tenant.partner}/cohorts/users",
            json={
                **tenant.creds(),
                "cohort_id": cohort_id,
                "cohort_changes": [{"user_ids": external_ids[start : start + 1000]}],
            },
        )
        assert r.status_code in (200, 201), r.text


def remove_from_cohort(client: httpx.Client, tenant: Tenant, cohort_id: str, external_ids: list[str]) -> None:
    r = client.post(
        f"/partners/{tenant.partner}/cohorts/users",
        json={
            **tenant.creds(),
            "cohort_id": cohort_id,
            "cohort_changes": [{"user_ids": external_ids, "should_remove": True}],
        },
    )
    assert r.status_code in (200, 201), r.text


def add_events(runtime: PlatformRuntime, workspace_id: str, user_id: int, name: str, times: list[datetime]) -> None:
    with runtime.transaction() as conn:
        conn.execute(
            insert(user_events),
            [
                {"workspace_id": workspace_id, "user_id": user_id, "name": name, "time": t, "properties": {}}
                for t in times
            ],
        )


def add_purchases(
    runtime: PlatformRuntime, workspace_id: str, user_id: int, product_id: str, times: list[datetime]
) -> None:
    with runtime.transaction() as conn:
        conn.execute(
            insert(user_purchases),
            [
                {
                    "workspace_id": workspace_id,
                    "user_id": user_id,
                    "product_id": product_id,
                    "currency": "EUR",
                    "price": 9.5,
                    "quantity": 1,
                    "time": t,
                    "properties": {},
                }
                for t in times
            ],
        )


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.rest_api_key}"}
