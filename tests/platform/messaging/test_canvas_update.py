"""``PUT /canvases/{id}``: a draft's journey is replaced whole, or nothing changes; an active Canvas stays as it is."""

from __future__ import annotations

import httpx

from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.messaging.helpers import add_cohort, add_users, auth, create_segment
from tests.support import Tenant


def test_only_a_draft_changes_and_only_when_valid(api: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    add_cohort(runtime, tenant, "all", add_users(runtime, tenant.workspace_id, [{"external_id": "cv-1"}]))
    segment = create_segment(
        api, tenant, "All", {"type": "partner_cohort", "partner": tenant.partner, "cohort_id": "all"}
    )
    body = {"name": "Journey", "entry_segment_id": segment, "steps": [{"id": "out", "type": "exit"}]}
    created = api.post("/canvases", json=body, headers=auth(tenant))
    assert created.status_code == 201, created.text
    canvas_id = created.json()["id"]
    looping = {
        **body,
        "steps": [
            {"id": "a", "type": "delay", "hours": 1, "next": "b"},
            {"id": "b", "type": "delay", "hours": 1, "next": "a"},
        ],
    }
    refused = api.put(f"/canvases/{canvas_id}", json=looping, headers=auth(tenant))
    assert refused.status_code == 400 and "cycle" in refused.json()["message"]
    assert api.get(f"/canvases/{canvas_id}", headers=auth(tenant)).json()["steps"] == [
        {"id": "out", "name": None, "type": "exit"}
    ]
    renamed = {**body, "name": "Journey 2", "steps": [{"id": "wait", "type": "delay", "days": 1}]}
    updated = api.put(f"/canvases/{canvas_id}", json=renamed, headers=auth(tenant))
    assert updated.status_code == 200 and updated.json()["name"] == "Journey 2", updated.text
    assert api.post(f"/canvases/{canvas_id}/start", headers=auth(tenant)).status_code == 200
    active = api.put(f"/canvases/{canvas_id}", json=body, headers=auth(tenant))
    assert active.status_code == 400 and "only a draft can be edited" in active.json()["message"]
