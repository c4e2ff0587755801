"""Identity rules and the profile merge, exercised through /users/identify and /sdk/data on both databases."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import (
    cohort_members,
    user_aliases,
    user_devices,
    user_events,
    user_purchases,
    users,
)
from tests.support import ServerProcess, Tenant, add_cohort_rows


def rest(client: httpx.Client, tenant: Tenant, path: str, body: Any) -> httpx.Response:
    r = client.post(path, json=body, headers={"Authorization": f"Bearer {tenant.rest_api_key}"})
    assert r.status_code in (201, 400), r.text
    return r


def user_id(runtime: PlatformRuntime, tenant: Tenant, *, external_id: str | None = None, alias: Any = None) -> int:
    with runtime.engine.connect() as conn:
        if external_id is not None:
            query = select(users.c.id).where(
                users.c.workspace_id == tenant.workspace_id, users.c.external_id == external_id
            )
        else:
            query = select(user_aliases.c.user_id).where(
                user_aliases.c.workspace_id == tenant.workspace_id,
                user_aliases.c.alias_label == alias["alias_label"],
                user_aliases.c.alias_name == alias["alias_name"],
            )
        return int(conn.execute(query).scalar_one())


def new_cohort(runtime: PlatformRuntime, tenant: Tenant, name: str, members: list[int]) -> int:
    return add_cohort_rows(runtime, tenant, f"{name}-{uuid.uuid4().hex[:6]}", name, members)


def members_of(runtime: PlatformRuntime, cohort_pk: int) -> list[int]:
    with runtime.engine.connect() as conn:
        return sorted(
            int(u)
            for u in conn.execute(
                select(cohort_members.c.user_id).where(cohort_members.c.cohort_pk == cohort_pk)
            ).scalars()
        )


def count(runtime: PlatformRuntime, table: Any, user: int) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.user_id == user)).scalar_one())


def test_identify_merges_aliases_devices_attributes_events_and_cohorts(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    crm = {"alias_name": "anon-42", "alias_label": "crm"}
    shop_of_source = {"alias_name": "cart-9", "alias_label": "shop"}
    shop_of_target = {"alias_name": "cart-1", "alias_label": "shop"}
    rest(
        client,
        tenant,
        "/users/track",
        {
            "attributes": [
                {"external_id": "u1", "last_name": "Target", "plan": "gold"},
                {
                    "user_alias": crm,
                    "_update_existing_only": False,
                    "first_name": "Src",
                    "last_name": "Source",
                    "plan": "free",
                    "pet": "cat",
                },
            ],
            "events": [{"user_alias": crm, "name": "browsed", "time": "2024-01-01T00:00:00Z"}],
            "purchases": [
                {"user_alias": crm, "product_id": "mug", "currency": "USD", "price": 9, "time": "2024-01-02T00:00:00Z"}
            ],
        },
    )
    rest(
        client,
        tenant,
        "/users/alias/new",
        {"user_aliases": [{"external_id": "u1", **shop_of_target}]},
    )
    target = user_id(runtime, tenant, external_id="u1")
    source = user_id(runtime, tenant, alias=crm)
    now = datetime.now(UTC)
    with runtime.transaction() as conn:
        conn.execute(
            insert(user_aliases).values(
                workspace_id=tenant.workspace_id, user_id=source, created_at=now, **shop_of_source
            )
        )
        conn.execute(
            insert(user_devices).values(
                workspace_id=tenant.workspace_id,
                device_id="src-device",
                user_id=source,
                created_at=now,
                last_seen_at=now,
            )
        )
    only_source = new_cohort(runtime, tenant, "only-source", [source])
    both = new_cohort(runtime, tenant, "both", [source, target])
    only_target = new_cohort(runtime, tenant, "only-target", [target])

    r = rest(client, tenant, "/users/identify", {"aliases_to_identify": [{"external_id": "u1", "user_alias": crm}]})
    assert r.json() == {"message": "success", "aliases_processed": 1, "identified": 0, "merged": 1}

    with runtime.engine.connect() as conn:
        assert conn.execute(select(users.c.id).where(users.c.id == source)).first() is None
        row = conn.execute(select(users).where(users.c.id == target)).mappings().one()
        aliases = {
            (a.alias_label, a.alias_name)
            for a in conn.execute(select(user_aliases).where(user_aliases.c.workspace_id == tenant.workspace_id))
        }
        device_owner = conn.execute(
            select(user_devices.c.user_id).where(
                user_devices.c.workspace_id == tenant.workspace_id, user_devices.c.device_id == "src-device"
            )
        ).scalar_one()
    # Attributes the target lacked came over; the target's own values won.
    assert row["first_name"] == "Src" and row["last_name"] == "Target"
    assert row["custom_attributes"] == {"plan": "gold", "pet": "cat"}
    # The identified alias moved; for the label both had ("shop"), the target's alias won.
    assert aliases == {("crm", "anon-42"), ("shop", "cart-1")}
    assert device_owner == target
    assert count(runtime, user_events, target) == 1 and count(runtime, user_purchases, target) == 1
    assert members_of(runtime, only_source) == [target]
    assert members_of(runtime, both) == [target]
    assert members_of(runtime, only_target) == [target]

    r = rest(client, tenant, "/users/export/ids", {"user_aliases": [crm]})
    [user] = r.json()["users"]
    assert user["external_id"] == "u1"
    assert sorted(c["name"] for c in user["cohorts"]) == ["both", "only-source", "only-target"]
    assert [d["device_id"] for d in user["devices"]] == ["src-device"]


def test_identify_does_not_combine_when_the_target_has_an_alias_with_that_label(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    rest(client, tenant, "/users/track", {"attributes": [{"external_id": "u1", "first_name": "T"}]})
    rest(
        client,
        tenant,
        "/users/alias/new",
        {
            "user_aliases": [
                {"external_id": "u1", "alias_name": "mine", "alias_label": "crm"},
                {"alias_name": "other", "alias_label": "crm"},
            ]
        },
    )
    source = user_id(runtime, tenant, alias={"alias_name": "other", "alias_label": "crm"})
    r = rest(
        client,
        tenant,
        "/users/identify",
        {"aliases_to_identify": [{"external_id": "u1", "user_alias": {"alias_name": "other", "alias_label": "crm"}}]},
    )
    assert r.json()["aliases_processed"] == 0 and r.json()["merged"] == 0
    assert "not combined" in r.json()["errors"][0]["type"]
    with runtime.engine.connect() as conn:
        assert conn.execute(select(users.c.external_id).where(users.c.id == source)).scalar_one() is None


def test_sdk_merge_carries_cohort_memberships(client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime) -> None:
    rest(client, tenant, "/users/track", {"attributes": [{"external_id": "u1"}]})
    anon = client.post("/sdk/data", json={"api_key": tenant.app_key, "device_id": "phone"}).json()
    anon_id = _id_of_braze(runtime, anon["braze_id"])
    target = user_id(runtime, tenant, external_id="u1")
    cohort = new_cohort(runtime, tenant, "anonymous-visitors", [anon_id])
    r = client.post("/sdk/data", json={"api_key": tenant.app_key, "device_id": "phone", "external_id": "u1"})
    assert r.json()["merged"] is True
    assert members_of(runtime, cohort) == [target]


def _id_of_braze(runtime: PlatformRuntime, braze_id: str) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(select(users.c.id).where(users.c.braze_id == braze_id)).scalar_one())


def test_concurrent_change_user_to_one_new_external_id_ends_with_one_profile(
    server: ServerProcess, tenant: Tenant, runtime: PlatformRuntime
) -> None:
    devices = [f"device-{i}" for i in range(8)]

    def change_user(device: str) -> int:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            c.post("/sdk/data", json={"api_key": tenant.app_key, "device_id": device, "attributes": {device: 1}})
            r = c.post("/sdk/data", json={"api_key": tenant.app_key, "device_id": device, "external_id": "same-person"})
            return r.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(change_user, devices))
    assert statuses == [201] * 8
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(users).where(users.c.workspace_id == tenant.workspace_id)).mappings().all()
        owners = set(
            conn.execute(
                select(user_devices.c.user_id).where(user_devices.c.workspace_id == tenant.workspace_id)
            ).scalars()
        )
    assert len(rows) == 1 and rows[0]["external_id"] == "same-person"
    assert owners == {rows[0]["id"]}
    assert rows[0]["custom_attributes"] == {d: 1 for d in devices}


def test_concurrent_increments_are_not_lost(server: ServerProcess, tenant: Tenant) -> None:
    headers = {"Authorization": f"Bearer {tenant.rest_api_key}"}

    def bump(_: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60, headers=headers) as c:
            for _ in range(5):
                r = c.post("/users/track", json={"attributes": [{"external_id": "counter", "n": {"inc": 1}}]})
                assert r.status_code == 201, r.text

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(bump, range(6)))
    with httpx.Client(base_url=server.base_url, headers=headers) as c:
        [user] = c.post("/users/export/ids", json={"external_ids": ["counter"]}).json()["users"]
    assert user["custom_attributes"] == {"n": 30}
