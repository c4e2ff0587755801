"""The engine against a fault-injecting Braze on loopback: retries, 400 isolation, 401, bad models, dry runs.

State is SQLite here; the PostgreSQL state backend is covered by the end-to-end and crash tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cohortflow.sync import get_run, list_runs, load_workspace, run_sync
from cohortflow.sync.errors import SyncLocked
from cohortflow.sync.runs import FAILED, acquire_lock, create_run
from cohortflow.wire import Messages
from tests.support import free_port
from tests.sync.support import FakeBraze, Warehouse, write_workspace


def _workspace(tmp_path: Path, fake: FakeBraze, **kwargs: Any) -> Path:
    return write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        **kwargs,
    )


def _expected(model_ids: range | list[int], users: set[str]) -> set[str]:
    return {f"u{i}" for i in model_ids} & users


def test_faults_converge_and_retry_after_is_honoured(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(0, 4000, 3)}
    fake.fault_rate = 0.2
    fake.retry_after = 0.2
    fake.timeout_sleep = 0.6
    path = _workspace(tmp_path, fake, destination={"timeout_seconds": 0.3, "batch_size": 200})
    series = [range(0, 2000), range(300, 2600), range(0, 2600, 2)]
    with load_workspace(path, state_url=sqlite_state) as ws:
        for model_ids in series:
            warehouse.set_range(model_ids)
            result = run_sync(ws, "vip")
            assert result.status == "succeeded", result.message
            assert fake.members["cohortflow-vip"] == _expected(model_ids, fake.users)
            assert ws.store.confirmed_set("vip") == {("e", "", f"u{i}") for i in model_ids}
        total_retried = sum(r.counts["retried_requests"] for r in list_runs(ws.store, "vip"))
    statuses = [r.status for r in fake.log]
    assert total_retried > 0 and {429, 423, 500, 0} <= set(statuses)
    # Every answer carrying Retry-After was followed by the same request no sooner than it asked.
    checked = 0
    for i, record in enumerate(fake.log):
        if record.status in (429, 423, 500) and record.identifiers:
            retry = next(r for r in fake.log[i + 1 :] if r.identifiers == record.identifiers)
            assert retry.at - record.at >= 0.2 - 0.01
            checked += 1
    assert checked > 0


def test_one_bad_identifier_in_a_batch_of_1000(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(1000)}
    fake.bad_values = {"u437"}
    warehouse.set_range(range(1000))
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "partial"
        assert result.counts["added"] == 999
        assert result.counts["rejected_by_destination"] == {Messages.COHORT_CHANGES_INVALID: 1}
        assert fake.members["cohortflow-vip"] == {f"u{i}" for i in range(1000)} - {"u437"}
        assert ("e", "", "u437") not in ws.store.confirmed_set("vip")
        assert len(ws.store.confirmed_set("vip")) == 999
        assert result.errors == [
            {"reason": f"rejected: {Messages.COHORT_CHANGES_INVALID}", "count": 1, "samples": ["external_id u437"]}
        ]
        # Halving isolates one identifier among 1,000 in about 2*log2(1000) requests, not 1,000.
        assert len(fake.membership_requests()) <= 25
        # The next run retries only the rejected identifier, and counts it as a retry.
        again = run_sync(ws, "vip")
        assert again.counts["adds"] == 1 and again.counts["retried_adds"] == 1
        fake.bad_values = set()
        third = run_sync(ws, "vip")
        assert third.status == "succeeded" and third.counts["added"] == 1
        assert fake.members["cohortflow-vip"] == {f"u{i}" for i in range(1000)}


def test_wrong_or_invalidated_key_stops_the_run_and_changes_no_state(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(3000)}
    warehouse.set_range(range(500))
    path = _workspace(tmp_path, fake, destination={"batch_size": 100, "concurrency": 2})
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").status == "succeeded"
        before = ws.store.confirmed_set("vip")
        fake.client_secret = "rotated"  # the key in the file is now invalid
        warehouse.set_range(range(100, 3000))
        requests_before = len(fake.log)
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message is not None and "Invalid client secret" in result.message
        assert ws.store.confirmed_set("vip") == before
        assert len(fake.log) - requests_before == 1  # stopped at the first 401
        assert get_run(ws.store, result.run_id).status == "failed"
    # The CLI says so clearly and exits non-zero.
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow", "sync", "-f", str(path), "--state-url", sqlite_state, "run", "vip"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "the destination refused the credentials (401): Invalid client secret" in proc.stderr


def test_duplicate_primary_keys_fail_the_run_with_samples(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"a", "b", "c"}
    warehouse.set_rows([{"id": "1", "uid": "a"}, {"id": "2", "uid": "b"}])
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").status == "succeeded"
        before, sent = ws.store.confirmed_set("vip"), len(fake.log)
        warehouse.set_rows(
            [
                {"id": "1", "uid": "a"},
                {"id": "1", "uid": "c"},
                {"id": "2", "uid": "b"},
                {"id": "2", "uid": "x"},
                {"id": "3", "uid": "c"},
            ]
        )
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message == "the model's primary key 'id' is not unique: 2 duplicated value(s), e.g. 1, 2"
        assert result.errors[-1]["samples"] == ["1", "2"]
        assert ws.store.confirmed_set("vip") == before and len(fake.log) == sent


def test_null_and_invalid_identifiers_are_rejected_rows_counted_by_reason(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"good1", "good2"}
    warehouse.set_rows(
        [
            {"id": "1", "uid": "good1"},
            {"id": "2", "uid": None},
            {"id": "3", "uid": "   "},
            {"id": "4", "uid": "bad\x01id"},
            {"id": "5", "uid": "x" * 600},
            {"id": "6", "uid": "good2"},
            {"id": "7", "uid": None},
            {"id": None, "uid": "good3"},
        ]
    )
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
    assert result.status == "succeeded"
    assert result.counts["rejected"] == {
        "control_characters": 1,
        "empty_identifier": 1,
        "identifier_too_long": 1,
        "null_identifier": 2,
        "null_primary_key": 1,
    }
    assert {"reason": "rejected row: null_identifier", "count": 2, "samples": ["primary key 2", "primary key 7"]} in (
        result.errors
    )
    assert result.counts["added"] == 2 and fake.members["cohortflow-vip"] == {"good1", "good2"}
    # Nothing invalid ever reached the wire.
    assert {v for _, v, _ in fake.sent()} == {"good1", "good2"}


def test_a_source_that_is_down_fails_clearly_and_changes_nothing(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"u1"}
    warehouse.set_range(range(3))
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").status == "succeeded"
        before = ws.store.confirmed_set("vip")
    warehouse.path.rename(tmp_path / "moved.duckdb")
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message is not None and "DuckDB file" in result.message and "does not exist" in result.message
        assert ws.store.confirmed_set("vip") == before
    port = free_port()  # nothing listens there
    pg = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        model={"source": "pg", "table": "customers", "primary_key": "id"},
    )
    text = pg.read_text().replace(
        "sources:\n", f"sources:\n  pg:\n    type: postgres\n    url: postgresql://u:secret@127.0.0.1:{port}/wh\n", 1
    )
    pg.write_text(text)
    with load_workspace(pg, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message is not None and "is unavailable" in result.message
        assert "secret" not in result.message  # the password is never printed
        assert ws.store.confirmed_set("vip") == before


def test_dry_run_sends_nothing_and_full_resync_still_removes(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(100)}
    warehouse.set_range(range(50))
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        plan = run_sync(ws, "vip", dry_run=True)
        assert plan.status == "succeeded" and plan.counts["adds"] == 50 and fake.log == []
        assert plan.samples["adds"][:2] == ["external_id u0", "external_id u1"]
        assert ws.store.confirmed_set("vip") == set()
        run_sync(ws, "vip")
        warehouse.set_range(range(10, 60))
        fake.log.clear()
        result = run_sync(ws, "vip", full_resync=True)
        assert result.counts["adds"] == 50 and result.counts["removes"] == 10
        assert sorted(v for _, v, rm in fake.sent() if not rm) == sorted(f"u{i}" for i in range(10, 60))
        assert sorted(v for _, v, rm in fake.sent() if rm) == sorted(f"u{i}" for i in range(10))
        assert fake.members["cohortflow-vip"] == {f"u{i}" for i in range(10, 60)}


def test_keep_leaves_departed_members(tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str) -> None:
    fake.users = {f"u{i}" for i in range(10)}
    warehouse.set_range(range(10))
    path = _workspace(tmp_path, fake, sync={"on_row_removed": "keep"})
    with load_workspace(path, state_url=sqlite_state) as ws:
        run_sync(ws, "vip")
        warehouse.set_range(range(5))
        result = run_sync(ws, "vip")
        assert result.counts["removes"] == 0 and result.counts["requests"] == 0
        assert fake.members["cohortflow-vip"] == {f"u{i}" for i in range(10)}


def test_one_run_at_a_time_and_a_dead_holder_is_taken_over(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    warehouse.set_range(range(3))
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        holder = create_run(ws.store, "vip", dry_run=False, full_resync=False)
        acquire_lock(ws.store, "vip", holder)
        other = create_run(ws.store, "vip", dry_run=False, full_resync=False)
        with pytest.raises(SyncLocked):
            acquire_lock(ws.store, "vip", other)
        # A holder whose process is gone (kill -9) does not block the next run; its record is closed.
        sleeper = subprocess.Popen([sys.executable, "-c", "pass"])
        sleeper.wait()
        with ws.store.transaction() as conn:
            from sqlalchemy import update

            from cohortflow.sync.state.schema import sync_locks

            conn.execute(update(sync_locks).values(pid=sleeper.pid))
        result = run_sync(ws, "vip")
        assert result.status == "succeeded"
        assert get_run(ws.store, holder).status == FAILED
        assert "abandoned" in (get_run(ws.store, holder).message or "")


def test_identifier_changes_rename_and_idle_runs_send_only_changes(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"a", "b", "c", "d", "b2"}
    warehouse.set_rows([{"id": "1", "uid": "a"}, {"id": "2", "uid": "b"}, {"id": "3", "uid": "c"}])
    path = _workspace(tmp_path, fake)
    with load_workspace(path, state_url=sqlite_state) as ws:
        run_sync(ws, "vip")
        assert fake.names == {"cohortflow-vip": "VIP customers"}
        fake.log.clear()
        idle = run_sync(ws, "vip")
        assert idle.status == "succeeded" and idle.counts["requests"] == 0 and fake.log == []
        warehouse.set_rows([{"id": "1", "uid": "a"}, {"id": "2", "uid": "b2"}, {"id": "4", "uid": "d"}])
        changed = run_sync(ws, "vip")
        assert sorted(fake.sent()) == [("e", "b", True), ("e", "b2", False), ("e", "c", True), ("e", "d", False)]
        assert changed.counts["requests"] == 3  # name once, one remove batch, one add batch
        assert fake.members["cohortflow-vip"] == {"a", "b2", "d"}
    renamed = path.read_text().replace("VIP customers", "Very important")
    path.write_text(renamed)
    fake.log.clear()
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.counts["requests"] == 1 and [r.path for r in fake.log] == ["/partners/hightouch/cohorts"]
        assert fake.names == {"cohortflow-vip": "Very important"}


def test_fallback_identifiers_with_alias_and_device(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {"ext1"}
    fake.aliases = {("email", "ann@example.com"): "user-ann"}
    fake.devices = {"dev-9": "anon-9"}
    warehouse.set_rows(
        [
            {"id": "1", "uid": "ext1", "email": "x@example.com", "device": "dev-1"},
            {"id": "2", "uid": None, "email": "ann@example.com", "device": "dev-2"},
            {"id": "3", "uid": None, "email": None, "device": "dev-9"},
            {"id": "4", "uid": None, "email": None, "device": None},
        ]
    )
    identifier = {
        "fallback": [
            {"external_id": "uid"},
            {"alias": {"name_column": "email", "label": "email"}},
            {"device_id": "device"},
        ]
    }
    path = _workspace(tmp_path, fake, identifier=identifier)
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert ws.store.confirmed_set("vip") == {
            ("e", "", "ext1"),
            ("a", "email", "ann@example.com"),
            ("d", "", "dev-9"),
        }
    assert result.counts["rejected"] == {"null_identifier": 1}
    assert fake.members["cohortflow-vip"] == {"ext1", "user-ann", "anon-9"}


def test_a_wrong_partner_path_fails_clearly(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    warehouse.set_range(range(3))
    path = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner="nosuchpartner",
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        cohort={"mode": "existing", "cohort_id": "c1"},
    )
    with load_workspace(path, state_url=sqlite_state) as ws:
        result = run_sync(ws, "vip")
        assert result.status == "failed"
        assert result.message == "updating the cohort: the destination answered 404: Not found"
        assert ws.store.confirmed_set("vip") == set()
        assert len(fake.log) == 1  # not split, not retried


def test_a_new_target_receives_the_whole_model(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, sqlite_state: str
) -> None:
    fake.users = {f"u{i}" for i in range(20)}
    warehouse.set_range(range(20))
    path = _workspace(tmp_path, fake, cohort={"mode": "existing", "cohort_id": "first"})
    with load_workspace(path, state_url=sqlite_state) as ws:
        assert run_sync(ws, "vip").counts["added"] == 20
    path.write_text(path.read_text().replace("cohort_id: first", "cohort_id: second"))
    with load_workspace(path, state_url=sqlite_state) as ws:
        dry = run_sync(ws, "vip", dry_run=True)
        assert (dry.counts["confirmed"], dry.counts["adds"]) == (0, 20)
        assert len(ws.store.confirmed_set("vip")) == 20  # a dry run changes no state
        result = run_sync(ws, "vip")
        assert (result.counts["added"], result.counts["removed"]) == (20, 0)
    assert fake.members["first"] == fake.members["second"] == {f"u{i}" for i in range(20)}
    assert "first" not in fake.names or fake.names["first"] == "first"  # never renamed: mode existing
