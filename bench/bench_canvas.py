"""Canvas throughput: N users enter a Canvas and advance through a message step (webhook) to a delay.

Seeds a throwaway database as ``bench_campaigns`` does (N users in a partner cohort, a segment on it), starts a
Canvas ``message -> delay 1 day``, then times the two phases of the worker's pass separately and together:

* **advance**: entry (one INSERT ... SELECT from the audience) and the moves (one statement per step: the
  message step queues one delivery row per user and moves them on to the delay) - :func:`advance_canvas`
  with ``deliver=False``;
* **deliver**: the queued messages, through the same batched engine as campaigns, in ``--workers`` processes
  (:func:`deliver_canvas`); the receiver is an aiohttp server in its own process.

Usage::

    python -m bench.bench_canvas --users 1000000 --workers 2
    python -m bench.bench_canvas --users 1000000 --advance-only   # entry and moves only
    python -m bench.bench_canvas --quick          # CI: 2,000 users
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from typing import Any

from bench.bench_campaigns import message, receiver, seed
from bench.harness import DEFAULT_POSTGRES_URL, CpuMeter, machine, postgres_pids, throwaway_database
from cohortflow.platform.messaging.canvas import (
    advance_canvas,
    canvas_stats,
    create_canvas,
    deliver_canvas,
    start_canvas,
)
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import MessagingSettings, PlatformSettings


def _deliverer(url: str, canvas_id: str, port: int, ready: Any, go: Any, out: Any) -> None:
    runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
    settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port)
    ready.set()
    go.wait()
    started = resource.getrusage(resource.RUSAGE_SELF)
    deliver_canvas(runtime.engine, settings, canvas_id)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    out.put(ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime)
    runtime.close()


def run(backend: str, n_users: int, postgres_url: str, workers: int, deliver: bool = True) -> dict[str, Any]:
    workers = workers if backend == "postgres" else 1
    with throwaway_database(backend, postgres_url) as url, receiver("webhook") as recv:
        port = recv.port  # type: ignore[attr-defined]
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        try:
            workspace_id, segment_id = seed(runtime, n_users)
            if backend == "postgres":
                with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port)
            with runtime.transaction() as conn:
                canvas = create_canvas(
                    conn,
                    workspace_id,
                    {
                        "name": "bench",
                        "entry_segment_id": segment_id,
                        "steps": [
                            {"id": "hello", "type": "message", "message": message("webhook", port), "next": "wait"},
                            {"id": "wait", "type": "delay", "days": 1},
                        ],
                    },
                    settings=settings,
                )
                start_canvas(conn, workspace_id, canvas.id)
            database = url.rsplit("/", 1)[-1]
            db_cpu = CpuMeter(lambda: postgres_pids(database) if backend == "postgres" else [])
            load_before = os.getloadavg()[0]
            db_cpu.start()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            advanced = advance_canvas(runtime.engine, settings, canvas.id, deliver=False)
            advance_seconds = time.perf_counter() - started
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            advance_db = db_cpu.stop()
            assert advanced is not None and advanced.entered == n_users, advanced
            if not deliver:
                return {
                    "backend": backend,
                    "users": n_users,
                    "advance_seconds": round(advance_seconds, 2),
                    "advance_users_per_second": round(n_users / advance_seconds),
                    "advance_cpu_us_per_user": round(
                        (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / n_users * 1e6, 1
                    ),
                    "advance_postgres_cpu_us_per_user": round(advance_db / n_users * 1e6, 1),
                    "load_average": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                }

            ctx = multiprocessing.get_context("spawn")
            go, out = ctx.Event(), ctx.Queue()
            readies = [ctx.Event() for _ in range(workers)]
            procs = [
                ctx.Process(target=_deliverer, args=(url, canvas.id, port, readies[i], go, out)) for i in range(workers)
            ]
            for proc in procs:
                proc.start()
            for ready in readies:
                ready.wait(120)
            started = time.perf_counter()
            go.set()
            sender_cpu = sum(out.get(timeout=24 * 3600) for _ in procs)
            deliver_seconds = time.perf_counter() - started
            load_after = os.getloadavg()[0]
            for proc in procs:
                proc.join()
            with runtime.engine.connect() as conn:
                stats = canvas_stats(conn, workspace_id, canvas.id)
        finally:
            runtime.close()
    hello = stats["steps"][0]
    assert hello["sent"] == n_users and stats["steps"][1]["at_step"] == n_users, stats
    advance_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {
        "backend": backend,
        "users": n_users,
        "workers": workers,
        "advance_seconds": round(advance_seconds, 2),
        "advance_users_per_second": round(n_users / advance_seconds),
        "advance_cpu_us_per_user": round(advance_cpu / n_users * 1e6, 1),
        "advance_postgres_cpu_us_per_user": round(advance_db / n_users * 1e6, 1),
        "deliver_seconds": round(deliver_seconds, 2),
        "deliver_messages_per_second": round(n_users / deliver_seconds),
        "deliver_cpu_us_per_message": round(sender_cpu / n_users * 1e6, 1),
        "end_to_end_users_per_second": round(n_users / (advance_seconds + deliver_seconds)),
        "load_average": f"{load_before:.1f} -> {load_after:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2,000 users on SQLite (CI smoke run)")
    parser.add_argument("--advance-only", action="store_true", help="Time the advance phase only (no delivery).")
    parser.add_argument("--postgres", default=os.environ.get("COHORTFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    args = parser.parse_args()
    backends = args.backend or (["sqlite"] if args.quick else ["postgres"])
    n_users = 2000 if args.quick else args.users
    results = []
    for backend in backends:
        results.append(run(backend, n_users, args.postgres, args.workers, deliver=not args.advance_only))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
