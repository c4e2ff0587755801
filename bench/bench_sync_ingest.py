"""Initial sync of N members into the local platform on PostgreSQL, end to end.

Setup: a throwaway PostgreSQL database (``cf_bench_*``, dropped afterwards), migrated, with a workspace of
N users (``user-1`` .. ``user-N``) seeded by bulk SQL, a partner and a data import key; the platform served
by ``cohortflow platform serve --workers W`` in its own process; a DuckDB model of the same N external ids;
a fresh SQLite sync state (the embedded default). The sync is ``cohortflow.sync.run_sync`` in its own
process, with the destination's defaults (concurrency 4, Braze's 250,000 requests an hour, so at most
69,444 identifiers a second) unless ``--concurrency`` / ``--rate-limit`` say otherwise.

Reported: identifiers per second over the whole run (querying + planning + sending), the run's phases, the
CPU seconds the sync process, the platform server and PostgreSQL spent, and the platform's cohort size
afterwards (must equal N). ``--profile`` adds a py-spy profile of the sync process (top frames).
Run from the repository root:

    python -m bench.bench_sync_ingest                 # 1M members
    python -m bench.bench_sync_ingest --short         # CI: 20k members
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.bench_platform_ingest import new_credentials, seed_workspace
from bench.harness import CpuMeter, machine, platform_server, postgres_pids, throwaway_database
from bench.sync_support import SYNC, write_warehouse, write_workspace
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import cohort_members, cohorts
from cohortflow.settings import PlatformSettings


def _child_sync(workdir: Path) -> dict[str, Any]:
    from cohortflow.sync import load_workspace, run_sync

    with load_workspace(workdir / "cohortflow.yaml", state_url=f"sqlite:///{workdir / 'state.db'}") as ws:
        started = time.perf_counter()
        result = run_sync(ws, SYNC)
        seconds = time.perf_counter() - started
    assert result.status == "succeeded", result.message
    return {"seconds": round(seconds, 3), "phases": result.phases, "counts": result.counts}


def _cohort_size(runtime: PlatformRuntime, ws_id: str, cohort_id: str) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(cohort_members.join(cohorts, cohorts.c.id == cohort_members.c.cohort_pk))
                .where(cohorts.c.workspace_id == ws_id, cohorts.c.cohort_id == cohort_id)
            ).scalar_one()
        )


def _top_frames(raw: Path, limit: int = 25) -> list[str]:
    """The functions most often on the stack in a py-spy ``raw`` profile, with their share of samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")[1:]):
            inclusive[frame.split(" (")[0] + " (" + frame.rsplit("/", 1)[-1]] += int(count)
    return [f"{100 * n / total:.0f}% {frame}" for frame, n in inclusive.most_common(limit)] if total else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="platform server workers")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--rate-limit", type=int, default=250_000, help="requests an hour")
    parser.add_argument("--profile", action="store_true", help="py-spy the sync process")
    parser.add_argument("--short", action="store_true", help="20k members (for CI)")
    parser.add_argument("--postgres", default=os.environ.get("COHORTFLOW_BENCH_POSTGRES_URL"), help="admin URL")
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child_sync(args.workdir)))
        return
    if args.short:
        args.members = 20_000
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="cf-bench-ingest-"))
    db_kwargs = {"admin_url": args.postgres} if args.postgres else {}
    try:
        with throwaway_database("postgres", **db_kwargs) as url:
            database = url.rsplit("/", 1)[-1]
            runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
            try:
                ws_id = seed_workspace(runtime, args.members)
                with runtime.transaction() as conn:
                    creds = new_credentials(conn, ws_id)
                write_warehouse(
                    workdir / "warehouse.duckdb",
                    f"SELECT i AS id, 'user-' || i AS external_id FROM range(1, {args.members + 1}) t(i)",
                )
                with platform_server(url, args.workers) as server:
                    write_workspace(
                        workdir,
                        server.base_url,
                        creds,
                        {"concurrency": args.concurrency, "rate_limit_per_hour": args.rate_limit},
                    )
                    meters = {
                        "server": CpuMeter(server.pids),
                        "postgres": CpuMeter(lambda: postgres_pids(database)),
                    }
                    for meter in meters.values():
                        meter.start()
                    cmd = [sys.executable, "-m", "bench.bench_sync_ingest", "--child", "--workdir", str(workdir)]
                    profile = workdir / "profile.txt"
                    if args.profile:
                        cmd = ["py-spy", "record", "-o", str(profile), "--format", "raw", "--rate", "100", "--", *cmd]
                    started = time.perf_counter()
                    before = os.times()
                    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()
                    after = os.times()
                    wall = time.perf_counter() - started
                    cpu = {name: round(meter.stop(), 1) for name, meter in meters.items()}
                    cpu["sync"] = round(
                        after.children_user + after.children_system - before.children_user - before.children_system, 1
                    )
                figures = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
                size = _cohort_size(runtime, ws_id, f"cohortflow-{SYNC}")
                assert size == args.members, f"the platform's cohort holds {size:,} members, not {args.members:,}"
            finally:
                runtime.close()
        report = {
            "bench": "sync_ingest",
            "members": args.members,
            "platform_workers": args.workers,
            "concurrency": args.concurrency,
            "rate_limit_per_hour": args.rate_limit,
            "machine": info,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "run_s": figures["seconds"],
            "identifiers_per_s": round(args.members / figures["seconds"]),
            "phases": figures["phases"],
            "sending_identifiers_per_s": round(args.members / figures["phases"]["sending"]),
            "process_wall_s": round(wall, 1),
            "cpu_s": cpu,
            "cohort_size": size,
            "counts": {k: figures["counts"].get(k) for k in ("adds", "added", "matched", "requests")},
            "target_met": (args.members / figures["seconds"] >= 50_000) if not args.short else None,
        }
        if args.profile:
            report["profile_top"] = _top_frames(profile)
        print(json.dumps(report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
