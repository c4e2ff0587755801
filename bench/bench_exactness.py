"""Drift after kills and network faults: how far the cohort ends from the model (it must be 0 both ways).

The scenario of issue 8, at its size: a warehouse of about 27,000 rows of which some match no platform user,
5% of rows flipping (in or out) between runs, and after half of the kills the warehouse changing back.

- **kills**: ``cohortflow sync run`` as its own process, killed with SIGKILL at a random instant (start-up,
  querying, planning or while batches are in flight), the warehouse changed, and so on ``--kills`` times;
  then one clean run.
- **faults**: for each rate, ``--fault-runs`` runs through a proxy in front of the platform that injects 429,
  423, 500, 503, dropped connections, answers lost after the platform applied the request and answers held past
  the client's timeout (retries are few, so they do run out), with flips between runs; then three clean runs.

After every clean run it reads the cohort from the platform's database and reports **lost** (model users the
cohort lacks) and **wrongly kept** (members the model lacks), with the sync's confirmed-state error. Platform
and sync state are on ``--backend`` (SQLite files, or throwaway PostgreSQL databases). Run from the root:

    python -m bench.bench_exactness                       # 10 kills, faults at 20% and 60%, SQLite
    python -m bench.bench_exactness --backend postgres
    python -m bench.bench_exactness --short               # CI: a few kills, a small warehouse
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from tests.sync.support import FaultProxy, platform_members

from bench.bench_platform_ingest import new_credentials, seed_workspace
from bench.harness import machine, platform_server, throwaway_database
from bench.sync_support import SYNC, log, write_workspace
from cohortflow.logs import configure_logging
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import PlatformSettings
from cohortflow.sync import load_workspace, run_sync
from cohortflow.sync.destinations import derived_cohort_id

PREFIX = "user-"


class Warehouse:
    """The DuckDB file of ``write_workspace``'s model: ``customers (id, external_id)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set_range(self, ids: list[int], prefix: str) -> None:
        con = duckdb.connect(str(self.path))
        try:
            con.register("ids", pa.table({"i": pa.array(ids, pa.int64())}))
            con.execute(f"CREATE OR REPLACE TABLE customers AS SELECT i AS id, '{prefix}' || i AS external_id FROM ids")
        finally:
            con.close()


def _flip(model: set[int], universe: int, fraction: float, rng: random.Random) -> set[int]:
    return model ^ set(rng.sample(range(1, universe + 1), int(universe * fraction)))


def _drift(
    runtime: PlatformRuntime, ws_id: str, model: set[int], users: int, state_url: str, path: Path
) -> dict[str, int]:
    members = platform_members(runtime, ws_id, derived_cohort_id(SYNC))
    expected = {f"{PREFIX}{i}" for i in model if i <= users}
    with load_workspace(path, state_url=state_url) as ws:
        confirmed = {v for _, _, v in ws.store.confirmed_set(SYNC)}
    return {
        "model_rows": len(model),
        "expected_members": len(expected),
        "lost": len(expected - members),
        "wrongly_kept": len(members - expected),
        "confirmed_off": len(confirmed ^ {f"{PREFIX}{i}" for i in model}),
    }


def _kills(
    path: Path, state_url: str, warehouse: Warehouse, args: argparse.Namespace, rng: random.Random, model: set[int]
) -> tuple[set[int], int]:
    env = {**os.environ, "COHORTFLOW_LOG_LEVEL": "WARNING"}
    in_flight = 0
    for k in range(args.kills):
        before = model
        model = _flip(model, args.universe, args.flip, rng)
        warehouse.set_range(sorted(model), PREFIX)
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
                SYNC,
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, args.kill_window))
        in_flight += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Half the time the warehouse goes back to what it was: what the killed run applied must be undone.
        model = before if k % 2 == 0 else _flip(model, args.universe, args.flip, rng)
        warehouse.set_range(sorted(model), PREFIX)
    return model, in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--universe", type=int, default=26_697, help="warehouse rows that may be in the model")
    parser.add_argument("--users", type=float, default=0.9, help="fraction of the universe that are platform users")
    parser.add_argument("--flip", type=float, default=0.05, help="fraction of rows flipping between runs")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--kill-window", type=float, default=4.0, help="kill within this many seconds")
    parser.add_argument("--fault-rates", default="0.2,0.6")
    parser.add_argument("--fault-runs", type=int, default=6)
    parser.add_argument(
        "--batch-size", type=int, default=100, help="identifiers a request (more requests, more faults)"
    )
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--short", action="store_true", help="CI: 3 kills, 3,000 rows, 3 fault runs")
    args = parser.parse_args()
    if args.short:
        args.universe, args.kills, args.fault_runs, args.kill_window, args.batch_size = 3_000, 3, 3, 1.5, 50
    configure_logging("WARNING", False)  # one line of JSON on stdout, the figures
    rng = random.Random(args.seed)
    users = int(args.universe * args.users)
    report: dict[str, Any] = {
        "bench": "exactness",
        "backend": args.backend,
        "machine": machine(),
        "universe": args.universe,
        "users": users,
        "flip": args.flip,
    }
    workdir = Path(tempfile.mkdtemp(prefix="cf-bench-exact-"))
    retry = {"max_attempts": 3, "initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.5}
    try:
        with ExitStack() as stack:
            platform_url = stack.enter_context(throwaway_database(args.backend))
            state_url = (
                stack.enter_context(throwaway_database("postgres"))
                if args.backend == "postgres"
                else f"sqlite:///{workdir / 'state.db'}"
            )
            runtime = PlatformRuntime.open(PlatformSettings(database_url=platform_url))
            stack.callback(runtime.close)
            ws_id = seed_workspace(runtime, users)
            with runtime.transaction() as conn:
                creds = new_credentials(conn, ws_id)
            warehouse = Warehouse(workdir / "warehouse.duckdb")
            model = set(rng.sample(range(1, args.universe + 1), args.universe // 2))
            warehouse.set_range(sorted(model), PREFIX)
            server = stack.enter_context(platform_server(platform_url, 1))
            # Every run goes through the proxy (faulty or not), so the sync's target never changes.
            proxy = stack.enter_context(FaultProxy(server.base_url, seed=args.seed, slow_seconds=2.5))
            path = write_workspace(
                workdir, proxy.url, creds, {"timeout_seconds": 2, "retry": retry, "batch_size": args.batch_size}
            )
            model, in_flight = _kills(path, state_url, warehouse, args, rng, model)
            with load_workspace(path, state_url=state_url) as ws:
                clean = run_sync(ws, SYNC)
            report["kills"] = {
                "kills": args.kills,
                "killed_while_running": in_flight,
                "clean_run": clean.status,
                "uncertain_resolved": clean.counts.get("uncertain", 0),
                **_drift(runtime, ws_id, model, users, state_url, path),
            }
            log(f"kills: {report['kills']}")
            report["faults"] = {}
            for rate in (float(r) for r in args.fault_rates.split(",")):
                proxy.rate, proxy.counts = rate, {}
                statuses = []
                with load_workspace(path, state_url=state_url) as ws:
                    for _ in range(args.fault_runs):
                        model = _flip(model, args.universe, args.flip, rng)
                        warehouse.set_range(sorted(model), PREFIX)
                        statuses.append(run_sync(ws, SYNC).status)
                    faults = dict(proxy.counts)
                    proxy.rate = 0.0
                    after = []
                    for _ in range(3):
                        result = run_sync(ws, SYNC)
                        after.append(
                            {
                                "status": result.status,
                                "adds": result.counts["adds"],
                                "removes": result.counts["removes"],
                                "uncertain": result.counts.get("uncertain", 0),
                                **_drift(runtime, ws_id, model, users, state_url, path),
                            }
                        )
                report["faults"][str(rate)] = {"statuses": statuses, "faults": faults, "clean_runs": after}
                log(f"faults at {rate}: {statuses} then {after}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    drifts = [report["kills"], *(c for f in report["faults"].values() for c in f["clean_runs"])]
    report["exact"] = all(d["lost"] == d["wrongly_kept"] == d["confirmed_off"] == 0 for d in drifts)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
