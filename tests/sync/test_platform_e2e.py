"""End to end against the real platform server (SQLite and PostgreSQL), with sync state on the same backend."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from cohortflow.cli import cli as root_cli
from cohortflow.platform.import_keys import IMPORT_KEY_KIND, invalidate_import_key
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import cohort_imports, cohorts, users
from cohortflow.sync import list_runs, load_workspace, run_sync
from tests.support import ServerProcess, Tenant
from tests.sync.support import Warehouse, cohort_name, platform_members, seed_users, write_workspace


def _workspace(tmp_path: Path, server: ServerProcess, tenant: Tenant, **kwargs: Any) -> Path:
    return write_workspace(
        tmp_path,
        endpoint=server.base_url,
        partner=tenant.partner,
        partner_api_key=tenant.partner_api_key,
        data_import_key=tenant.client_secret,
        **kwargs,
    )


def _imports(runtime: PlatformRuntime, tenant: Tenant, cohort_id: str) -> tuple[int, int]:
    """How many /cohorts/users requests the platform applied to the cohort, and how many identifiers they held."""
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(cohort_imports.c.received), 0))
            .select_from(cohort_imports.join(cohorts, cohorts.c.id == cohort_imports.c.cohort_pk))
            .where(cohorts.c.workspace_id == tenant.workspace_id, cohorts.c.cohort_id == cohort_id)
        ).one()
    return int(row[0]), int(row[1])


def test_series_of_runs_keeps_the_cohort_equal_to_the_model_and_sends_only_changes(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, state_url: str
) -> None:
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": f"u{i}", "first_name": "x"} for i in range(1300)])
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    path = _workspace(tmp_path, server, tenant)
    cohort_id = "cohortflow-vip"
    series: list[tuple[dict[str, str], str]] = [
        # row id -> external id; warehouse-only users (w...) never match and never become users.
        ({**{str(i): f"u{i}" for i in range(1100)}, **{f"w{i}": f"w{i}" for i in range(30)}}, "VIP customers"),
        # Rows 400 and 401 change their external id: one remove and one add each.
        ({**{str(i): f"u{i}" for i in range(300, 1250)}, "400": "u1260", "401": "u1261"}, "VIP customers"),
        ({str(i): f"u{i}" for i in range(1000, 1300)}, "Very important customers"),  # a rename, too
        ({str(i): f"u{i}" for i in range(1000, 1300)}, "Very important customers"),  # nothing changed
        ({}, "Very important customers"),
    ]
    for rows, name in series:
        wh.set_rows([{"id": pk, "uid": uid} for pk, uid in rows.items()])
        path.write_text(path.read_text().replace("VIP customers", name))
        requests_before, identifiers_before = _imports(runtime, tenant, cohort_id)
        with load_workspace(path, state_url=state_url) as ws:
            result = run_sync(ws, "vip")
        assert result.status == "succeeded", result.message
        expected = {uid for uid in rows.values() if uid.startswith("u")}
        assert platform_members(runtime, tenant.workspace_id, cohort_id) == expected
        assert cohort_name(runtime, tenant.workspace_id, cohort_id) == name
        c = result.counts
        # Only the changes crossed the wire: the platform saw exactly the planned identifiers, in full batches.
        requests, identifiers = _imports(runtime, tenant, cohort_id)
        assert identifiers - identifiers_before == c["adds"] + c["removes"] == c["added"] + c["removed"]
        assert requests - requests_before == math.ceil(c["adds"] / 1000) + math.ceil(c["removes"] / 1000)
        assert c.get("matched", 0) + c.get("unmatched", 0) == c["added"] + c["removed"]
    with load_workspace(path, state_url=state_url) as ws:
        runs = [r.counts for r in reversed(list_runs(ws.store, "vip"))]
    assert [(r["adds"], r["removes"]) for r in runs] == [(1130, 0), (152, 332), (48, 698), (0, 0), (0, 300)]
    assert runs[0]["matched"] == 1100 and runs[0]["unmatched"] == 30  # the match rate, from the platform
    assert runs[3]["requests"] == 0  # an idle run sends nothing, not even the cohort name
    # Users that exist only in the warehouse were never created.
    with runtime.engine.connect() as conn:
        created = conn.execute(
            select(func.count()).where(users.c.workspace_id == tenant.workspace_id, users.c.external_id.like("w%"))
        ).scalar_one()
    assert created == 0


def test_alias_and_device_identifiers_follow_the_platforms_matching_rules(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, state_url: str
) -> None:
    base = server.base_url
    seed_users(base, tenant.rest_api_key, [{"external_id": "e1"}, {"external_id": "e3"}])
    with httpx.Client(base_url=base, timeout=30, headers={"authorization": f"Bearer {tenant.rest_api_key}"}) as c:
        r = c.post(
            "/users/alias/new",
            json={
                "user_aliases": [
                    {"external_id": "e1", "alias_name": "a1@example.com", "alias_label": "email"},
                    {"alias_name": "a2@example.com", "alias_label": "email"},
                ]
            },
        )
        assert r.status_code == 201, r.text
        for body in (
            {"api_key": tenant.app_key, "device_id": "dev-anon"},
            {"api_key": tenant.app_key, "device_id": "dev-ident"},
            {"api_key": tenant.app_key, "device_id": "dev-ident", "external_id": "e2"},  # identified later
        ):
            r = c.post("/sdk/data", json=body)
            assert r.status_code in (200, 201), r.text
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.set_rows(
        [
            {"id": "1", "email": "a1@example.com", "device": "dev-anon"},
            {"id": "2", "email": "a2@example.com", "device": "dev-ident"},
            {"id": "3", "email": "nobody@example.com", "device": "dev-unknown"},
        ]
    )
    alias_path = _workspace(
        tmp_path,
        server,
        tenant,
        sync_name="by_alias",
        identifier={"alias": {"name_column": "email", "label": "email"}},
        cohort={"mode": "create", "name": "By alias"},
    )
    with load_workspace(alias_path, state_url=state_url) as ws:
        result = run_sync(ws, "by_alias")
    assert result.status == "succeeded"
    assert platform_members(runtime, tenant.workspace_id, "cohortflow-by_alias") == {"e1", "alias:email:a2@example.com"}
    assert (result.counts["matched"], result.counts["unmatched"]) == (2, 1)

    device_path = _workspace(
        tmp_path,
        server,
        tenant,
        sync_name="by_device",
        identifier={"device_id": "device"},
        cohort={"mode": "create", "name": "By device"},
    )
    with load_workspace(device_path, state_url=state_url) as ws:
        result = run_sync(ws, "by_device")
    # dev-ident belongs to a user identified later: device ids match anonymous users only.
    assert platform_members(runtime, tenant.workspace_id, "cohortflow-by_device") == {"device:dev-anon"}
    assert (result.counts["matched"], result.counts["unmatched"]) == (1, 2)

    # Fallback per row: external id when present, else alias, else device id.
    wh.set_rows(
        [
            {"id": "1", "uid": "e3", "email": "a1@example.com", "device": "dev-anon"},
            {"id": "2", "uid": None, "email": "a2@example.com", "device": "dev-ident"},
            {"id": "3", "uid": None, "email": None, "device": "dev-anon"},
        ]
    )
    fallback_path = _workspace(
        tmp_path,
        server,
        tenant,
        sync_name="by_fallback",
        cohort={"mode": "create", "name": "Fallback"},
        identifier={
            "fallback": [
                {"external_id": "uid"},
                {"alias": {"name_column": "email", "label": "email"}},
                {"device_id": "device"},
            ]
        },
    )
    with load_workspace(fallback_path, state_url=state_url) as ws:
        assert run_sync(ws, "by_fallback").status == "succeeded"
    assert platform_members(runtime, tenant.workspace_id, "cohortflow-by_fallback") == {
        "e3",
        "alias:email:a2@example.com",
        "device:dev-anon",
    }


def test_existing_cohort_list_destination_test_and_invalidated_key(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, state_url: str
) -> None:
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": f"u{i}"} for i in range(20)])
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.set_range(range(10))
    path = _workspace(tmp_path, server, tenant)

    runner = CliRunner()

    def cli(*args: str) -> Result:
        return runner.invoke(root_cli, ["sync", "-f", str(path), "--state-url", state_url, *args])

    tested = cli("destinations", "test", "platform")
    assert tested.exit_code == 0, tested.stderr
    assert "accepted the keys" in tested.stdout
    # Proving the keys leaves nothing behind: no cohort to show in a segment's dropdown, no audit row.
    assert _imports(runtime, tenant, "cohortflow-connection-test") == (0, 0)
    with runtime.engine.connect() as conn:
        mine = cohorts.c.workspace_id == tenant.workspace_id
        assert conn.execute(select(func.count()).select_from(cohorts).where(mine)).scalar_one() == 0
    ran = cli("run", "vip", "--json")
    assert ran.exit_code == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["status"] == "succeeded" and run["counts"]["added"] == 10
    listed = cli("destinations", "cohorts", "platform", "--json")
    assert listed.exit_code == 0, listed.stderr
    sizes = {c["cohort_id"]: (c["name"], c["size"]) for c in json.loads(listed.stdout)}
    assert sizes["cohortflow-vip"] == ("VIP customers", 10)
    shown = cli("run-show", run["run_id"], "--json")
    assert json.loads(shown.stdout)["counts"]["matched"] == 10
    history = cli("runs", "vip", "--json")
    assert [r["id"] for r in json.loads(history.stdout)] == [run["run_id"]]

    # A second sync updates the cohort the first one created, chosen from the list.
    text = path.read_text().replace(
        "syncs:\n",
        (
            "syncs:\n  second:\n    model: customers\n    destination: platform\n"
            "    identifier: {external_id: uid}\n    cohort: {mode: existing, cohort_id: cohortflow-vip}\n"
        ),
        1,
    )
    path.write_text(text)
    wh.set_range(range(5, 15))
    second = cli("run", "second", "--json")
    assert json.loads(second.stdout)["counts"]["added"] == 10  # its own state: it sends its whole model once
    assert platform_members(runtime, tenant.workspace_id, "cohortflow-vip") == {f"u{i}" for i in range(15)}
    assert cohort_name(runtime, tenant.workspace_id, "cohortflow-vip") == "VIP customers"  # never renamed

    # The customer invalidates the data import key: the run fails clearly and state is unchanged.
    with runtime.transaction() as conn:
        invalidate_import_key(
            conn, tenant.workspace_id, tenant.partner, tenant.client_secret[: len(IMPORT_KEY_KIND) + 1 + 8]
        )
    with load_workspace(path, state_url=state_url) as ws:
        before = ws.store.confirmed_set("vip")
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message is not None and "refused the credentials (401)" in result.message
        assert ws.store.confirmed_set("vip") == before
    failed = cli("destinations", "test", "platform")
    assert failed.exit_code == 1 and "401" in failed.stderr


def test_users_track_mode_writes_a_custom_attribute(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, state_url: str
) -> None:
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": f"t{i}"} for i in range(200)])
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.set_range(range(150), prefix="t")
    path = tmp_path / "cohortflow.yaml"
    path.write_text(f"""
sources: {{warehouse: {{type: duckdb, path: warehouse.duckdb}}}}
models: {{customers: {{source: warehouse, table: customers, primary_key: id}}}}
destinations:
  braze:
    type: braze_users_track
    rest_endpoint: {server.base_url}
    rest_api_key: ${{REST_KEY}}
syncs:
  vip: {{model: customers, destination: braze, identifier: {{external_id: uid}}, attribute: cf_vip}}
""")
    with load_workspace(path, state_url=state_url, env={"REST_KEY": tenant.rest_api_key}) as ws:
        first = run_sync(ws, "vip")
        assert first.status == "succeeded" and first.counts["requests"] == 2  # 75 users a request
        wh.set_range([*range(100, 150), 500], prefix="t")  # t500 does not exist and must not be created
        second = run_sync(ws, "vip")
        assert second.status == "succeeded"
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(users.c.external_id, users.c.custom_attributes).where(users.c.workspace_id == tenant.workspace_id)
        ).all()
    flagged = {ext for ext, attrs in rows if (attrs or {}).get("cf_vip") is True}
    assert flagged == {f"t{i}" for i in range(100, 150)}
    assert "t500" not in {ext for ext, _ in rows}
    # The destination test proves the REST API key, and says so clearly when it is wrong.
    runner = CliRunner(env={"REST_KEY": tenant.rest_api_key})
    ok = runner.invoke(root_cli, ["sync", "-f", str(path), "--state-url", state_url, "destinations", "test", "braze"])
    assert ok.exit_code == 0 and "accepted the REST API key" in ok.stdout, ok.output
    bad = CliRunner(env={"REST_KEY": "cfrest_wrong"}).invoke(
        root_cli, ["sync", "-f", str(path), "--state-url", state_url, "destinations", "test", "braze"]
    )
    assert bad.exit_code == 1 and "refused the credentials (401)" in bad.stderr
