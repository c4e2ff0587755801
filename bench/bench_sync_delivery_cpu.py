"""CPU the sync process spends while delivery holds Braze's rate limit against a fast receiver.

Setup: a DuckDB model big enough to keep delivery busy for the whole window (an initial sync: every row is
an add), a fresh SQLite state database, and a receiver in its own process (a loopback HTTP server that
answers 201 at once). The sync runs with the destination's defaults: 250,000 requests an hour (69.4
requests/s) of 1,000 identifiers, ``concurrency`` 4. Each acknowledged batch is committed to the state
database, as in production.

Measured inside the sync process, from its progress callback (called after every batch): after a warm-up
from the first acknowledged batch, the process's CPU seconds (``time.process_time()``: every thread, so
the commits and the event loop) per wall second over the window, and the request rate held meanwhile.
Run from the repository root:

    python -m bench.bench_sync_delivery_cpu                 # 30 s window
    python -m bench.bench_sync_delivery_cpu --short         # CI: 3 s window
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import cpu_seconds, machine
from bench.sync_support import SYNC, log, receiver_process, run_child, write_warehouse, write_workspace
from cohortflow.platform.process import free_port

RATE_PER_HOUR = 250_000
BATCH = 1_000


def _child_sync(workdir: Path, warmup_s: float, window_s: float) -> dict[str, Any]:
    from cohortflow.sync import load_workspace, run_sync

    samples: list[tuple[float, float, int]] = []  # (wall, cpu, identifiers done)

    def progress(phase: str, done: int, _total: int | None) -> None:
        if phase == "sending":
            samples.append((time.perf_counter(), time.process_time(), done))

    with load_workspace(workdir / "cohortflow.yaml", state_url=f"sqlite:///{workdir / 'state.db'}") as ws:
        result = run_sync(ws, SYNC, progress=progress)
    assert result.status == "succeeded", result.message
    first = samples[0][0]
    start = next(s for s in samples if s[0] >= first + warmup_s)
    end = next((s for s in samples if s[0] >= start[0] + window_s), samples[-1])
    wall = end[0] - start[0]
    assert wall >= 0.9 * window_s, "the model ran out before the window ended; raise --rows"
    return {
        "window_s": round(wall, 2),
        "cpu_s": round(end[1] - start[1], 3),
        "cpu_per_wall_s": round((end[1] - start[1]) / wall, 3),
        "requests_per_s": round((end[2] - start[2]) / BATCH / wall, 1),
        "identifiers_per_s": round((end[2] - start[2]) / wall),
        "phases": result.phases,
        "counts": {k: result.counts.get(k) for k in ("rows", "adds", "added", "requests", "retried_requests")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--short", action="store_true", help="3 s window (for CI)")
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.short:
        args.window, args.warmup = 3.0, 1.0
    if args.child:
        print(json.dumps(_child_sync(args.workdir, args.warmup, args.window)))
        return
    info = machine()
    # Enough rows for warm-up + window + slack at the rate limit.
    rows = int((args.warmup + args.window + 3) * RATE_PER_HOUR / 3600 * BATCH)
    workdir = Path(tempfile.mkdtemp(prefix="cf-bench-delivery-"))
    try:
        write_warehouse(
            workdir / "warehouse.duckdb", f"SELECT i AS id, 'u' || i AS external_id FROM range({rows}) t(i)"
        )
        port = free_port()
        write_workspace(workdir, f"http://127.0.0.1:{port}", destination={"rate_limit_per_hour": RATE_PER_HOUR})
        with receiver_process(port) as receiver:
            receiver_cpu = cpu_seconds([receiver.pid])
            started = time.perf_counter()
            child = run_child(
                [
                    "bench.bench_sync_delivery_cpu",
                    "--child",
                    "--workdir",
                    str(workdir),
                    "--window",
                    str(args.window),
                    "--warmup",
                    str(args.warmup),
                ]
            )
            elapsed = time.perf_counter() - started
            receiver_cpu = cpu_seconds([receiver.pid]) - receiver_cpu
        figures = child.figures
        log(f"{figures}")
        report = {
            "bench": "sync_delivery_cpu",
            "rows": rows,
            "rate_limit_per_hour": RATE_PER_HOUR,
            "machine": info,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            **figures,
            "whole_run": {
                "wall_s": round(elapsed, 1),
                "cpu_s": round(child.cpu_s, 1),
                "peak_rss_mb": round(child.peak_rss_mb),
                "receiver_cpu_s": round(receiver_cpu, 1),
            },
            "target_met": figures["cpu_per_wall_s"] < 0.5 if not args.short else None,
        }
        print(json.dumps(report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
