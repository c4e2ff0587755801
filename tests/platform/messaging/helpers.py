"""Setup shortcuts: users and cohort memberships by direct SQLAlchemy Core inserts, segments over HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from sqlalchemy import insert

from cohortflow.clock import utcnow
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import users
from tests.support import Tenant, add_cohort_rows


def add_users(runtime: PlatformRuntime, workspace_id: str, specs: list[dict[str, Any]]) -> list[int]:
    """Insert users (fields of the ``users`` table); returns their ids in order."""
    now = utcnow()
    ids = []
    with runtime.transaction() as conn:
        for spec in specs:
            values = {
                "workspace_id": workspace_id,
                "braze_id": uuid.uuid4().hex[:24],
                "created_at": now,
                "updated_at": now,
                "custom_attributes": {},
                **spec,
            }
            ids.append(int(conn.execute(insert(users).values(**values).returning(users.c.id)).scalar_one()))
    return ids


def add_cohort(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str, user_ids: list[int]) -> None:
    add_cohort_rows(runtime, tenant, cohort_id, f"Cohort {cohort_id}", user_ids)


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.rest_api_key}"}


def create_segment(api: httpx.Client, tenant: Tenant, name: str, filter_tree: dict[str, Any]) -> str:
    r = api.post("/segments", json={"name": name, "filter": filter_tree}, headers=auth(tenant))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_for_send(api: httpx.Client, tenant: Tenant, campaign_id: str, send_id: int, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/campaigns/{campaign_id}/sends/{send_id}", headers=auth(tenant))
        assert r.status_code == 200, r.text
        if r.json()["status"] == "completed" or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.1)


def full_log(api: httpx.Client, tenant: Tenant, campaign_id: str, send_id: int) -> list[dict[str, Any]]:
    r = api.get(f"/campaigns/{campaign_id}/sends/{send_id}/log", params={"limit": 1000}, headers=auth(tenant))
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries
