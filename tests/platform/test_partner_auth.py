"""Who may import into which cohort: data import key lifecycle, partner and workspace isolation, rate limit.

Keys are created and invalidated with the ``import_keys`` domain functions (what the CLI and dashboard call);
every effect is checked through HTTP against a real server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from cohortflow.platform.import_keys import create_import_key, invalidate_import_key, list_import_keys
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from cohortflow.wire.cohort_import import Messages
from tests.platform.test_cohort_import import (
    COHORTS,
    COHORTS_USERS,
    add_user,
    members,
    name_body,
    snapshot,
    users_body,
)
from tests.support import ServerProcess, Tenant, make_tenant, start_server


def test_generated_key_works_and_invalidated_key_is_rejected_at_once(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    user = add_user(runtime, tenant.workspace_id, "k1")
    with runtime.transaction() as conn:
        info, key = create_import_key(conn, tenant.workspace_id, tenant.partner)
    creds = {"partner_api_key": tenant.partner_api_key, "client_secret": key.plain}
    body = {**creds, "cohort_id": "c", "cohort_changes": [{"user_ids": ["k1"]}]}
    assert client.post(COHORTS_USERS.format(tenant.partner), json=body).status_code == 201
    assert members(runtime, tenant, "c") == {user}

    with runtime.transaction() as conn:
        invalidate_import_key(conn, tenant.workspace_id, tenant.partner, str(info.id))
    before = snapshot(runtime, tenant.workspace_id)
    removal = {**body, "cohort_changes": [{"user_ids": ["k1"], "should_remove": True}]}
    for path, payload in [
        (COHORTS_USERS, removal),
        (COHORTS, {**creds, **name_body(tenant, "c", "x"), **creds}),
        ("/partners/{}/cohorts/list", creds),
    ]:
        r = client.post(path.format(tenant.partner), json=payload)
        assert (r.status_code, r.json()) == (401, {"message": Messages.INVALID_CLIENT_SECRET})
    assert snapshot(runtime, tenant.workspace_id) == before


def test_two_live_keys_work_together_and_rotation_keeps_the_other(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_user(runtime, tenant.workspace_id, "r1")
    with runtime.transaction() as conn:
        _second_info, second = create_import_key(conn, tenant.workspace_id, tenant.partner)
        first_info = list_import_keys(conn, tenant.workspace_id, tenant.partner)[0]
    first_creds = tenant.creds()
    second_creds = {**tenant.creds(), "client_secret": second.plain}
    for creds in (first_creds, second_creds):
        body = {**creds, "cohort_id": "rot", "cohort_changes": [{"user_ids": ["r1"]}]}
        assert client.post(COHORTS_USERS.format(tenant.partner), json=body).status_code == 201

    with runtime.transaction() as conn:
        invalidate_import_key(conn, tenant.workspace_id, tenant.partner, first_info.masked_key)
    body = {"cohort_id": "rot", "cohort_changes": []}
    assert client.post(COHORTS_USERS.format(tenant.partner), json={**first_creds, **body}).status_code == 401
    assert client.post(COHORTS_USERS.format(tenant.partner), json={**second_creds, **body}).status_code == 201


def test_a_key_for_partner_a_cannot_import_as_partner_b(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    partner_b = make_tenant(runtime)
    add_user(runtime, tenant.workspace_id, "ab")
    before_a = snapshot(runtime, tenant.workspace_id)
    before_b = snapshot(runtime, partner_b.workspace_id)
    change = {"cohort_id": "c", "cohort_changes": [{"user_ids": ["ab"]}]}

    # B's path with B's partner key but A's data import key: A's key does not enable partner B.
    r = client.post(
        COHORTS_USERS.format(partner_b.partner),
        json={**change, "partner_api_key": partner_b.partner_api_key, "client_secret": tenant.client_secret},
    )
    assert r.status_code == 401
    assert r.json()["message"].startswith("Partner not enabled for client with client secret: ")
    # B's path with A's keys: A's partner key is not B's.
    r = client.post(COHORTS_USERS.format(partner_b.partner), json={**change, **tenant.creds()})
    assert (r.status_code, r.json()) == (401, {"message": Messages.UNAUTHORIZED})
    # A path that names no partner at all.
    r = client.post(COHORTS_USERS.format("no-such-partner"), json={**change, **tenant.creds()})
    assert (r.status_code, r.json()) == (401, {"message": Messages.UNAUTHORIZED})

    assert snapshot(runtime, tenant.workspace_id) == before_a
    assert snapshot(runtime, partner_b.workspace_id) == before_b


def test_a_key_of_workspace_w1_never_reads_or_changes_w2(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    w1 = tenant
    # W2: another workspace with the same partner enabled, and the same identifiers and cohort id.
    with runtime.transaction() as conn:
        ws2 = create_workspace(conn, "w2")
        _info, w2_key = create_import_key(conn, ws2.id, w1.partner)
    w2 = Tenant(ws2.id, "", "", w1.partner, w1.partner_api_key, w2_key.plain)
    w1_user = add_user(runtime, w1.workspace_id, "shared-ext", aliases=[("shared", "crm")], devices=["shared-dev"])
    w2_user = add_user(runtime, w2.workspace_id, "shared-ext", aliases=[("shared", "crm")])
    add_user(runtime, w2.workspace_id, None, devices=["w2-only-dev"])
    r = client.post(COHORTS_USERS.format(w2.partner), json=users_body(w2, "same-id", {"user_ids": ["shared-ext"]}))
    assert r.json()["added"] == 1
    client.post(COHORTS.format(w2.partner), json=name_body(w2, "same-id", "W2's cohort"))
    before_w2 = snapshot(runtime, w2.workspace_id)

    r = client.post(
        COHORTS_USERS.format(w1.partner),
        json=users_body(
            w1,
            "same-id",
            {
                "user_ids": ["shared-ext"],
                "aliases": [{"alias_name": "shared", "alias_label": "crm"}],
                "device_ids": ["w2-only-dev"],
            },
        ),
    )
    assert r.json()["matched"] == 2  # W1's own user, by external id and alias; W2's device is unknown here
    r = client.post(COHORTS.format(w1.partner), json=name_body(w1, "same-id", "W1's cohort"))
    assert r.status_code == 201
    r = client.post(
        COHORTS_USERS.format(w1.partner),
        json=users_body(w1, "same-id", {"user_ids": ["shared-ext"], "should_remove": True}),
    )
    assert r.json()["removed"] == 1
    listed = client.post(f"/partners/{w1.partner}/cohorts/list", json=w1.creds()).json()["cohorts"]

    assert [(c["cohort_id"], c["name"], c["size"]) for c in listed] == [("same-id", "W1's cohort", 0)]
    assert snapshot(runtime, w2.workspace_id) == before_w2
    assert members(runtime, w2, "same-id") == {w2_user}
    assert w1_user != w2_user


# ------------------------------------------------------------------------------------------------ rate limit

LIMIT = 5


@pytest.fixture(scope="module")
def limited_server(database_url: str, runtime: PlatformRuntime) -> Iterator[ServerProcess]:
    proc = start_server(database_url, extra_env={"COHORTFLOW_PLATFORM__RATE_LIMIT_PER_HOUR": str(LIMIT)})
    yield proc
    proc.stop()


def test_rate_limit_per_partner_answers_429_with_headers(
    limited_server: ServerProcess, runtime: PlatformRuntime
) -> None:
    tenant = make_tenant(runtime)
    other = make_tenant(runtime)
    add_user(runtime, tenant.workspace_id, "rl")
    with httpx.Client(base_url=limited_server.base_url, timeout=30) as client:
        remaining = []
        for _ in range(LIMIT):
            r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c", {"user_ids": ["rl"]}))
            assert r.status_code == 201
            assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
            remaining.append(int(r.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        before = snapshot(runtime, tenant.workspace_id)

        r = client.post(
            COHORTS_USERS.format(tenant.partner),
            json=users_body(tenant, "c", {"user_ids": ["rl"], "should_remove": True}),
        )
        assert r.status_code == 429
        assert r.json() == {"message": Messages.RATE_LIMITED}
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert r.headers["X-RateLimit-Remaining"] == "0"
        reset = int(r.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 2 * 3600
        assert 1 <= int(r.headers["Retry-After"]) <= 2 * 3600
        assert snapshot(runtime, tenant.workspace_id) == before
        # Every partner endpoint spends the same budget.
        r = client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "c", "n"))
        assert r.status_code == 429

        # The budget is per partner: another partner is unaffected.
        r = client.post(COHORTS_USERS.format(other.partner), json=users_body(other, "c"))
        assert r.status_code == 201
        assert r.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


def test_rate_limit_counts_only_authenticated_partners(limited_server: ServerProcess, runtime: PlatformRuntime) -> None:
    """Requests with a wrong partner key cannot spend a partner's budget (they are rejected before counting)."""
    tenant = make_tenant(runtime)
    with httpx.Client(base_url=limited_server.base_url, timeout=30) as client:
        for _ in range(LIMIT + 2):
            r = client.post(
                COHORTS_USERS.format(tenant.partner), json={**users_body(tenant, "c"), "partner_api_key": "forged"}
            )
            assert r.status_code == 401
        r = client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c"))
        assert r.status_code == 201


def test_rate_limit_is_one_budget_for_every_server_process(
    limited_server: ServerProcess, database_url: str, runtime: PlatformRuntime
) -> None:
    """Two server processes on one database (``--workers 2``, or two machines) spend one budget per partner."""
    tenant = make_tenant(runtime)
    second = start_server(database_url, extra_env={"COHORTFLOW_PLATFORM__RATE_LIMIT_PER_HOUR": str(LIMIT)})
    try:
        with httpx.Client(timeout=30) as client:
            servers = [limited_server.base_url, second.base_url]
            remaining = []
            for n in range(LIMIT):
                r = client.post(servers[n % 2] + COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c"))
                assert r.status_code == 201
                remaining.append(int(r.headers["X-RateLimit-Remaining"]))
            assert remaining == [4, 3, 2, 1, 0]
            for base_url in servers:
                r = client.post(base_url + COHORTS_USERS.format(tenant.partner), json=users_body(tenant, "c"))
                assert (r.status_code, r.json()) == (429, {"message": Messages.RATE_LIMITED})
    finally:
        second.stop()
