"""What the sync service's bookkeeping costs: a scheduler tick over many syncs, and claiming a queued run.

Setup: a workspace of ``--syncs`` syncs (interval schedules), a fresh state database (SQLite file, or a
throwaway PostgreSQL database with ``--postgres``). Measured: the median wall time of a scheduler tick once
every schedule row exists (what every ``sync serve`` process pays each poll), and of ``claim_next`` with
``--syncs`` runs queued (one per sync; each claimed run is closed so the next claim sees the same queue depth).
Run from the repository root:

    python -m bench.bench_sync_service                  # SQLite, 200 syncs
    python -m bench.bench_sync_service --postgres       # PostgreSQL at 127.0.0.1:5432
    python -m bench.bench_sync_service --short          # CI: 20 syncs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench.harness import machine, throwaway_database
from cohortflow.sync import load_workspace
from cohortflow.sync.queue import beat, claim_next, enqueue_run
from cohortflow.sync.runs import SUCCEEDED, RunOptions, finish_run, release_lock
from cohortflow.sync.scheduler import tick


def _workspace(directory: Path, syncs: int) -> Path:
    doc = {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {"m": {"source": "warehouse", "table": "customers", "primary_key": "id"}},
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": "http://127.0.0.1:9",
                "partner": "hightouch",
                "partner_api_key": "k",
                "data_import_key": "k",
            }
        },
        "syncs": {
            f"s{i}": {
                "model": "m",
                "destination": "braze",
                "identifier": {"external_id": "id"},
                "cohort": {"mode": "create", "name": f"S{i}"},
                "schedule": {"type": "interval", "minutes": 60},
            }
            for i in range(syncs)
        },
    }
    path = directory / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def measure(state_url: str, syncs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = _workspace(Path(tmp), syncs)
        with load_workspace(path, state_url=state_url) as ws:
            store = ws.store
            tick(ws)  # creates every schedule row and queues the never-run syncs
            ticks = []
            for _ in range(20):
                started = time.perf_counter()
                tick(ws)
                ticks.append(time.perf_counter() - started)
            beat(store, "bench", socket.gethostname(), os.getpid())
            names = set(ws.config.syncs)
            claims = []
            for _ in range(syncs):
                started = time.perf_counter()
                claimed = claim_next(store, "bench", max_concurrent=syncs + 1, runnable=names)
                claims.append(time.perf_counter() - started)
                assert claimed is not None
                finish_run(store, claimed.run_id, SUCCEEDED)
                release_lock(store, claimed.sync_name, claimed.run_id)
                enqueue_run(ws, claimed.sync_name, RunOptions(), "bench")
    return {
        "tick_ms": round(statistics.median(ticks) * 1000, 2),
        "claim_ms": round(statistics.median(claims) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--syncs", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--short", action="store_true", help="20 syncs (for CI)")
    args = parser.parse_args()
    syncs = 20 if args.short else args.syncs
    kind = "postgres" if args.postgres else "sqlite"
    with throwaway_database(kind) as url:
        figures = measure(url, syncs)
    print(json.dumps({"benchmark": "sync_service", "state": kind, "syncs": syncs, **figures, "machine": machine()}))


if __name__ == "__main__":
    main()
