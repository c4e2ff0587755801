"""kill -9 at random instants, with the warehouse changing (and changing back) before the next run: that run
converges to the exact membership, re-sending at most what was in flight."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cohortflow.sync import list_runs, load_workspace, run_sync
from tests.sync.support import FakeBraze, Warehouse, write_workspace

BATCH = 25
CONCURRENCY = 3


def test_runs_killed_at_random_instants_converge(
    tmp_path: Path, fake: FakeBraze, warehouse: Warehouse, state_url: str, backend: str
) -> None:
    rng = random.Random(20261125)
    universe = list(range(4000))
    fake.users = {f"u{i}" for i in universe if i % 5 != 0}  # a fifth of the model never matches
    fake.delay = 0.08  # each request takes a while, so kills land while batches are in flight
    path = write_workspace(
        tmp_path,
        endpoint=fake.url,
        partner=fake.partner,
        partner_api_key=fake.partner_api_key,
        data_import_key=fake.client_secret,
        destination={"batch_size": BATCH, "concurrency": CONCURRENCY},
    )
    env = {**os.environ, "COHORTFLOW_LOG_LEVEL": "WARNING"}
    model = set(rng.sample(universe, 1500))
    cycles = 20
    kills_while_sending = 0
    for cycle in range(cycles):
        # Churn: some members leave, others join, so every run has removes and adds to do.
        before = model
        leaving = set(rng.sample(sorted(model), 400))
        joining = set(rng.sample(sorted(set(universe) - model), 400))
        model = (model - leaving) | joining
        warehouse.set_range(sorted(model))
        fake.log.clear()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cohortflow",
                "sync",
                "-f",
                str(path),
                "--state-url",
                state_url,
                "run",
                "vip",
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if cycle % 3 == 2:
            time.sleep(rng.uniform(0.2, 3.0))  # anywhere: start-up, querying, planning or sending
        else:
            deadline = time.monotonic() + 60
            while not fake.log and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.9))  # while batches are in flight
        if proc.poll() is None:
            kills_while_sending += bool(fake.log)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_sent = {(v, rm) for _, v, rm in fake.sent(None)}  # every request that reached the server
        fake.log.clear()
        # Between the killed run and the next, the warehouse changes again: back to where it was (what the
        # killed run applied must be undone, whether or not it heard the answers), or a further change.
        if cycle % 2 == 0:
            model = before
        else:
            flips = set(rng.sample(universe, 200))
            model = model ^ flips
        warehouse.set_range(sorted(model))
        with load_workspace(path, state_url=state_url) as ws:
            result = run_sync(ws, "vip")
            assert result.status == "succeeded", result.message
            confirmed = ws.store.confirmed_set("vip")
        assert confirmed == {("e", "", f"u{i}") for i in model}, f"cycle {cycle}: confirmed state differs"
        assert fake.members["cohortflow-vip"] == {f"u{i}" for i in model} & fake.users, f"cycle {cycle}"
        resent = killed_sent & {(v, rm) for _, v, rm in fake.sent(None)}
        # Only what was in flight at the kill can go out again in the same direction: everything else the
        # killed run sent was confirmed, and the warehouse's changes since are the other direction or new.
        assert len(resent) <= CONCURRENCY * BATCH, f"cycle {cycle}: {len(resent)} identifiers re-sent"
    assert kills_while_sending >= cycles // 2  # most kills really interrupted a delivery
    with load_workspace(path, state_url=state_url) as ws:
        statuses = [r.status for r in list_runs(ws.store, "vip", limit=100)]
    assert statuses.count("succeeded") >= cycles
    assert "sending" not in statuses[1:] and "querying" not in statuses[1:]  # killed runs are closed as failed
