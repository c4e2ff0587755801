"""The partner cohort import API over HTTP against a real server, on SQLite and PostgreSQL.

Users are created with SQLAlchemy Core inserts (not the users API) so these tests depend only on the identity
tables; state is read back directly from the database so a test sees exactly what a request changed (or that a
rejected request changed nothing). The helpers at the top are shared by the other cohort test modules.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform import audit
from cohortflow.platform import cohorts as cohorts_domain
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import (
    cohort_imports,
    cohort_members,
    cohorts,
    data_import_keys,
    partners,
    user_aliases,
    user_devices,
    users,
)
from cohortflow.wire.cohort_import import Messages, mask_secret
from tests.support import Tenant, make_tenant, start_server


def add_user(
    runtime: PlatformRuntime,
    workspace_id: str,
    external_id: str | None = None,
    *,
    aliases: Iterable[tuple[str, str]] = (),
    devices: Iterable[str] = (),
) -> int:
    """A user with an optional external id, aliases ``(alias_name, alias_label)`` and device ids."""
    now = utcnow()
    with runtime.transaction() as conn:
        user_id = conn.execute(
            insert(users)
            .values(
                workspace_id=workspace_id,
                braze_id=uuid.uuid4().hex,
                external_id=external_id,
                created_at=now,
                updated_at=now,
            )
            .returning(users.c.id)
        ).scalar_one()
        for name, label in aliases:
            conn.execute(
                insert(user_aliases).values(
                    workspace_id=workspace_id, alias_name=name, alias_label=label, user_id=user_id, created_at=now
                )
            )
        for device_id in devices:
            conn.execute(
                insert(user_devices).values(
                    workspace_id=workspace_id, device_id=device_id, user_id=user_id, created_at=now, last_seen_at=now
                )
            )
    return int(user_id)


def add_users(runtime: PlatformRuntime, workspace_id: str, external_ids: Iterable[str]) -> dict[str, int]:
    """Many identified users at once: external id -> user id."""
    now = utcnow()
    rows = [
        {
            "workspace_id": workspace_id,
            "braze_id": uuid.uuid4().hex,
            "external_id": e,
            "created_at": now,
            "updated_at": now,
            "custom_attributes": {},
            "random_bucket": 0,
        }
        for e in external_ids
    ]
    with runtime.transaction() as conn:
        conn.execute(insert(users), rows)
        found = conn.execute(
            select(users.c.external_id, users.c.id).where(
                users.c.workspace_id == workspace_id, users.c.external_id.in_([r["external_id"] for r in rows])
            )
        )
        return {str(e): int(i) for e, i in found}


def identify(runtime: PlatformRuntime, user_id: int, external_id: str) -> None:
    """What ``changeUser`` / identify does to an anonymous user: it gets an external id, keeps its devices."""
    with runtime.transaction() as conn:
        conn.execute(update(users).where(users.c.id == user_id).values(external_id=external_id))


def cohort_pk(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str) -> int | None:
    with runtime.transaction() as conn:
        pk = conn.execute(
            select(cohorts.c.id)
            .join(partners, partners.c.id == cohorts.c.partner_id)
            .where(
                cohorts.c.workspace_id == tenant.workspace_id,
                partners.c.name == tenant.partner,
                cohorts.c.cohort_id == cohort_id,
            )
        ).scalar_one_or_none()
    return None if pk is None else int(pk)


def members(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str) -> set[int]:
    pk = cohort_pk(runtime, tenant, cohort_id)
    if pk is None:
        return set()
    with runtime.transaction() as conn:
        return {
            int(u)
            for u in conn.execute(select(cohort_members.c.user_id).where(cohort_members.c.cohort_pk == pk)).scalars()
        }


def audit_rows(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str) -> list[dict[str, Any]]:
    """The cohort's audit rows in the order they were written."""
    pk = cohort_pk(runtime, tenant, cohort_id)
    if pk is None:
        return []
    with runtime.transaction() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(cohort_imports).where(cohort_imports.c.cohort_pk == pk).order_by(cohort_imports.c.id)
            ).mappings()
        ]


@dataclass(frozen=True)
class Snapshot:
    users: int
    cohorts: frozenset[tuple[str, str, str]]
    members: frozenset[tuple[str, int]]
    audit_rows: int
    live_keys: int


def snapshot(runtime: PlatformRuntime, workspace_id: str) -> Snapshot:
    """Everything a partner request could change in a workspace."""
    with runtime.transaction() as conn:
        user_count = conn.execute(
            select(func.count()).select_from(users).where(users.c.workspace_id == workspace_id)
        ).scalar_one()
        cohort_rows = conn.execute(
            select(cohorts.c.cohort_id, cohorts.c.name, partners.c.name)
            .join(partners, partners.c.id == cohorts.c.partner_id)
            .where(cohorts.c.workspace_id == workspace_id)
        ).all()
        member_rows = conn.execute(
            select(cohorts.c.cohort_id, cohort_members.c.user_id)
            .join(cohorts, cohorts.c.id == cohort_members.c.cohort_pk)
            .where(cohorts.c.workspace_id == workspace_id)
        ).all()
        audits = conn.execute(
            select(func.count()).select_from(cohort_imports).where(cohort_imports.c.workspace_id == workspace_id)
        ).scalar_one()
        keys = conn.execute(
            select(func.count())
            .select_from(data_import_keys)
            .where(data_import_keys.c.workspace_id == workspace_id, data_import_keys.c.invalidated_at.is_(None))
        ).scalar_one()
    return Snapshot(
        users=int(user_count),
        cohorts=frozenset((str(a), str(b), str(c)) for a, b, c in cohort_rows),
        members=frozenset((str(a), int(b)) for a, b in member_rows),
        audit_rows=int(audits),
        live_keys=int(keys),
    )


def users_body(tenant: Tenant, cohort_id: str, *changes: dict[str, Any]) -> dict[str, Any]:
    return {**tenant.creds(), "cohort_id": cohort_id, "cohort_changes": list(changes)}


def name_body(tenant: Tenant, cohort_id: str, name: str, created_at: str = "2024-05-01T12:00:00Z") -> dict[str, Any]:
    return {**tenant.creds(), "cohort_id": cohort_id, "name": name, "created_at": created_at}


# --------------------------------------------------------------------------------------------------- the tests

COHORTS_USERS = "/partners/{}/cohorts/users"
COHORTS = "/partners/{}/cohorts"


def post_users(client: httpx.Client, tenant: Tenant, cohort_id: str, *changes: dict[str, Any]) -> httpx.Response:
    return client.post(COHORTS_USERS.format(tenant.partner), json=users_body(tenant, cohort_id, *changes))


def test_matches_external_id_alias_and_anonymous_device(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    by_external = add_user(runtime, tenant.workspace_id, "ext-1")
    by_alias = add_user(runtime, tenant.workspace_id, "ext-2", aliases=[("crm-2", "crm_id")])
    alias_only = add_user(runtime, tenant.workspace_id, None, aliases=[("crm-3", "crm_id")])
    anonymous = add_user(runtime, tenant.workspace_id, None, devices=["dev-anon"])

    r = post_users(
        client,
        tenant,
        "c",
        {
            "user_ids": ["ext-1"],
            "aliases": [
                {"alias_name": "crm-2", "alias_label": "crm_id"},
                {"alias_name": "crm-3", "alias_label": "crm_id"},
            ],
            "device_ids": ["dev-anon"],
        },
    )

    assert r.status_code == 201, r.text
    assert r.json() == {
        "message": "success",
        "received": 4,
        "matched": 4,
        "unmatched": 0,
        "added": 4,
        "removed": 0,
        "unchanged": 0,
    }
    assert members(runtime, tenant, "c") == {by_external, by_alias, alias_only, anonymous}


def test_identified_users_device_id_does_not_match(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    was_anonymous = add_user(runtime, tenant.workspace_id, None, devices=["dev-later-identified"])
    identify(runtime, was_anonymous, "now-known")
    always_identified = add_user(runtime, tenant.workspace_id, "ext-d", devices=["dev-identified"])

    r = post_users(client, tenant, "c", {"device_ids": ["dev-later-identified", "dev-identified"]})

    assert r.status_code == 201, r.text
    assert r.json()["matched"] == 0
    assert r.json()["unmatched"] == 2
    assert members(runtime, tenant, "c") == set()
    # Still reachable by the identifiers identified users match on.
    r = post_users(client, tenant, "c", {"user_ids": ["now-known", "ext-d"]})
    assert r.json()["added"] == 2
    assert members(runtime, tenant, "c") == {was_anonymous, always_identified}
    # Removing by those device ids does not touch them either.
    r = post_users(client, tenant, "c", {"device_ids": ["dev-later-identified"], "should_remove": True})
    assert r.json()["removed"] == 0
    assert members(runtime, tenant, "c") == {was_anonymous, always_identified}


def test_unknown_identifiers_are_skipped_counted_and_never_create_users(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    known = add_user(runtime, tenant.workspace_id, "known")
    before = snapshot(runtime, tenant.workspace_id).users

    r = post_users(
        client,
        tenant,
        "c",
        {
            "user_ids": ["known", "ghost-1"],
            "device_ids": ["ghost-device"],
            "aliases": [
                {"alias_name": "ghost", "alias_label": "crm_id"},
                {"alias_name": "x" * 600, "alias_label": "y"},
            ],
        },
        {"user_ids": ["ghost-2", "\u0000nul", "z" * 2000], "should_remove": True},
    )

    assert r.status_code == 201, r.text
    assert r.json() == {
        "message": "success",
        "received": 8,
        "matched": 1,
        "unmatched": 7,
        "added": 1,
        "removed": 0,
        "unchanged": 0,
    }
    assert snapshot(runtime, tenant.workspace_id).users == before
    assert members(runtime, tenant, "c") == {known}
    sample = audit_rows(runtime, tenant, "c")[-1]["unmatched_sample"]
    assert {"user_id": "ghost-1"} in sample
    assert {"device_id": "ghost-device"} in sample
    assert {"alias_name": "ghost", "alias_label": "crm_id"} in sample
    assert {"user_id": "ghost-2"} in sample


def test_adds_and_removes_are_idempotent(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    ids = add_users(runtime, tenant.workspace_id, ["a", "b", "c"])
    assert post_users(client, tenant, "c", {"user_ids": ["a", "b"]}).json()["added"] == 2

    again = post_users(client, tenant, "c", {"user_ids": ["a", "b", "c"]}).json()
    assert (again["added"], again["unchanged"], again["matched"]) == (1, 2, 3)

    removed = post_users(client, tenant, "c", {"user_ids": ["a"], "should_remove": True}).json()
    assert (removed["removed"], removed["unchanged"]) == (1, 0)
    retried = post_users(client, tenant, "c", {"user_ids": ["a"], "should_remove": True}).json()
    assert (retried["removed"], retried["unchanged"]) == (0, 1)
    assert members(runtime, tenant, "c") == {ids["b"], ids["c"]}


def test_change_objects_apply_in_request_order(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    ids = add_users(runtime, tenant.workspace_id, ["x", "y"])
    r = post_users(
        client,
        tenant,
        "c",
        {"user_ids": ["x"]},
        {"user_ids": ["x"], "should_remove": True},
        {"user_ids": ["y"], "should_remove": True},
        {"user_ids": ["y"]},
    )
    assert r.json() == {
        "message": "success",
        "received": 4,
        "matched": 4,
        "unmatched": 0,
        "added": 2,
        "removed": 1,
        "unchanged": 1,
    }
    assert members(runtime, tenant, "c") == {ids["y"]}
    # The same user named twice in one object (and via two identifier kinds) is one change.
    add_user(runtime, tenant.workspace_id, "z", aliases=[("zz", "crm_id")])
    r = post_users(
        client, tenant, "c", {"user_ids": ["z", "z"], "aliases": [{"alias_name": "zz", "alias_label": "crm_id"}]}
    )
    assert (r.json()["added"], r.json()["unchanged"]) == (1, 2)


def test_cohorts_names_and_renames(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    for i, name in enumerate(["First name", "Renamed", "Renamed again"]):
        r = client.post(
            COHORTS.format(tenant.partner), json=name_body(tenant, "c-named", name, f"2024-05-0{i + 1}T12:00:00+02:00")
        )
        assert r.status_code == 201, r.text
        assert r.json() == {"message": "success"}
    with runtime.transaction() as conn:
        info = cohorts_domain.get_cohort(conn, tenant.workspace_id, tenant.partner, "c-named")
        assert info.name == "Renamed again"
        assert info.size == 0
        assert len(cohorts_domain.list_cohorts(conn, tenant.workspace_id, tenant.partner)) == 1


def test_users_before_cohorts_creates_cohort_named_by_its_id(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    user = add_user(runtime, tenant.workspace_id, "early")
    assert post_users(client, tenant, "cohort-xyz", {"user_ids": ["early"]}).status_code == 201
    with runtime.transaction() as conn:
        info = cohorts_domain.get_cohort(conn, tenant.workspace_id, tenant.partner, "cohort-xyz")
    assert (info.name, info.size, info.partner) == ("cohort-xyz", 1, tenant.partner)
    assert info.last_import_at is not None

    client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "cohort-xyz", "Now named"))
    with runtime.transaction() as conn:
        info = cohorts_domain.get_cohort(conn, tenant.workspace_id, tenant.partner, "cohort-xyz")
    assert (info.name, info.size) == ("Now named", 1)
    assert members(runtime, tenant, "cohort-xyz") == {user}


def test_empty_changes_with_valid_keys_is_a_pure_credential_check(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, database_url: str
) -> None:
    from tests.platform.test_cli import ok_json

    probe = f"made-up-{uuid.uuid4().hex[:8]}"
    before = snapshot(runtime, tenant.workspace_id)
    r = post_users(client, tenant, probe)
    assert r.status_code == 201
    assert r.json() == {
        "message": "success",
        "received": 0,
        "matched": 0,
        "unmatched": 0,
        "added": 0,
        "removed": 0,
        "unchanged": 0,
    }
    # Change objects that name no identifier at all are the same check.
    r = post_users(client, tenant, probe, {"user_ids": []}, {"device_ids": [], "aliases": [], "should_remove": True})
    assert r.status_code == 201
    assert r.json()["received"] == 0

    assert cohort_pk(runtime, tenant, probe) is None
    assert snapshot(runtime, tenant.workspace_id) == before
    with runtime.transaction() as conn:
        audit_count = conn.execute(
            select(func.count()).select_from(cohort_imports).where(cohort_imports.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
        last_used = conn.execute(
            select(data_import_keys.c.last_used_at).where(data_import_keys.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
    assert audit_count == 0
    assert last_used is not None  # the check still counts as a use of the key
    listed = ok_json(database_url, "cohort", "list", "-w", tenant.workspace_id)
    assert listed == []
    catalogue = client.get("/segments/filters", headers={"Authorization": f"Bearer {tenant.rest_api_key}"})
    assert catalogue.status_code == 200
    assert probe not in catalogue.text


def test_exactly_1000_identifiers_pass_and_1001_fail(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_users(runtime, tenant.workspace_id, [f"u{i}" for i in range(400)])
    thousand = [
        {"user_ids": [f"u{i}" for i in range(600)]},
        {"device_ids": [f"d{i}" for i in range(200)], "should_remove": True},
        {"aliases": [{"alias_name": f"a{i}", "alias_label": "l"} for i in range(200)]},
    ]
    r = post_users(client, tenant, "big", *thousand)
    assert r.status_code == 201, r.text
    assert (r.json()["received"], r.json()["matched"], r.json()["added"]) == (1000, 400, 400)

    before = snapshot(runtime, tenant.workspace_id)
    thousand[1]["device_ids"].append("one-too-many")
    r = post_users(client, tenant, "big", *thousand)
    assert r.status_code == 400
    assert r.json() == {"message": Messages.TOO_MANY_IDENTIFIERS}
    assert snapshot(runtime, tenant.workspace_id) == before


def test_100_change_objects_pass_and_101_fail(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    add_user(runtime, tenant.workspace_id, "obj")
    hundred = [{"user_ids": ["obj"]}] + [{"device_ids": [], "should_remove": True}] * 99
    r = post_users(client, tenant, "objects", *hundred)
    assert (r.status_code, r.json()["added"]) == (201, 1), r.text

    before = snapshot(runtime, tenant.workspace_id)
    r = post_users(client, tenant, "objects", *hundred, {"user_ids": []})
    assert r.status_code == 400
    assert r.json() == {"message": Messages.TOO_MANY_CHANGE_OBJECTS}
    assert snapshot(runtime, tenant.workspace_id) == before


def test_body_over_4mb_is_413_and_changes_nothing(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_user(runtime, tenant.workspace_id, "big-body")
    before = snapshot(runtime, tenant.workspace_id)
    body = users_body(tenant, "c", {"user_ids": ["big-body"] + ["p" * 5000] * 900})
    r = client.post(COHORTS_USERS.format(tenant.partner), json=body)
    assert r.status_code == 413
    assert r.json() == {"message": Messages.PAYLOAD_TOO_LARGE}
    assert snapshot(runtime, tenant.workspace_id) == before


def test_audit_records_every_validated_import(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    add_users(runtime, tenant.workspace_id, ["m1", "m2"])
    post_users(client, tenant, "audited", {"user_ids": ["m1", "m2"] + [f"ghost-{i}" for i in range(30)]})
    post_users(client, tenant, "audited", {"user_ids": ["m1"], "should_remove": True})
    post_users(client, tenant, "audited", {"user_ids": ["ghost-0"], "should_remove": True})
    post_users(client, tenant, "audited")  # a credential check: no audit row
    with runtime.transaction() as conn:
        pk = cohorts_domain.get_cohort(conn, tenant.workspace_id, tenant.partner, "audited").pk
        records = audit.recent_imports(conn, pk)
    assert [(r.received, r.matched, r.unmatched, r.added, r.removed, r.unchanged) for r in records] == [
        (1, 0, 1, 0, 0, 0),
        (1, 1, 0, 0, 1, 0),
        (32, 2, 30, 2, 0, 0),
    ]
    assert records[2].unmatched_sample == [{"user_id": f"ghost-{i}"} for i in range(20)]
    assert records[0].at >= records[1].at >= records[2].at
    rows = audit_rows(runtime, tenant, "audited")
    assert {(r["workspace_id"], r["partner_id"]) for r in rows} == {(tenant.workspace_id, rows[0]["partner_id"])}


def test_identifiers_too_long_to_store_are_unmatched_and_the_audit_keeps_them_short(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_user(runtime, tenant.workspace_id, "fits")
    huge = "x" * 1_000_000  # no column holds it, so no user can have it
    r = post_users(
        client,
        tenant,
        "long-ids",
        {"user_ids": ["fits", huge]},
        {"device_ids": [huge[:600_000]]},
        {"aliases": [{"alias_name": huge[:700_000], "alias_label": "l"}]},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["received"], r.json()["matched"], r.json()["unmatched"]) == (4, 1, 3)
    (row,) = audit_rows(runtime, tenant, "long-ids")
    assert len(row["unmatched_sample"]) == 3
    values = [value for item in row["unmatched_sample"] for value in item.values()]
    assert all(len(value) <= audit.SAMPLE_VALUE_MAX_CHARS for value in values)


def test_audit_retention_prunes_old_rows(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    post_users(client, tenant, "old", {"user_ids": ["ghost"]})
    post_users(client, tenant, "old", {"user_ids": ["ghost"]})
    first = audit_rows(runtime, tenant, "old")[0]
    with runtime.transaction() as conn:
        conn.execute(
            update(cohort_imports).where(cohort_imports.c.id == first["id"]).values(at=utcnow() - timedelta(days=91))
        )
        assert audit.prune_expired(conn, retention_days=90) >= 1
    assert [r["id"] for r in audit_rows(runtime, tenant, "old")] == [audit_rows(runtime, tenant, "old")[0]["id"]]
    assert len(audit_rows(runtime, tenant, "old")) == 1


def test_server_prunes_expired_audit_rows_on_its_own(
    database_url: str, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    with runtime.transaction() as conn:
        pk = cohorts_domain.name_cohort(conn, tenant.workspace_id, _partner_id(conn, tenant), "aged", "Aged", utcnow())
        for days in (3, 1):
            audit.record_import(
                conn,
                workspace_id=tenant.workspace_id,
                partner_id=_partner_id(conn, tenant),
                cohort_pk=pk,
                at=utcnow() - timedelta(days=days, hours=1),
                received=0,
                matched=0,
                unmatched=0,
                added=0,
                removed=0,
                unchanged=0,
                unmatched_sample=[],
            )
    # A new process prunes at its first import (then at most once a minute), after answering it.
    proc = start_server(database_url, extra_env={"COHORTFLOW_PLATFORM__AUDIT_RETENTION_DAYS": "2"})
    try:
        with httpx.Client(base_url=proc.base_url, timeout=30) as client:
            assert post_users(client, tenant, "aged", {"user_ids": ["ghost"]}).status_code == 201
            deadline = time.monotonic() + 20
            while len(audit_rows(runtime, tenant, "aged")) != 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        proc.stop()
    rows = audit_rows(runtime, tenant, "aged")
    assert len(rows) == 2  # the 1-day-old row and the new one; the 3-day-old row is gone
    assert all(as_utc(r["at"]) > utcnow() - timedelta(days=2) for r in rows)


def _partner_id(conn: Any, tenant: Tenant) -> int:
    return int(conn.execute(select(partners.c.id).where(partners.c.name == tenant.partner)).scalar_one())


def test_list_extension_shows_this_partners_cohorts(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_users(runtime, tenant.workspace_id, ["l1", "l2"])
    client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "listed-a", "Listed A"))
    post_users(client, tenant, "listed-a", {"user_ids": ["l1", "l2"]})
    post_users(client, tenant, "listed-b", {"user_ids": ["l1"]})
    # Another partner enabled on the same workspace: its cohorts are not listed for this partner.
    other = make_tenant(runtime)
    with runtime.transaction() as conn:
        _info, other_key = create_import_key(conn, tenant.workspace_id, other.partner)
    other_creds = {"partner_api_key": other.partner_api_key, "client_secret": other_key.plain}
    r = client.post(
        COHORTS_USERS.format(other.partner),
        json={**other_creds, "cohort_id": "others", "cohort_changes": [{"user_ids": ["l1"]}]},
    )
    assert r.status_code == 201

    r = client.post(f"/partners/{tenant.partner}/cohorts/list", json=tenant.creds())
    assert r.status_code == 200, r.text
    listed = {c["cohort_id"]: (c["name"], c["size"]) for c in r.json()["cohorts"]}
    assert listed == {"listed-a": ("Listed A", 2), "listed-b": ("listed-b", 1)}
    assert all(c["last_import_at"] for c in r.json()["cohorts"])
    with runtime.transaction() as conn:
        everything = cohorts_domain.list_cohorts(conn, tenant.workspace_id)
    assert {(c.partner, c.cohort_id) for c in everything} == {
        (tenant.partner, "listed-a"),
        (tenant.partner, "listed-b"),
        (other.partner, "others"),
    }


def test_success_carries_rate_limit_headers(client: httpx.Client, tenant: Tenant) -> None:
    r = post_users(client, tenant, "c")
    assert int(r.headers["X-RateLimit-Limit"]) == 250_000
    assert 0 <= int(r.headers["X-RateLimit-Remaining"]) < 250_000
    assert int(r.headers["X-RateLimit-Reset"]) > 1_700_000_000


def test_openapi_documents_the_partner_api(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, required in [
        ("/partners/{partner}/cohorts", {"cohort_id", "name", "created_at"}),
        ("/partners/{partner}/cohorts/users", {"cohort_id", "cohort_changes"}),
        ("/partners/{partner}/cohorts/list", set()),
    ]:
        post = paths[path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert required | {"partner_api_key", "client_secret"} <= set(schema["required"])
        assert {"400", "401", "413", "429"} <= set(post["responses"])
        assert "$ref" not in str(schema)


# ------------------------------------------------------------------------- every row of the contract's error table


def _error_cases() -> list[tuple[str, str, dict[str, Any], int, str]]:
    """(id, endpoint, body patch over a valid body, status, message); ``None`` values delete the key."""
    u, n = "users", "name"
    changes = Messages.COHORT_CHANGES_INVALID
    return [
        ("users-cohort-id-missing", u, {"cohort_id": None}, 400, Messages.COHORT_ID_INVALID),
        ("users-cohort-id-number", u, {"cohort_id": 12}, 400, Messages.COHORT_ID_INVALID),
        ("users-cohort-id-empty", u, {"cohort_id": "  "}, 400, Messages.COHORT_ID_INVALID),
        ("name-cohort-id-missing", n, {"cohort_id": None}, 400, Messages.COHORT_ID_INVALID),
        ("changes-missing", u, {"cohort_changes": None}, 400, changes),
        ("changes-object", u, {"cohort_changes": {"user_ids": ["a"]}}, 400, changes),
        ("changes-item-string", u, {"cohort_changes": ["a"]}, 400, changes),
        ("changes-ids-not-strings", u, {"cohort_changes": [{"user_ids": [1, 2]}]}, 400, changes),
        ("changes-ids-string", u, {"cohort_changes": [{"device_ids": "d"}]}, 400, changes),
        ("changes-alias-no-label", u, {"cohort_changes": [{"aliases": [{"alias_name": "x"}]}]}, 400, changes),
        ("changes-unknown-key", u, {"cohort_changes": [{"user_ids": ["a"], "emails": ["e"]}]}, 400, changes),
        ("changes-remove-not-bool", u, {"cohort_changes": [{"user_ids": ["a"], "should_remove": "yes"}]}, 400, changes),
        (
            "too-many",
            u,
            {"cohort_changes": [{"user_ids": ["a"] * 500}, {"device_ids": ["d"] * 501}]},
            400,
            Messages.TOO_MANY_IDENTIFIERS,
        ),
        (
            "too-many-objects",
            u,
            {"cohort_changes": [{"user_ids": ["a"]}] + [{"user_ids": []}] * 100},
            400,
            Messages.TOO_MANY_CHANGE_OBJECTS,
        ),
        ("name-missing", n, {"name": None}, 400, Messages.NAME_INVALID),
        ("name-empty", n, {"name": ""}, 400, Messages.NAME_INVALID),
        ("name-number", n, {"name": 5}, 400, Messages.NAME_INVALID),
        ("created-at-missing", n, {"created_at": None}, 400, Messages.CREATED_AT_INVALID),
        ("created-at-garbage", n, {"created_at": "yesterday"}, 400, Messages.CREATED_AT_INVALID),
        ("created-at-number", n, {"created_at": 1714564800}, 400, Messages.CREATED_AT_INVALID),
        (
            "created-at-past-year-9999-in-utc",
            n,
            {"created_at": "9999-12-31T23:59:59-14:00"},
            400,
            Messages.CREATED_AT_INVALID,
        ),
        ("cohort-id-too-long", u, {"cohort_id": "c" * 513}, 400, Messages.COHORT_ID_INVALID),
        (
            "users-bad-partner-key",
            u,
            {"partner_api_key": "cfpartner_not-a-real-key"},
            401,
            Messages.INVALID_PARTNER_API_KEY,
        ),
        ("users-missing-partner-key", u, {"partner_api_key": None}, 401, Messages.INVALID_PARTNER_API_KEY),
        ("name-bad-partner-key", n, {"partner_api_key": "nope"}, 401, Messages.INVALID_PARTNER_API_KEY),
        ("users-bad-client-secret", u, {"client_secret": "cfdik_not-a-real-key"}, 401, Messages.INVALID_CLIENT_SECRET),
        ("users-missing-client-secret", u, {"client_secret": None}, 401, Messages.INVALID_CLIENT_SECRET),
        ("name-client-secret-number", n, {"client_secret": 42}, 401, Messages.INVALID_CLIENT_SECRET),
    ]


@pytest.mark.parametrize(
    ("endpoint", "patch", "status", "message"), [c[1:] for c in _error_cases()], ids=[c[0] for c in _error_cases()]
)
def test_error_table_rows_exact_message_and_no_change(
    client: httpx.Client,
    runtime: PlatformRuntime,
    tenant: Tenant,
    endpoint: str,
    patch: dict[str, Any],
    status: int,
    message: str,
) -> None:
    member = add_user(runtime, tenant.workspace_id, "a")
    assert post_users(client, tenant, "c", {"user_ids": ["a"]}).status_code == 201
    before = snapshot(runtime, tenant.workspace_id)
    assert before.members == {("c", member)}

    if endpoint == "users":
        body = users_body(tenant, "c", {"user_ids": ["a"], "should_remove": True})
        path = COHORTS_USERS.format(tenant.partner)
    else:
        body = name_body(tenant, "c", "A new name")
        path = COHORTS.format(tenant.partner)
    body.update(patch)
    body = {k: v for k, v in body.items() if v is not None}
    r = client.post(path, json=body)

    assert r.status_code == status, r.text
    assert r.json() == {"message": message}
    assert snapshot(runtime, tenant.workspace_id) == before


def test_partner_not_enabled_and_unauthorized_rows(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant
) -> None:
    add_user(runtime, tenant.workspace_id, "a")
    post_users(client, tenant, "c", {"user_ids": ["a"]})
    other = make_tenant(runtime)
    with runtime.transaction() as conn:
        _info, other_partner_key_for_ws = create_import_key(conn, tenant.workspace_id, other.partner)
    before = snapshot(runtime, tenant.workspace_id)

    # A live key of this workspace, but issued for another partner.
    body = {
        **users_body(tenant, "c", {"user_ids": ["a"], "should_remove": True}),
        "client_secret": other_partner_key_for_ws.plain,
    }
    r = client.post(COHORTS_USERS.format(tenant.partner), json=body)
    assert r.status_code == 401
    expected = Messages.PARTNER_NOT_ENABLED.format(masked_secret=mask_secret(other_partner_key_for_ws.plain))
    assert r.json() == {"message": expected}
    assert other_partner_key_for_ws.plain not in r.text
    assert other_partner_key_for_ws.plain[:4] in r.text

    # A real partner API key, but of another partner than the path names.
    body = {
        **users_body(tenant, "c", {"user_ids": ["a"], "should_remove": True}),
        "partner_api_key": other.partner_api_key,
    }
    for path in (COHORTS_USERS, COHORTS):
        r = client.post(path.format(tenant.partner), json={**body, "name": "n", "created_at": "2024-01-01"})
        assert (r.status_code, r.json()) == (401, {"message": Messages.UNAUTHORIZED})
    assert snapshot(runtime, tenant.workspace_id) == before


@pytest.mark.parametrize(
    "content",
    [b"not json", b"", b"[1, 2]", b'"text"', b'{"a": 1', b"\xff\xfe"],
    ids=["garbage", "empty", "array", "string", "truncated", "bad-utf8"],
)
def test_body_not_a_json_object_is_400(
    client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant, content: bytes
) -> None:
    before = snapshot(runtime, tenant.workspace_id)
    for path in (COHORTS_USERS, COHORTS, "/partners/{}/cohorts/list"):
        r = client.post(path.format(tenant.partner), content=content, headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert "JSON" in r.json()["message"]
    assert snapshot(runtime, tenant.workspace_id) == before


def test_storage_limits_are_clear_400s(client: httpx.Client, runtime: PlatformRuntime, tenant: Tenant) -> None:
    before = snapshot(runtime, tenant.workspace_id)
    r = post_users(client, tenant, "c" * 513)
    assert (r.status_code, r.json()) == (400, {"message": Messages.COHORT_ID_INVALID})
    r = client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "c", "n" * 1025))
    assert (r.status_code, r.json()) == (400, {"message": Messages.NAME_TOO_LONG})
    r = client.post(COHORTS.format(tenant.partner), json=name_body(tenant, "c", "n", "0001-01-01T00:00:00+01:00"))
    assert (r.status_code, r.json()) == (400, {"message": Messages.CREATED_AT_INVALID})
    assert snapshot(runtime, tenant.workspace_id) == before
