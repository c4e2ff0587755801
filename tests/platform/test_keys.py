"""Key lifecycles through the real interfaces: the key HTTP API, the admin API and the CLI, on SQLite and PostgreSQL.

REST API keys and app keys (workspace-scoped), partner API keys (rotated with two live keys), operator tokens.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from cohortflow.keys import hash_key
from cohortflow.platform.partners import authenticate_partner
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import alembic_config, make_engine
from cohortflow.wire.cohort_import import Messages
from tests.platform.test_cli import fails, ok_json
from tests.support import Tenant, fresh_database, make_tenant, open_runtime


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def list_cohorts(client: httpx.Client, partner: str, partner_api_key: str, client_secret: str) -> httpx.Response:
    body = {"partner_api_key": partner_api_key, "client_secret": client_secret}
    return client.post(f"/partners/{partner}/cohorts/list", json=body)


# --- REST API keys -----------------------------------------------------------------------------------------


def test_rest_key_create_list_rotate_and_revoke_over_http(client: httpx.Client, tenant: Tenant) -> None:
    old = tenant.rest_api_key
    listed = client.get("/api_keys", headers=bearer(old))
    assert listed.status_code == 200
    [only] = listed.json()["keys"]
    assert only["state"] == "active" and only["masked_key"].startswith("cfrest_") and only["masked_key"].endswith("…")
    assert only["last_used_at"] is not None  # this very request used it

    created = client.post("/api_keys", headers=bearer(old), json={"name": "ci"})
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith("cfrest_") and new["name"] == "ci" and new["last_used_at"] is None
    assert client.get("/segments", headers=bearer(new["key"])).status_code == 200

    keys = client.get("/api_keys", headers=bearer(new["key"]))
    assert [k["id"] for k in keys.json()["keys"]] == [only["id"], new["id"]]
    assert old not in keys.text and new["key"] not in keys.text  # listings never show a key

    # Rotation's last step: the old key revokes itself while the new one is live.
    revoked = client.post(f"/api_keys/{only['id']}/revoke", headers=bearer(old))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert client.get("/api_keys", headers=bearer(old)).json() == {"message": "Invalid API key"}
    assert client.get("/api_keys", headers=bearer(old)).status_code == 401

    last = client.post(f"/api_keys/{new['id']}/revoke", headers=bearer(new["key"]))
    assert last.status_code == 400
    assert "last live key" in last.json()["message"]
    assert client.get("/segments", headers=bearer(new["key"])).status_code == 200


def test_rest_key_api_rejects_bad_input_and_other_workspaces(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    other = make_tenant(runtime)
    other_id = client.get("/api_keys", headers=bearer(other.rest_api_key)).json()["keys"][0]["id"]
    before = client.get("/api_keys", headers=bearer(tenant.rest_api_key)).json()
    # Another workspace's key is not found here, and stays live.
    r = client.post(f"/api_keys/{other_id}/revoke", headers=bearer(tenant.rest_api_key))
    assert r.status_code == 404
    assert client.get("/api_keys", headers=bearer(other.rest_api_key)).status_code == 200
    for bad in ({"name": "x", "extra": 1}, {"name": "n" * 201}, [1]):
        r = client.post("/api_keys", headers=bearer(tenant.rest_api_key), json=bad)
        assert r.status_code == 400, r.text
    assert client.post("/api_keys/nope/revoke", headers=bearer(tenant.rest_api_key)).status_code == 400
    assert client.get("/api_keys").status_code == 401
    assert client.post("/api_keys", headers=bearer("cfrest_nope")).status_code == 401
    after = client.get("/api_keys", headers=bearer(tenant.rest_api_key)).json()
    assert [k["id"] for k in after["keys"]] == [k["id"] for k in before["keys"]]


def test_last_used_is_written_at_most_once_a_minute(client: httpx.Client, tenant: Tenant) -> None:
    first = client.get("/api_keys", headers=bearer(tenant.rest_api_key)).json()["keys"][0]["last_used_at"]
    for _ in range(3):
        client.get("/segments", headers=bearer(tenant.rest_api_key))
    assert client.get("/api_keys", headers=bearer(tenant.rest_api_key)).json()["keys"][0]["last_used_at"] == first


# --- app keys ----------------------------------------------------------------------------------------------


def test_app_key_rotation_keeps_the_old_key_until_revoked(client: httpx.Client, tenant: Tenant) -> None:
    def sdk(app_key: str) -> int:
        return client.post("/sdk/data", json={"api_key": app_key, "device_id": f"d-{uuid.uuid4().hex[:6]}"}).status_code

    created = client.post("/app_keys", headers=bearer(tenant.rest_api_key))
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith("cfapp_")
    assert sdk(tenant.app_key) == 201 and sdk(new["key"]) == 201

    keys = client.get("/app_keys", headers=bearer(tenant.rest_api_key)).json()["keys"]
    assert len(keys) == 2 and all(k["last_used_at"] for k in keys)
    r = client.post(f"/app_keys/{keys[0]['id']}/revoke", headers=bearer(tenant.rest_api_key))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert sdk(tenant.app_key) == 401 and sdk(new["key"]) == 201
    assert client.post(f"/app_keys/{keys[0]['id']}/revoke", headers=bearer(tenant.rest_api_key)).status_code == 404


# --- partner API keys and operator tokens ----------------------------------------------------------------


def test_partner_key_rotation_from_the_cli(client: httpx.Client, database_url: str, tenant: Tenant) -> None:
    p = tenant.partner
    [old] = ok_json(database_url, "partner", "keys", p)
    assert old["state"] == "active" and old["masked_key"].startswith("cfpartner_")
    new = ok_json(database_url, "partner", "rotate-key", p)
    # Two live keys during the change: both authenticate.
    for key in (tenant.partner_api_key, new["key"]):
        assert list_cohorts(client, p, key, tenant.client_secret).status_code == 200
    assert "2 live keys" in fails(database_url, "partner", "rotate-key", p)

    ok_json(database_url, "partner", "revoke-key", p, old["masked_key"])
    r = list_cohorts(client, p, tenant.partner_api_key, tenant.client_secret)
    assert (r.status_code, r.json()) == (401, {"message": Messages.INVALID_PARTNER_API_KEY})
    assert list_cohorts(client, p, new["key"], tenant.client_secret).status_code == 200
    assert "last live key" in fails(database_url, "partner", "revoke-key", p, str(new["id"]))
    keys = ok_json(database_url, "partner", "keys", p)
    assert [(k["id"], k["state"]) for k in keys] == [(old["id"], "revoked"), (new["id"], "active")]
    assert keys[1]["last_used_at"] is not None
    assert "does not exist" in fails(database_url, "partner", "rotate-key", "no-such-partner")


def test_a_rotated_key_of_another_partner_is_unauthorized(
    client: httpx.Client, database_url: str, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    other = make_tenant(runtime)
    rotated = ok_json(database_url, "partner", "rotate-key", other.partner)["key"]
    r = list_cohorts(client, tenant.partner, rotated, tenant.client_secret)
    assert (r.status_code, r.json()) == (401, {"message": Messages.UNAUTHORIZED})


def test_partner_keys_over_the_admin_api_need_an_operator_token(
    client: httpx.Client, database_url: str, tenant: Tenant
) -> None:
    token = ok_json(database_url, "operator-token", "create", "ops-bot")
    assert token["key"].startswith("cfop_") and token["name"] == "ops-bot"
    path = f"/admin/partners/{tenant.partner}/keys"
    for headers in ({}, bearer(tenant.rest_api_key), bearer(tenant.partner_api_key), bearer("cfop_nope")):
        r = client.get(path, headers=headers)
        assert r.status_code == 401 and r.json()["message"].startswith("Invalid operator token")
    auth = bearer(token["key"])
    [old] = client.get(path, headers=auth).json()["keys"]
    rotated = client.post(path, headers=auth)
    assert rotated.status_code == 201
    new = rotated.json()
    assert client.post(path, headers=auth).status_code == 400  # a third live key
    for key in (tenant.partner_api_key, new["key"]):
        assert list_cohorts(client, tenant.partner, key, tenant.client_secret).status_code == 200
    assert client.post(f"{path}/{old['id']}/revoke", headers=auth).json()["state"] == "revoked"
    assert list_cohorts(client, tenant.partner, tenant.partner_api_key, tenant.client_secret).status_code == 401
    last = client.post(f"{path}/{new['id']}/revoke", headers=auth)
    assert last.status_code == 400 and "last live key" in last.json()["message"]
    assert client.get("/admin/partners/no-such/keys", headers=auth).status_code == 404

    listed = ok_json(database_url, "operator-token", "list")
    mine = next(t for t in listed if t["id"] == token["id"])
    assert mine["last_used_at"] is not None and token["key"] not in str(listed)
    ok_json(database_url, "operator-token", "revoke", str(token["id"]))
    assert client.get(path, headers=auth).status_code == 401


# --- workspace keys from the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(("group", "prefix"), [("rest-key", "cfrest_"), ("app-key", "cfapp_")])
def test_workspace_keys_from_the_cli(database_url: str, tenant: Tenant, group: str, prefix: str) -> None:
    scope = ["-w", tenant.workspace_id]
    created = ok_json(database_url, group, "create", *scope, "--name", "laptop")
    assert created["key"].startswith(prefix) and created["name"] == "laptop"
    listed = ok_json(database_url, group, "list", *scope)
    assert [k["id"] for k in listed][-1] == created["id"] and created["key"] not in str(listed)
    revoked = ok_json(database_url, group, "revoke", *scope, created["masked_key"])
    assert revoked["state"] == "revoked"
    assert "no active" in fails(database_url, group, "revoke", *scope, str(created["id"]))
    assert "does not exist" in fails(database_url, group, "list", "-w", "ws_nope")


# --- the migration keeps existing partner keys ---------------------------------------------------------------


def test_migration_moves_existing_partner_keys(backend: str, tmp_path: Path) -> None:
    plain = "cfpartner_" + "k" * 43
    with fresh_database(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            cfg = alembic_config(engine)
            command.upgrade(cfg, "0007")
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO partners (name, display_name, api_key_hash, api_key_prefix, created_at) "
                        "VALUES ('legacy', 'Legacy', :h, 'cfpartner_kkkkkkkk', CURRENT_TIMESTAMP)"
                    ),
                    {"h": hash_key(plain)},
                )
        finally:
            engine.dispose()
        runtime = open_runtime(url)  # migrates to head
        try:
            with runtime.transaction() as conn:
                assert authenticate_partner(conn, "legacy", plain).name == "legacy"
            listed: list[dict[str, Any]] = ok_json(url, "partner", "keys", "legacy")
            assert [k["masked_key"] for k in listed] == ["cfpartner_kkkkkkkk…"]
        finally:
            runtime.close()
