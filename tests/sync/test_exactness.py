"""Exactness under uncertainty: a cohort never silently drifts from its model.

Answers lost after the destination applied a batch, retries that run out, a warehouse that changes (and
changes back) between runs, a 2xx that is not a success: whatever happened, the next clean run leaves the
cohort equal to the model's matched users, and `--reconcile` repairs drift made behind the sync's back.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.cli import cli as root_cli
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.sync import list_runs, load_workspace, run_sync
from cohortflow.wire import Messages
from tests.support import ServerProcess, Tenant
from tests.sync.support import FakeBraze, FaultProxy, Warehouse, platform_members, seed_users, write_workspace

COHORT = "cohortflow-vip"


def _fake_workspace(tmp_path: Path, fake: FakeBraze, **kwargs: Any) -> Path:
    return write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        **kwargs,
    )


def _ids(model: set[int] | range) -> set[tuple[str, str, str]]:
    return {("e", "", f"u{i}") for i in model}


def _cli(path: Path, state_url: str, *args: str) -> Any:
    return CliRunner().invoke(root_cli, ["sync", "-f", str(path), "--state-url", state_url, *args])


# ------------------------------------------------------------------ lost answers, then the warehouse reverses


def test_an_add_applied_but_unanswered_is_removed_when_the_row_leaves(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(100)}
    path = _fake_workspace(
        tmp_path, fake, destination={"batch_size": 10, "concurrency": 1, "retry": {"max_attempts": 2}}
    )
    with load_workspace(path, state_url=sqlite_state) as ws:
        warehouse.set_range(range(50))
        assert run_sync(ws, "vip").status == "succeeded"
        # Rows 50-59 join; their batch is applied twice, and both answers are lost: retries run out.
        warehouse.set_range(range(60))
        fake.fail_next = ["lost", "lost"]
        result = run_sync(ws, "vip")
        assert result.status == "partial"
        assert fake.members[COHORT] == {f"u{i}" for i in range(60)}  # applied...
        assert ws.store.confirmed_set("vip") == _ids(range(50))  # ...but never confirmed
        assert ws.store.uncertain_count("vip") == 10
        # The warehouse reverses before the next run: those ten must leave the cohort.
        warehouse.set_range(range(50))
        result = run_sync(ws, "vip")
        assert result.status == "succeeded", result.message
        assert result.counts["uncertain"] == 10 and result.counts["removes"] == 10
        assert fake.members[COHORT] == {f"u{i}" for i in range(50)}
        assert ws.store.confirmed_set("vip") == _ids(range(50))
        assert ws.store.uncertain_count("vip") == 0
        # Settled: the next run has nothing to do.
        assert run_sync(ws, "vip").counts["adds"] == 0


def test_a_remove_applied_but_unanswered_is_re_added_when_the_row_returns(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(100)}
    path = _fake_workspace(
        tmp_path,
        fake,
        destination={"batch_size": 10, "concurrency": 1, "timeout_seconds": 0.2, "retry": {"max_attempts": 1}},
    )
    with load_workspace(path, state_url=sqlite_state) as ws:
        warehouse.set_range(range(40))
        assert run_sync(ws, "vip").status == "succeeded"
        warehouse.set_range(range(30))
        fake.fail_next = ["timeout"]
        fake.timeout_sleep = 0.5
        assert run_sync(ws, "vip").status == "partial"
        assert fake.members[COHORT] == {f"u{i}" for i in range(30)}
        warehouse.set_range(range(40))  # the ten come back
        result = run_sync(ws, "vip")
        assert result.status == "succeeded", result.message
        assert fake.members[COHORT] == {f"u{i}" for i in range(40)}
        assert ws.store.confirmed_set("vip") == _ids(range(40))


def test_full_resync_removes_uncertain_members_the_model_lacks(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(100)}
    path = _fake_workspace(
        tmp_path, fake, destination={"batch_size": 10, "concurrency": 1, "retry": {"max_attempts": 1}}
    )
    with load_workspace(path, state_url=sqlite_state) as ws:
        warehouse.set_range(range(20))
        fake.fail_next = ["lost"]  # the first batch (u0-u9, in order u0, u1, u10...) applied, unanswered
        assert run_sync(ws, "vip").status == "partial"
        warehouse.set_range(range(10, 30))
        result = run_sync(ws, "vip", full_resync=True)
        assert result.status == "succeeded", result.message
        assert fake.members[COHORT] == {f"u{i}" for i in range(10, 30)}
        assert ws.store.confirmed_set("vip") == _ids(range(10, 30))


# ------------------------------------------------------------------ a success is a success


@pytest.mark.parametrize("answer", [(201, {}), (200, None), (201, {"message": "queued"}), (202, "ok")])
def test_a_2xx_without_brazes_success_body_is_not_a_delivery(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str, answer: tuple[int, Any]
) -> None:
    fake.users = {f"u{i}" for i in range(30)}
    warehouse.set_range(range(30))
    fake.answer_override = answer
    path = _fake_workspace(tmp_path, fake, destination={"batch_size": 10})
    result = _cli(path, sqlite_state, "run", "vip", "--no-progress")
    assert result.exit_code == 1
    assert f"POST {fake.url}/partners/hightouch/cohorts/users answered {answer[0]}" in result.output
    assert 'without Braze\'s success body {"message": "success"}' in result.output
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert ws.store.confirmed_set("vip") == set()
        assert ws.store.uncertain_count("vip") > 0
        fake.answer_override = None
        assert run_sync(ws, "vip").status == "succeeded"
        assert fake.members[COHORT] == {f"u{i}" for i in range(30)}
        assert ws.store.confirmed_set("vip") == _ids(range(30))


def test_a_receiver_that_counts_another_number_did_not_apply_the_batch(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(30)}
    warehouse.set_range(range(30))
    fake.miscount = -1
    path = _fake_workspace(tmp_path, fake, destination={"batch_size": 10, "concurrency": 1})
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert "reported received=9 for a request of 10 identifier(s)" in (result.message or "")
        fake.miscount = 0
        assert run_sync(ws, "vip").status == "succeeded"
        assert ws.store.confirmed_set("vip") == _ids(range(30))


# ------------------------------------------------------------------ quarantine


def test_rejected_identifiers_are_quarantined_listed_and_retried_on_demand(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(50)}
    fake.bad_values = {"u7"}
    warehouse.set_range(range(50))
    path = _fake_workspace(tmp_path, fake, sync={"quarantine_after_runs": 2})
    first = _cli(path, sqlite_state, "run", "vip", "--no-progress")
    assert first.exit_code == 3, first.output  # partial: the next run tries u7 again
    second = _cli(path, sqlite_state, "run", "vip", "--no-progress", "--json")
    assert second.exit_code == 0, second.output
    counts = json.loads(second.output)["counts"]
    assert counts["newly_quarantined"] == 1 and counts["adds"] == 1
    third = _cli(path, sqlite_state, "run", "vip", "--no-progress", "--json")
    assert third.exit_code == 0
    counts = json.loads(third.output)["counts"]
    assert counts["quarantined"] == 1 and counts["adds"] == 0 and counts["requests"] == 0
    listing = _cli(path, sqlite_state, "rejected", "vip", "--json")
    entries = json.loads(listing.output)
    assert [(e["identifier"], e["runs"], e["quarantined"]) for e in entries] == [("external_id u7", 2, True)]
    assert entries[0]["reason"] == Messages.COHORT_CHANGES_INVALID
    assert "quarantined" in _cli(path, sqlite_state, "rejected", "vip").output
    # The destination is fixed; --retry-rejected sends u7 again and it leaves the list.
    fake.bad_values = set()
    retried = _cli(path, sqlite_state, "run", "vip", "--no-progress", "--retry-rejected", "--json")
    assert retried.exit_code == 0
    assert json.loads(retried.output)["counts"]["added"] == 1
    assert fake.members[COHORT] == {f"u{i}" for i in range(50)}
    assert json.loads(_cli(path, sqlite_state, "rejected", "vip", "--json").output) == []


def test_a_rejection_is_forgotten_once_its_row_leaves_the_model(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(20)}
    fake.bad_values = {"u3"}
    warehouse.set_range(range(20))
    path = _fake_workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").status == "partial"
        assert [r.value for r in ws.store.rejections("vip")] == ["u3"]
        warehouse.set_range([i for i in range(20) if i != 3])
        assert run_sync(ws, "vip").status == "succeeded"
        assert ws.store.rejections("vip") == []


# ------------------------------------------------------------------ property: any fault series converges


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(
            st.sets(st.integers(0, 59), max_size=60),
            st.sampled_from([0.0, 0.3, 0.7]),
            st.sampled_from(["remove", "revert"]),
        ),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
)
def test_any_series_of_faults_and_warehouse_changes_converges(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[set[int], float, str]],
    seed: int,
) -> None:
    directory = tmp_path_factory.mktemp("series")
    warehouse = Warehouse(directory / "warehouse.duckdb")
    state = f"sqlite:///{directory / 'state.db'}"
    with FakeBraze() as fake:
        fake.users = {f"u{i}" for i in range(60) if i % 4}
        fake.rng = random.Random(seed)
        fake.faults = [429, 500, "lost", "lost"]
        path = _fake_workspace(
            directory,
            fake,
            destination={
                "batch_size": 7,
                "concurrency": 2,
                "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.001, "max_backoff_seconds": 0.01},
            },
        )
        previous: set[int] = set()
        with load_workspace(path, state_url=state) as ws:
            for model, rate, shape in steps:
                # "revert": the next model undoes this step, as a warehouse fixing a bad load does.
                for current in [model, previous] if shape == "revert" else [model]:
                    warehouse.set_range(sorted(current))
                    fake.fault_rate = rate
                    run_sync(ws, "vip")
                previous = current
            fake.fault_rate = 0.0
            result = run_sync(ws, "vip")
            assert result.status == "succeeded", result.message
            assert fake.members.get(COHORT, set()) == {f"u{i}" for i in previous} & fake.users
            assert ws.store.confirmed_set("vip") == _ids(previous)
            assert ws.store.uncertain_count("vip") == 0
            idle = run_sync(ws, "vip")
            assert idle.counts["adds"] == idle.counts["removes"] == 0


# ------------------------------------------------------------------ the real platform behind a faulty network


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_fault_series_then_clean_runs_against_the_platform(
    tmp_path: Path,
    server: ServerProcess,
    runtime: PlatformRuntime,
    tenant: Tenant,
    state_url: str,
    rate: float,
) -> None:
    users = [f"u{i}" for i in range(900)]
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": u} for u in users])
    rng = random.Random(int(rate * 100))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    with FaultProxy(server.base_url, rate=rate, seed=int(rate * 1000), slow_seconds=0.6) as proxy:
        path = write_workspace(
            tmp_path,
            endpoint=proxy.url,
            partner=tenant.partner,
            partner_api_key=tenant.partner_api_key,
            data_import_key=tenant.client_secret,
            destination={
                "batch_size": 40,
                "concurrency": 3,
                "timeout_seconds": 0.3,
                "retry": {"max_attempts": 3, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
            },
        )
        # A universe larger than the platform's users: some rows never match.
        universe = list(range(1000))
        history: list[set[int]] = [set(rng.sample(universe, 500))]
        statuses = []
        with load_workspace(path, state_url=state_url) as ws:
            for step in range(8):
                if step % 3 == 2:
                    model = history[-2]  # the warehouse changes back
                else:
                    model = set(history[-1])
                    flips = rng.sample(universe, 120)
                    model ^= set(flips)
                history.append(model)
                warehouse.set_range(sorted(model))
                statuses.append(run_sync(ws, "vip").status)
            proxy.rate = 0.0
            for _ in range(2):
                result = run_sync(ws, "vip")
                assert result.status == "succeeded", result.message
                expected = {f"u{i}" for i in history[-1]} & set(users)
                assert platform_members(runtime, tenant.workspace_id, COHORT) == expected
                assert ws.store.confirmed_set("vip") == _ids(history[-1])
                assert ws.store.uncertain_count("vip") == 0
            assert result.counts["adds"] == result.counts["removes"] == 0  # the second clean run is idle
    assert {"lost", "slow", "drop"} <= set(proxy.counts), proxy.counts
    if rate > 0.5:
        assert "partial" in statuses or "failed" in statuses  # retries did run out along the way


def test_a_broken_proxy_answering_201_without_forwarding(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, sqlite_state: str
) -> None:
    seed_users(server.base_url, tenant.rest_api_key, [{"external_id": f"u{i}"} for i in range(20)])
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.set_range(range(20))
    with FaultProxy(server.base_url) as proxy:
        proxy.answer = (201, {})
        path = write_workspace(
            tmp_path,
            endpoint=proxy.url,
            partner=tenant.partner,
            partner_api_key=tenant.partner_api_key,
            data_import_key=tenant.client_secret,
            cohort={"mode": "existing", "cohort_id": COHORT},
        )
        with load_workspace(path, state_url=sqlite_state) as ws:
            result = run_sync(ws, "vip")
            assert result.status == "failed"
            assert f"{proxy.url}/partners/{tenant.partner}/cohorts/users answered 201" in (result.message or "")
            assert ws.store.confirmed_set("vip") == set()
            proxy.answer = None
            assert run_sync(ws, "vip").status == "succeeded"
    assert platform_members(runtime, tenant.workspace_id, COHORT) == {f"u{i}" for i in range(20)}


# ------------------------------------------------------------------ reconcile: drift made behind the sync's back


def test_reconcile_repairs_drift_both_ways_and_reports_it(
    tmp_path: Path, server: ServerProcess, runtime: PlatformRuntime, tenant: Tenant, state_url: str
) -> None:
    base = server.base_url
    seed_users(base, tenant.rest_api_key, [{"external_id": f"u{i}"} for i in range(300)])
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(
            "/users/alias/new",
            json={"user_aliases": [{"alias_name": "stray@example.com", "alias_label": "email"}]},
            headers={"authorization": f"Bearer {tenant.rest_api_key}"},
        )
        assert r.status_code == 201, r.text
        assert c.post("/sdk/data", json={"api_key": tenant.app_key, "device_id": "stray-device"}).status_code == 201
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.set_range(range(200))
    path = write_workspace(
        tmp_path,
        endpoint=base,
        partner=tenant.partner,
        partner_api_key=tenant.partner_api_key,
        data_import_key=tenant.client_secret,
    )
    assert _cli(path, state_url, "run", "vip", "--no-progress").exit_code == 0
    # Someone else edits the cohort through the partner API: 15 members vanish, 20 strangers (one known only
    # by an alias, one anonymous device) appear. The sync's state still believes in its own history.
    lost = [f"u{i}" for i in range(0, 150, 10)]
    strangers = [f"u{i}" for i in range(250, 268)]
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(
            f"/partners/{tenant.partner}/cohorts/users",
            json={
                **tenant.creds(),
                "cohort_id": COHORT,
                "cohort_changes": [
                    {"user_ids": lost, "should_remove": True},
                    {
                        "user_ids": strangers,
                        "device_ids": ["stray-device"],
                        "aliases": [{"alias_name": "stray@example.com", "alias_label": "email"}],
                    },
                ],
            },
        )
        assert r.status_code == 201 and r.json()["removed"] == 15 and r.json()["added"] == 20, r.text
    expected = {f"u{i}" for i in range(200)}
    assert platform_members(runtime, tenant.workspace_id, COHORT) != expected
    # A normal run cannot see it: its state says nothing changed.
    normal = json.loads(_cli(path, state_url, "run", "vip", "--no-progress", "--json").output)
    assert normal["counts"]["adds"] == normal["counts"]["removes"] == 0
    # A dry run reports the drift and changes nothing.
    dry = json.loads(_cli(path, state_url, "run", "vip", "--reconcile", "--dry-run", "--json").output)
    assert dry["counts"]["reconcile"] == {"members": 205, "unwanted_members": 20, "to_add": 15, "to_remove": 20}
    assert len(platform_members(runtime, tenant.workspace_id, COHORT)) == 205
    fixed = _cli(path, state_url, "run", "vip", "--reconcile", "--no-progress", "--json")
    assert fixed.exit_code == 0, fixed.output
    counts = json.loads(fixed.output)["counts"]
    assert counts["members_added"] == 15 and counts["members_removed"] == 20
    assert platform_members(runtime, tenant.workspace_id, COHORT) == expected
    text = _cli(path, state_url, "run", "vip", "--reconcile", "--no-progress")
    assert "reconcile: the cohort held 200 member(s), 0 not in the model; planned +0 -0" in text.output
    with load_workspace(path, state_url=state_url) as ws:
        assert ws.store.confirmed_set("vip") == _ids(range(200))
        idle = run_sync(ws, "vip")
    assert idle.counts["adds"] == idle.counts["removes"] == 0


def test_reconcile_needs_a_destination_that_can_export(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    warehouse.set_range(range(5))
    path = _fake_workspace(tmp_path, fake)
    result = _cli(path, sqlite_state, "run", "vip", "--reconcile", "--no-progress")
    assert result.exit_code == 1
    assert f"error: {fake.url} offers no cohort export" in result.output
    assert "real Braze has no such API" in result.output


# ------------------------------------------------------------------ one-line errors, masked credentials


def test_an_unreachable_state_database_is_one_line_without_its_password(tmp_path: Path, fake: FakeBraze) -> None:
    path = _fake_workspace(tmp_path, fake)
    result = _cli(path, "postgresql://cf:s3cret@127.0.0.1:1/state", "runs", "vip")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot use the sync state database postgresql://***@"), lines
    assert "s3cret" not in result.output


def test_credentials_in_an_endpoint_url_are_never_stored_or_printed(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"u1"}
    warehouse.set_range(range(3))
    endpoint = fake.url.replace("http://", "http://proxyuser:pr0xy-pass@")
    path = write_workspace(
        tmp_path,
        endpoint=endpoint,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
    )
    outputs = [
        _cli(path, sqlite_state, "run", "vip", "--no-progress").output,
        _cli(path, sqlite_state, "destinations", "test", "platform").output,
    ]
    fake.answer_override = (201, {})
    outputs.append(_cli(path, sqlite_state, "run", "vip", "--full-resync", "--no-progress").output)
    with load_workspace(path, state_url=sqlite_state) as ws:
        state = ws.store.get("vip")
        assert state is not None
        outputs.append(state.target)
        for run in (r.id for r in list_runs(ws.store, "vip")):
            outputs.append(_cli(path, sqlite_state, "run-show", run, "--json").output)
    assert "***@127.0.0.1" in outputs[0]
    assert all("pr0xy-pass" not in o and "proxyuser" not in o for o in outputs), outputs


def test_a_new_endpoint_url_for_the_same_cohort_still_removes_departed_members(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(40)}
    warehouse.set_range(range(30))
    path = _fake_workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").counts["added"] == 30
    # The same Braze behind another URL (a proxy, a new DNS name), and ten rows left the model meanwhile.
    path.write_text(path.read_text().replace("http://127.0.0.1:", "http://localhost:"))
    warehouse.set_range(range(10, 30))
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "succeeded", result.message
        assert (result.counts["adds"], result.counts["removes"], result.counts["uncertain"]) == (20, 10, 30)
        assert ws.store.confirmed_set("vip") == _ids(range(10, 30))
        assert ws.store.uncertain_count("vip") == 0
    assert fake.members[COHORT] == {f"u{i}" for i in range(10, 30)}
