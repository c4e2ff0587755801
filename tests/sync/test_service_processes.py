"""Two ``cohortflow sync serve`` processes on one PostgreSQL state database share the work and never run a sync
twice at once, nor more runs at once than the global cap."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

from sqlalchemy import select

from cohortflow.clock import as_utc
from cohortflow.sync import load_workspace, run_sync
from cohortflow.sync.queue import enqueue_run
from cohortflow.sync.runs import ACTIVE_STATUSES, QUEUED, SUCCEEDED, RunOptions
from cohortflow.sync.state.schema import sync_runs
from tests.support import fresh_database
from tests.sync.service_support import start_service, workspace_doc, write_doc
from tests.sync.support import FakeBraze, Warehouse

SYNCS = [f"s{i}" for i in range(5)]
CAP = 3


def test_two_services_on_one_postgres_state_never_run_a_sync_twice(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse
) -> None:
    fake.users = {f"u{i}" for i in range(0, 1500, 2)}
    fake.delay = 0.02
    warehouse.set_range(range(1500))
    syncs = {name: {"schedule": {"type": "interval", "minutes": 0.05}} for name in SYNCS}
    path = write_doc(tmp_path, workspace_doc(fake, syncs, batch_size=100, concurrency=2))
    with fresh_database("postgres", tmp_path) as state_url:
        env = {"COHORTFLOW_SYNC__MAX_CONCURRENT_RUNS": str(CAP)}
        services = [start_service(path, state_url, env) for _ in range(2)]
        rng = random.Random(3)
        try:
            with load_workspace(path, state_url=state_url) as ws:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    # Manual triggers on top of the schedules, some full resyncs, some dry runs.
                    options = rng.choice([RunOptions(), RunOptions(full_resync=True), RunOptions(dry_run=True)])
                    enqueue_run(ws, rng.choice(SYNCS), options, "api")
                    time.sleep(0.15)
        finally:
            for service in services:
                service.stop()
        with load_workspace(path, state_url=state_url) as ws:
            with ws.store.engine.connect() as conn:
                runs = conn.execute(select(sync_runs).where(sync_runs.c.status != QUEUED)).all()
            assert not [r for r in runs if r.status in ACTIVE_STATUSES], "a run was left running"
            workers = {r.worker_id for r in runs}
            assert len(workers) == 2 and None not in workers, workers
            spans = [
                (r.sync_name, as_utc(r.started_at), as_utc(r.finished_at), r.id, r.status, r.worker_id, r.message)
                for r in runs
                if r.finished_at is not None and r.worker_id is not None
            ]
            assert len(spans) > 20
            for name in SYNCS:
                own = sorted(s for s in spans if s[0] == name)
                for before, after in itertools.pairwise(own):
                    assert after[1] >= before[2], f"{name}: run {after[3]} started before {before[3]} ended"
            # At no instant were more than CAP runs in progress across both processes.
            events = sorted([(s[1], 1) for s in spans] + [(s[2], -1) for s in spans], key=lambda e: (e[0], e[1]))
            active = peak = 0
            for when, delta in events:
                active += delta
                if active > peak:
                    peak, peak_at = active, when
            at_peak = [s for s in spans if s[1] <= peak_at < s[2]]
            assert 1 < peak <= CAP, at_peak
            # Whatever the services were doing when stopped, one more run converges every cohort.
            for name in SYNCS:
                assert run_sync(ws, name).status == SUCCEEDED
                assert fake.members[f"cohortflow-{name}"] == fake.users
