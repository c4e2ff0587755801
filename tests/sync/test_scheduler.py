"""Schedules with an injectable clock, claiming queued runs under the cap, cancelling a running run."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cohortflow.sync import get_run, load_workspace, run_sync
from cohortflow.sync.config import CronSchedule, IntervalSchedule
from cohortflow.sync.errors import ConfigError, RunFinished, SyncDisabled
from cohortflow.sync.queue import beat, claim_next, enqueue_run
from cohortflow.sync.runner import Runner
from cohortflow.sync.runs import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    RunOptions,
    finish_run,
    release_lock,
    request_cancel,
)
from cohortflow.sync.scheduler import describe_schedule, next_fire, tick
from cohortflow.sync.state.schema import sync_locks, sync_runs
from cohortflow.sync.workspace import LiveWorkspace, Workspace
from tests.sync.service_support import FakeClock, workspace_doc, write_doc
from tests.sync.support import FakeBraze, Warehouse


def _open(
    tmp_path: Path, fake: FakeBraze, syncs: dict[str, dict[str, Any]], state_url: str, clock: FakeClock
) -> Workspace:
    ws = load_workspace(write_doc(tmp_path, workspace_doc(fake, syncs)), state_url=state_url)
    ws.store.clock = clock
    return ws


def _queued(ws: Workspace) -> list[tuple[str, str]]:
    with ws.store.engine.connect() as conn:
        rows = conn.execute(
            select(sync_runs.c.sync_name, sync_runs.c.trigger)
            .where(sync_runs.c.status == QUEUED)
            .order_by(sync_runs.c.requested_at, sync_runs.c.sync_name)
        ).all()
    return [(r[0], r[1]) for r in rows]


def _finish_queued(ws: Workspace, status: str = SUCCEEDED) -> None:
    """Pretend every queued run ran and ended ``status`` (the scheduler only reads the records)."""
    with ws.store.transaction() as conn:
        conn.execute(
            update(sync_runs).where(sync_runs.c.status == QUEUED).values(status=status, finished_at=ws.store.clock())
        )


def test_schedule_validation_names_the_key(tmp_path: Path, fake: FakeBraze) -> None:
    cases = {
        "bad cron": ({"type": "cron", "expression": "every day"}, "not a five-field cron expression"),
        "bad zone": ({"type": "cron", "expression": "0 6 * * *", "timezone": "Mars/Base"}, "unknown time zone"),
        "unknown": ({"type": "after", "sync": "nope"}, "unknown sync 'nope'"),
        "zero": ({"type": "interval", "minutes": 0}, "greater than 0"),
        "kind": ({"type": "hourly"}, "syncs.a.schedule"),
    }
    for label, (schedule, message) in cases.items():
        path = write_doc(tmp_path, workspace_doc(fake, {"a": {"schedule": schedule}}))
        with pytest.raises(ConfigError) as err:
            load_workspace(path)
        assert message in err.value.message and "cohortflow.yaml:" in err.value.message, (label, err.value.message)
    cycle = {"a": {"schedule": {"type": "after", "sync": "b"}}, "b": {"schedule": {"type": "after", "sync": "a"}}}
    with pytest.raises(ConfigError, match="form a cycle"):
        load_workspace(write_doc(tmp_path, workspace_doc(fake, cycle)))


def test_next_fire_and_descriptions() -> None:
    paris = CronSchedule(type="cron", expression="0 9 * * *", timezone="Europe/Paris")
    winter = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    assert next_fire(paris, winter) == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert next_fire(paris, summer) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert next_fire(IntervalSchedule(type="interval", minutes=15), winter) == datetime(2026, 1, 5, 7, 15, tzinfo=UTC)
    assert describe_schedule(IntervalSchedule(type="interval", minutes=120)) == "every 2 hours"
    assert describe_schedule(paris) == "cron 0 9 * * * (Europe/Paris)"


def test_interval_runs_at_once_then_every_n_minutes_and_missed_runs_run_once(
    tmp_path: Path, fake: FakeBraze, state_url: str
) -> None:
    clock = FakeClock()
    syncs = {"every": {"schedule": {"type": "interval", "minutes": 15}}, "manual": {}}
    with _open(tmp_path, fake, syncs, state_url, clock) as ws:
        assert [s for s, _ in tick(ws)] == ["every"]  # never ran: due at once
        assert tick(ws) == []
        _finish_queued(ws)
        clock.advance(minutes=14)
        assert tick(ws) == []
        clock.advance(minutes=1)
        assert [s for s, _ in tick(ws)] == ["every"]
        # Due while the previous run still waits: one queued run, not two.
        clock.advance(minutes=15)
        assert tick(ws) == [] and _queued(ws) == [("every", "schedule")]
        _finish_queued(ws)
        # The service was down for three hours: twelve runs missed, one queued.
        clock.advance(hours=3)
        assert len(tick(ws)) == 1
        assert tick(ws) == []
        _finish_queued(ws)
        clock.advance(minutes=15)
        assert len(tick(ws)) == 1


def test_cron_schedule_fires_in_its_time_zone(tmp_path: Path, fake: FakeBraze, state_url: str) -> None:
    clock = FakeClock(datetime(2026, 1, 5, 7, 0, tzinfo=UTC))  # 08:00 in Paris
    syncs = {"morning": {"schedule": {"type": "cron", "expression": "0 9 * * *", "timezone": "Europe/Paris"}}}
    with _open(tmp_path, fake, syncs, state_url, clock) as ws:
        assert tick(ws) == []
        clock.advance(minutes=59)
        assert tick(ws) == []
        clock.advance(minutes=1)  # 09:00 Paris
        assert _names(tick(ws)) == ["morning"]
        _finish_queued(ws)
        clock.advance(hours=23, minutes=59)
        assert tick(ws) == []
        clock.advance(minutes=1)
        assert _names(tick(ws)) == ["morning"]


def _names(pairs: list[tuple[str, str]]) -> list[str]:
    return [s for s, _ in pairs]


def test_after_schedule_fires_once_per_upstream_success(tmp_path: Path, fake: FakeBraze, state_url: str) -> None:
    clock = FakeClock()
    syncs = {"first": {}, "second": {"schedule": {"type": "after", "sync": "first"}}}
    with _open(tmp_path, fake, syncs, state_url, clock) as ws:
        # A success from before the schedule existed does not fire it.
        enqueue_run(ws, "first", RunOptions(), "cli")
        _finish_queued(ws)
        assert tick(ws) == []
        clock.advance(minutes=1)
        enqueue_run(ws, "first", RunOptions(), "cli")
        _finish_queued(ws, FAILED)
        assert tick(ws) == []
        clock.advance(minutes=1)
        enqueue_run(ws, "first", RunOptions(), "cli")
        _finish_queued(ws)
        assert tick(ws) and _queued(ws) == [("second", "after:first")]
        assert tick(ws) == []
        # A dry run of the upstream sync is not a success that feeds a sequence.
        _finish_queued(ws)
        clock.advance(minutes=1)
        enqueue_run(ws, "first", RunOptions(dry_run=True), "cli")
        _finish_queued(ws)
        assert tick(ws) == []


def test_disabled_syncs_are_neither_scheduled_nor_triggered(tmp_path: Path, fake: FakeBraze, state_url: str) -> None:
    clock = FakeClock()
    syncs = {"off": {"enabled": False, "schedule": {"type": "interval", "minutes": 5}}}
    with _open(tmp_path, fake, syncs, state_url, clock) as ws:
        assert tick(ws) == []
        with pytest.raises(SyncDisabled, match="disabled"):
            enqueue_run(ws, "off", RunOptions(), "api")
        assert _queued(ws) == []


def test_claims_respect_the_cap_and_one_run_per_sync(tmp_path: Path, fake: FakeBraze, state_url: str) -> None:
    clock = FakeClock()
    with _open(tmp_path, fake, {"a": {}, "b": {}, "c": {}}, state_url, clock) as ws:
        store = ws.store
        first, _ = enqueue_run(ws, "a", RunOptions(), "api")
        clock.advance(seconds=1)
        again, created = enqueue_run(ws, "a", RunOptions(), "api")
        assert again == first and not created  # an identical waiting run is not queued twice
        clock.advance(seconds=1)
        dry, _ = enqueue_run(ws, "a", RunOptions(dry_run=True), "api")
        clock.advance(seconds=1)
        b_run, _ = enqueue_run(ws, "b", RunOptions(), "api")
        clock.advance(seconds=1)
        enqueue_run(ws, "c", RunOptions(), "api")
        runnable = {"a", "b", "c"}
        for worker in ("w1", "w2"):
            beat(store, worker, socket.gethostname(), os.getpid())
        one = claim_next(store, "w1", max_concurrent=2, runnable=runnable)
        two = claim_next(store, "w2", max_concurrent=2, runnable=runnable)
        assert one is not None and two is not None
        assert (one.run_id, two.run_id) == (first, b_run)  # the dry run of "a" waits for "a"
        assert claim_next(store, "w1", max_concurrent=2, runnable=runnable) is None  # the cap
        with store.engine.connect() as conn:
            locks = dict(conn.execute(select(sync_locks.c.sync_name, sync_locks.c.run_id)).all())
        assert locks == {"a": first, "b": b_run}
        finish_run(store, first, SUCCEEDED)
        release_lock(store, "a", first)
        three = claim_next(store, "w1", max_concurrent=2, runnable=runnable)
        assert three is not None and three.run_id == dry and three.options.dry_run
        assert get_run(store, dry).worker_id == "w1"


def test_cancel_stops_after_the_batches_in_flight(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str
) -> None:
    fake.users = {f"u{i}" for i in range(5000)}
    fake.delay = 0.1
    warehouse.set_range(range(5000))
    path = write_doc(tmp_path, workspace_doc(fake, {"vip": {}}, batch_size=100, concurrency=2))
    with load_workspace(path, state_url=state_url) as ws:
        run_id, _ = enqueue_run(ws, "vip", RunOptions(), "api")
        claimed = claim_next(ws.store, "w", max_concurrent=1, runnable={"vip"})
        assert claimed is not None
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(run_sync(ws, "vip", run_id=run_id)))
        thread.start()
        deadline = time.monotonic() + 30
        while len(fake.membership_requests()) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert request_cancel(ws.store, run_id).cancel_requested_at is not None
        thread.join(60)
        result = results[0]
        assert result.status == CANCELLED and "not attempted" in (result.message or "")
        record = get_run(ws.store, run_id)
        confirmed = ws.store.confirmed_set("vip")
        # Exactly what the destination acknowledged is recorded, nothing more, nothing less.
        assert {v for _, v, _ in fake.sent()} == {v for _, _, v in confirmed}
        assert record.status == CANCELLED and record.counts["added"] == len(confirmed) < 5000
        assert record.counts["not_attempted"] == 5000 - len(confirmed)
        with pytest.raises(RunFinished):
            request_cancel(ws.store, run_id)
        fake.delay = 0
        assert run_sync(ws, "vip").status == SUCCEEDED
        assert fake.members["cohortflow-vip"] == fake.users


def test_cancelling_a_queued_run_never_runs_it(tmp_path: Path, fake: FakeBraze, state_url: str) -> None:
    with _open(tmp_path, fake, {"vip": {}}, state_url, FakeClock()) as ws:
        run_id, _ = enqueue_run(ws, "vip", RunOptions(), "api")
        assert request_cancel(ws.store, run_id).status == CANCELLED
        assert claim_next(ws.store, "w", max_concurrent=1, runnable={"vip"}) is None


def test_runner_runs_queued_and_scheduled_runs(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str
) -> None:
    fake.users = {"u1", "u2"}
    warehouse.set_range(range(3))
    syncs = {"vip": {}, "nightly": {"schedule": {"type": "interval", "minutes": 60}}}
    path = write_doc(tmp_path, workspace_doc(fake, syncs))
    live = LiveWorkspace(path, state_url=state_url)
    runner = Runner(live, max_concurrent=2, poll_seconds=0.05)
    try:
        manual, _ = enqueue_run(live.current(), "vip", RunOptions(), "api")
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = {r: get_run(live.store, r).status for r in [manual]}
            nightly = [r for r in _all_runs(live) if r[0] == "nightly"]
            if runs[manual] == SUCCEEDED and nightly and nightly[0][1] == SUCCEEDED:
                break
            time.sleep(0.05)
        record = get_run(live.store, manual)
        assert record.status == SUCCEEDED and record.worker_id == runner.worker_id and record.trigger == "api"
        assert [(s, st, t) for s, st, t in _all_runs(live) if s == "nightly"] == [("nightly", SUCCEEDED, "schedule")]
        assert fake.members["cohortflow-vip"] == {"u1", "u2"}
    finally:
        runner.stop()
        live.close()


def _all_runs(live: LiveWorkspace) -> list[tuple[str, str, str | None]]:
    with live.store.engine.connect() as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(select(sync_runs.c.sync_name, sync_runs.c.status, sync_runs.c.trigger)).all()
        ]
