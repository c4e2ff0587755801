"""The columnar snapshot of confirmed membership: used while current, ignored once membership changed."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from cohortflow.sync import load_workspace, run_sync
from tests.sync.support import FakeBraze, Warehouse, write_workspace


def test_a_snapshot_is_used_while_current_and_ignored_once_membership_changed(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str
) -> None:
    fake.users = {f"u{i}" for i in range(60)}
    warehouse.set_range(range(50))
    path = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
    )
    with load_workspace(path, state_url=state_url) as ws:
        store = ws.store
        assert store.snapshots is not None
        assert run_sync(ws, "vip").status == "succeeded"
        # The successful run left a snapshot of exactly what it confirmed.
        current = store.snapshots.find("vip", store.members_token("vip"))
        assert current is not None
        copied = {(r["kind"], r["label"], r["value"]) for r in pq.read_table(current).to_pylist()}
        assert copied == store.confirmed_set("vip") == {("e", "", f"u{i}") for i in range(50)}

        # Membership changing outside a completed run (as when a run is killed after some commits)
        # makes the snapshot stale: the next plan reads the database and still sees the truth.
        with store.transaction() as conn:
            store.confirm(conn, "vip", "remove", [("e", "", "u3"), ("e", "", "u7")])
        assert store.snapshots.find("vip", store.members_token("vip")) is None
        warehouse.set_range([*range(50), 55])
        dry = run_sync(ws, "vip", dry_run=True)
        assert dry.counts["adds"] == 3 and dry.counts["removes"] == 0 and dry.counts["confirmed"] == 48
        assert dry.samples["adds"] == ["external_id u3", "external_id u55", "external_id u7"]
        # Reading the database wrote a current snapshot, which the next plans use.
        assert store.snapshots.find("vip", store.members_token("vip")) is not None

        fake.log.clear()
        result = run_sync(ws, "vip")
        assert result.status == "succeeded" and result.counts["added"] == 3
        assert sorted(v for _, v, _ in fake.sent()) == ["u3", "u55", "u7"]
        assert store.snapshots.find("vip", store.members_token("vip")) is not None

        idle = run_sync(ws, "vip", dry_run=True)
        assert idle.counts["adds"] == 0 and idle.counts["removes"] == 0 and idle.counts["desired"] == 51

        # A run that ends partial because the destination rejects an identifier still leaves a current
        # snapshot: what it acknowledged, without what it was refused.
        fake.bad_values = {"u57"}
        warehouse.set_range([*range(2, 50), 55, 56, 57])
        partial = run_sync(ws, "vip")
        assert partial.status == "partial" and partial.counts["added"] == 1 and partial.counts["removed"] == 2
        current = store.snapshots.find("vip", store.members_token("vip"))
        assert current is not None
        copied = {(r["kind"], r["label"], r["value"]) for r in pq.read_table(current).to_pylist()}
        assert copied == store.confirmed_set("vip") == {("e", "", f"u{i}") for i in [*range(2, 50), 55, 56]}
        again = run_sync(ws, "vip", dry_run=True)
        assert again.counts["adds"] == 1 and again.counts["retried_adds"] == 1 and again.counts["removes"] == 0
