"""Cohort membership export (``POST /partners/{partner}/cohorts/members``) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cohortflow.platform.cohort_export import encode_cursor
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.wire.cohort_export import CohortMembersPage, ExportMessages
from cohortflow.wire.cohort_import import Messages
from tests.platform.test_cohort_import import add_user, add_users, identify, post_users
from tests.support import Tenant, make_tenant

MEMBERS = "/partners/{}/cohorts/members"


def export(client: httpx.Client, tenant: Tenant, cohort_id: str, **fields: Any) -> httpx.Response:
    return client.post(MEMBERS.format(tenant.partner), json={**tenant.creds(), "cohort_id": cohort_id, **fields})


def page(client: httpx.Client, tenant: Tenant, cohort_id: str, **fields: Any) -> CohortMembersPage:
    r = export(client, tenant, cohort_id, **fields)
    assert r.status_code == 200, r.text
    return CohortMembersPage.model_validate(r.json())


def test_members_carry_their_identifiers_and_devices_only_when_anonymous(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    ws = tenant.workspace_id
    add_user(runtime, ws, "ext-1", aliases=[("crm-1", "crm_id"), ("1@x", "email")], devices=["dev-ident"])
    add_user(runtime, ws, None, aliases=[("crm-2", "crm_id")])  # alias-only
    add_user(runtime, ws, None, devices=["dev-b", "dev-a"])  # anonymous
    later = add_user(runtime, ws, None, devices=["dev-later"])
    r = post_users(
        client,
        tenant,
        "mix",
        {"user_ids": ["ext-1"]},
        {"aliases": [{"alias_name": "crm-2", "alias_label": "crm_id"}]},
        {"device_ids": ["dev-a", "dev-later"]},
    )
    assert r.json()["added"] == 4, r.text
    identify(runtime, later, "ext-later")  # identified after the import: its device no longer matches

    r = export(client, tenant, "mix")
    assert r.status_code == 200
    assert r.headers["X-RateLimit-Remaining"].isdigit()
    assert r.json() == {
        "message": "success",
        "cohort_id": "mix",
        "exists": True,
        "members": [
            {
                "external_id": "ext-1",
                "device_ids": [],
                "aliases": [
                    {"alias_name": "crm-1", "alias_label": "crm_id"},
                    {"alias_name": "1@x", "alias_label": "email"},
                ],
            },
            {"external_id": None, "aliases": [{"alias_name": "crm-2", "alias_label": "crm_id"}], "device_ids": []},
            {"external_id": None, "aliases": [], "device_ids": ["dev-a", "dev-b"]},
            {"external_id": "ext-later", "aliases": [], "device_ids": []},
        ],
        "next_cursor": None,
    }


def test_pagination_returns_each_member_exactly_once(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    ids = [f"p{i:05d}" for i in range(3000)]
    add_users(runtime, tenant.workspace_id, ids)
    for start in range(0, len(ids), 1000):
        assert post_users(client, tenant, "big", {"user_ids": ids[start : start + 1000]}).status_code == 201
    post_users(client, tenant, "big", {"user_ids": ids[:10], "should_remove": True})

    for limit in (137, 1000):
        seen: list[str | None] = []
        cursor: str | None = None
        pages = 0
        while True:
            got = page(client, tenant, "big", cursor=cursor, limit=limit)
            assert got.exists and len(got.members) <= limit
            seen += [m.external_id for m in got.members]
            pages += 1
            if got.next_cursor is None:
                break
            cursor = got.next_cursor
        assert sorted(seen, key=str) == ids[10:]
        assert len(seen) == len(set(seen))
        assert pages == -(-2990 // limit)

    default = page(client, tenant, "big")
    assert len(default.members) == 2990 and default.next_cursor is None


def test_an_exact_last_page_has_no_next_cursor(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    add_users(runtime, tenant.workspace_id, ["e1", "e2"])
    post_users(client, tenant, "two", {"user_ids": ["e1", "e2"]})
    first = page(client, tenant, "two", limit=1)
    assert [m.external_id for m in first.members] == ["e1"] and first.next_cursor
    second = page(client, tenant, "two", limit=1, cursor=first.next_cursor)
    assert [m.external_id for m in second.members] == ["e2"] and second.next_cursor is None
    assert page(client, tenant, "two", limit=2).next_cursor is None


def test_a_cohort_never_created_is_empty_not_an_error(client: httpx.Client, tenant: Tenant) -> None:
    assert export(client, tenant, "never").json() == {
        "message": "success",
        "cohort_id": "never",
        "exists": False,
        "members": [],
        "next_cursor": None,
    }


def test_wrong_keys_get_the_contract_messages(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    other = make_tenant(runtime)
    cases = [
        ({"partner_api_key": "cfpartner_nope"}, Messages.INVALID_PARTNER_API_KEY),
        ({"partner_api_key": other.partner_api_key}, Messages.UNAUTHORIZED),
        ({"client_secret": "cfdik_nope"}, Messages.INVALID_CLIENT_SECRET),
        ({"client_secret": other.client_secret}, None),
    ]
    for override, message in cases:
        body = {**tenant.creds(), "cohort_id": "c", **override}
        r = client.post(MEMBERS.format(tenant.partner), json=body)
        assert r.status_code == 401
        if message is not None:
            assert r.json() == {"message": message}
        else:
            assert r.json()["message"].startswith("Partner not enabled for client with client secret: ")
    # Another workspace's cohort is invisible: the client secret selects the workspace.
    add_users(runtime, other.workspace_id, ["o1"])
    client.post(MEMBERS.format(other.partner), json={**other.creds(), "cohort_id": "x"})
    assert page(client, tenant, "x").exists is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 0}, ExportMessages.LIMIT_INVALID),
        ({"limit": 10_001}, ExportMessages.LIMIT_INVALID),
        ({"limit": "10"}, ExportMessages.LIMIT_INVALID),
        ({"limit": True}, ExportMessages.LIMIT_INVALID),
        ({"limit": 2.5}, ExportMessages.LIMIT_INVALID),
        ({"cursor": "garbage!"}, ExportMessages.CURSOR_INVALID),
        ({"cursor": 5}, ExportMessages.CURSOR_INVALID),
        ({"cursor": ""}, ExportMessages.CURSOR_INVALID),
        # A well-formed cursor whose user id is past a BIGINT (it used to reach the driver: a 500).
        ({"cursor": encode_cursor(2**63)}, ExportMessages.CURSOR_INVALID),
        ({"cohort_id": ""}, Messages.COHORT_ID_INVALID),
        ({"cohort_id": 7}, Messages.COHORT_ID_INVALID),
        ({"offset": 3}, "Unknown field(s) in request body: offset"),
    ],
    ids=[
        "limit-0",
        "limit-big",
        "limit-string",
        "limit-bool",
        "limit-float",
        "cursor-garbage",
        "cursor-number",
        "cursor-empty",
        "cursor-past-bigint",
        "cohort-empty",
        "cohort-number",
        "unknown-field",
    ],
)
def test_bad_fields_are_400(client: httpx.Client, tenant: Tenant, fields: dict[str, Any], message: str) -> None:
    r = client.post(MEMBERS.format(tenant.partner), json={**tenant.creds(), "cohort_id": "c", **fields})
    assert (r.status_code, r.json()) == (400, {"message": message})


def test_listed_in_the_openapi_document(client: httpx.Client) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/partners/{partner}/cohorts/members"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"partner_api_key", "client_secret", "cohort_id", "cursor", "limit"}
    assert schema["additionalProperties"] is False
    assert "200" in operation["responses"] and "401" in operation["responses"]
