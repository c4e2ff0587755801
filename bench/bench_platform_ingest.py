"""Sustained partner cohort import (and ``/users/track``) ingest against a real platform server.

For each backend: a throwaway database, migrated, with a workspace of N users seeded by bulk SQL; the
platform served by ``cohortflow platform serve --workers W`` in its own process; and, from this process,
K keep-alive connections sending:

* ``/partners/{p}/cohorts/users`` with 1,000 external ids a request (690 adds, 300 removes of users the
  previous request added, 10 unknown ids), first with each connection on its own cohort (independent
  syncs), then with every connection on one cohort (imports into one cohort are serialized). Each of the
  two runs as a closed loop (back to back: capacity), then as an open loop offered Braze's partner rate
  limit, 250,000 requests an hour (``--rate``: what a partner spending its whole budget sees);
* ``/users/track`` with 75 attributes objects a request (updates of existing users), closed loop.

Reported: identifiers (or objects) per second, requests per second, p50/p90/p99 latency, and the CPU the
server, PostgreSQL and this load process used. Run from the repository root:

    python -m bench.bench_platform_ingest                 # 1M users, PostgreSQL and SQLite, 30 s a phase
    python -m bench.bench_platform_ingest --short         # CI: 20k users, 5 s a phase
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import httpx
import orjson
from sqlalchemy import Connection, bindparam, func, select, text

from bench.harness import (
    DEFAULT_POSTGRES_URL,
    CpuMeter,
    Server,
    machine,
    platform_server,
    postgres_pids,
    postgres_settings,
    run_load,
    throwaway_database,
)
from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.partners import create_partner
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import TS, users, workspaces
from cohortflow.platform.workspaces import create_rest_api_key, create_workspace
from cohortflow.settings import PlatformSettings

IDS_PER_REQUEST = 1_000
ADDS, REMOVES, UNMATCHED = 690, 300, 10
TRACK_OBJECTS = 75
SEED_CHUNK = 250_000

PG_SEED = """
INSERT INTO users (workspace_id, braze_id, external_id, created_at, updated_at, custom_attributes, random_bucket)
SELECT CAST(:ws AS text), md5(CAST(:ws AS text) || '/' || g::text), 'user-' || g, :now, :now, '{}'::jsonb,
       (hashtext(g::text) & 2147483647) % 10000
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
"""

SQLITE_SEED = """
WITH RECURSIVE g(x) AS (SELECT :lo UNION ALL SELECT x + 1 FROM g WHERE x < :hi)
INSERT INTO users (workspace_id, braze_id, external_id, created_at, updated_at, custom_attributes, random_bucket)
SELECT :ws, printf('%.8s%024d', :tag, x), 'user-' || x, :now, :now, '{}', abs(random()) % 10000
FROM g
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def seed_workspace(runtime: PlatformRuntime, n_users: int) -> str:
    """A workspace named ``bench-N`` holding users ``user-1`` .. ``user-N``; reused when already seeded."""
    name = f"bench-{n_users}"
    with runtime.transaction() as conn:
        existing = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).scalar()
        count = (
            conn.execute(select(func.count()).where(users.c.workspace_id == existing)).scalar_one()
            if existing is not None
            else 0
        )
        if existing is None or count != n_users:
            existing = None
            ws_id = create_workspace(conn, name).id
    if existing is not None:
        log(f"reusing workspace {existing} with {count:,} users")
        vacuum(runtime)
        return str(existing)
    dialect = runtime.engine.dialect.name
    statement = text(PG_SEED if dialect == "postgresql" else SQLITE_SEED).bindparams(bindparam("now", type_=TS))
    started = time.perf_counter()
    for lo in range(1, n_users + 1, SEED_CHUNK):
        hi = min(n_users, lo + SEED_CHUNK - 1)
        with runtime.transaction() as conn:
            params: dict[str, Any] = {"ws": ws_id, "lo": lo, "hi": hi, "now": runtime.clock()}
            if dialect != "postgresql":
                params["tag"] = ws_id.removeprefix("ws_")
            conn.execute(statement, params)
        log(f"seeded {hi:,}/{n_users:,} users ({time.perf_counter() - started:.0f} s)")
    vacuum(runtime)
    return ws_id


def vacuum(runtime: PlatformRuntime) -> None:
    """Leave the seeded tables as a long-lived database's would be: vacuumed and analyzed.

    A workspace of 1M users in production was loaded long ago and autovacuum has long since set the
    visibility map that lets identifier matching read the index alone. Benchmarking a table that was bulk
    loaded a second ago instead measures one heap page fetch per identifier, and on a server whose
    autovacuum is off (as on the machines these figures come from) that state would never end.
    """
    if runtime.engine.dialect.name != "postgresql":
        with runtime.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        return
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) users"))


def new_credentials(conn: Connection, ws_id: str) -> dict[str, str]:
    partner = f"bench-{uuid.uuid4().hex[:8]}"
    new_partner = create_partner(conn, partner)
    _info, import_key = create_import_key(conn, ws_id, partner)
    return {
        "partner": partner,
        "partner_api_key": new_partner.api_key.plain,
        "client_secret": import_key.plain,
        "rest_api_key": create_rest_api_key(conn, ws_id, "bench")[1].plain,
    }


def cohort_bodies(creds: dict[str, str], cohort_id: str, n_users: int, count: int, rng: random.Random) -> list[bytes]:
    population = range(1, n_users + 1)
    previous = rng.sample(population, ADDS)
    bodies = []
    for _ in range(count):
        adds = rng.sample(population, ADDS)
        removes = rng.sample(previous, REMOVES)
        unknown = [f"nobody-{rng.getrandbits(48):012x}" for _ in range(UNMATCHED)]
        half = UNMATCHED // 2
        body = {
            "partner_api_key": creds["partner_api_key"],
            "client_secret": creds["client_secret"],
            "cohort_id": cohort_id,
            "cohort_changes": [
                {"user_ids": [f"user-{i}" for i in adds] + unknown[:half]},
                {"user_ids": [f"user-{i}" for i in removes] + unknown[half:], "should_remove": True},
            ],
        }
        bodies.append(orjson.dumps(body))
        previous = adds
    return bodies


def track_bodies(n_users: int, count: int, rng: random.Random) -> list[bytes]:
    plans = ["free", "pro", "team", "enterprise"]
    return [
        orjson.dumps(
            {
                "attributes": [
                    {
                        "external_id": f"user-{i}",
                        "bench_score": rng.randrange(1000),
                        "bench_plan": rng.choice(plans),
                        "first_name": "Ada",
                    }
                    for i in rng.sample(range(1, n_users + 1), TRACK_OBJECTS)
                ]
            }
        )
        for _ in range(count)
    ]


def route_exists(server: Server, path: str, headers: dict[str, str] | None = None) -> bool:
    """A route that is not there answers 404 or 405 to an empty JSON object; a real one validates it."""
    r = httpx.post(f"{server.base_url}{path}", json={}, headers=headers or {}, timeout=30)
    return r.status_code not in (404, 405)


def measured(
    server: Server,
    backend: str,
    label: str,
    run: Any,
    units_per_request: int,
    unit: str,
    *,
    database: str | None,
    profile_to: str | None = None,
    duration_s: float = 0.0,
) -> dict[str, Any]:
    """Run one load phase and attach CPU use: where the two cores went during it."""
    meters = {"server": CpuMeter(server.pids)}
    if database:
        meters["postgres"] = CpuMeter(lambda: postgres_pids(database))
    for meter in meters.values():
        meter.start()
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    profiler = None
    if profile_to:
        # py-spy samples what the server and its workers run on CPU during the whole phase (warm-up included).
        profiler = subprocess.Popen(
            [
                shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy",
                "record",
                "--pid",
                str(server.process.pid),
                "--subprocesses",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "50",
                "--output",
                profile_to,
                "--duration",
                str(int(duration_s + 1)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    wall = time.perf_counter()
    result = run()
    wall = time.perf_counter() - wall
    if profiler is not None:
        profiler.wait()
        log(f"py-spy profile (collapsed stacks, on-CPU samples) in {profile_to}")
    used = {name: meter.stop() for name, meter in meters.items()}
    own = resource.getrusage(resource.RUSAGE_SELF)
    summary: dict[str, Any] = {"phase": label, **result.summary(units_per_request, unit)}
    summary["cpu_cores_used"] = {
        "server": round(used["server"] / wall, 2),
        "postgres": round(used["postgres"] / wall, 2) if "postgres" in used else None,
        "load_generator": round((own.ru_utime + own.ru_stime - own_before.ru_utime - own_before.ru_stime) / wall, 2),
    }
    if result.responses:
        totals: dict[str, int] = {}
        for response in result.responses:
            for key in ("received", "matched", "unmatched", "added", "removed", "unchanged"):
                if isinstance(response.get(key), int):
                    totals[key] = totals.get(key, 0) + response[key]
        summary["server_counts"] = totals
    log(
        f"{backend} {label}: {summary.get(f'{unit}_per_s')} {unit}/s, {summary['requests_per_s']} req/s, "
        f"p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms, "
        f"errors {summary['errors_by_status'] or 'none'}, unfinished {summary['unfinished_requests']}"
        + (f", first error {summary['first_error']}" if summary["first_error"] else "")
    )
    return summary


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"backend": backend, "users": args.users, "phases": []}
    database = (
        nullcontext(args.database_url)
        if args.database_url
        else throwaway_database(backend, args.postgres_url, keep=args.keep_database)
    )
    with database as url:
        log(f"{backend}: database {url if backend == 'sqlite' else url.rsplit('/', 1)[1]}")
        if backend == "postgres":
            results["postgres_settings"] = postgres_settings(url)
            log(f"postgres settings: {results['postgres_settings']}")
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        try:
            seeded = time.perf_counter()
            ws_id = seed_workspace(runtime, args.users)
            results["seed_s"] = round(time.perf_counter() - seeded, 1)
            with runtime.transaction() as conn:
                creds = new_credentials(conn, ws_id)
        finally:
            runtime.close()

        pg_database = url.rsplit("/", 1)[1] if backend == "postgres" else None
        rng = random.Random(args.seed)
        per_connection = max(20, int(args.duration * 200 / args.concurrency))
        env = {"COHORTFLOW_PLATFORM__RATE_LIMIT_PER_HOUR": str(10**9)}  # measure capacity, not the limiter
        with platform_server(url, args.workers, env) as server:
            import_path = f"/partners/{creds['partner']}/cohorts/users"
            if not route_exists(server, import_path):
                log(f"{import_path} does not exist yet: skipping the cohort import phases")
                results["phases"].append({"phase": "cohort import", "skipped": "route not implemented"})
            else:
                # Closed loops measure capacity; open loops at Braze's rate limit measure what a partner
                # sending its whole budget sees.
                scenarios: list[tuple[str, int, float | None]] = [
                    ("cohort import, one cohort per connection", args.concurrency, None)
                ]
                if args.concurrency > 1:
                    scenarios.append(("cohort import, all connections on one cohort", 1, None))
                if args.rate:
                    at_rate = f"at {args.rate:g} req/s offered"
                    scenarios.append(
                        (f"cohort import {at_rate}, one cohort per connection", args.concurrency, args.rate)
                    )
                    if args.concurrency > 1:
                        scenarios.append((f"cohort import {at_rate}, all connections on one cohort", 1, args.rate))
                for label, n_cohorts, rate in scenarios:
                    tag = uuid.uuid4().hex[:6]
                    bodies = [
                        cohort_bodies(creds, f"bench-{tag}-{c % n_cohorts}", args.users, per_connection, rng)
                        for c in range(args.concurrency)
                    ]

                    def import_run(bodies: Sequence[Sequence[bytes]] = bodies, rate: float | None = rate) -> Any:
                        return run_load(
                            server.base_url,
                            import_path,
                            bodies,
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                            keep_response=orjson.loads,
                            rate_per_s=rate,
                        )

                    profile_to = None
                    if args.profile_dir:
                        slug = ("one-cohort" if n_cohorts == 1 else "many-cohorts") + ("-paced" if rate else "")
                        profile_to = os.path.join(args.profile_dir, f"{backend}-import-{slug}.txt")
                    results["phases"].append(
                        measured(
                            server,
                            backend,
                            label,
                            import_run,
                            IDS_PER_REQUEST,
                            "identifiers",
                            database=pg_database,
                            profile_to=profile_to,
                            duration_s=args.warmup + args.duration,
                        )
                    )

            auth = {"Authorization": f"Bearer {creds['rest_api_key']}"}
            if not route_exists(server, "/users/track", auth):
                log("/users/track does not exist yet: skipping the track phase")
                results["phases"].append({"phase": "users/track", "skipped": "route not implemented"})
            else:
                track = [track_bodies(args.users, per_connection, rng) for _ in range(args.concurrency)]

                def track_run() -> Any:
                    return run_load(
                        server.base_url,
                        "/users/track",
                        track,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        headers=auth,
                    )

                results["phases"].append(
                    measured(
                        server,
                        backend,
                        "users/track, 75 attributes objects",
                        track_run,
                        TRACK_OBJECTS,
                        "objects",
                        database=pg_database,
                        profile_to=os.path.join(args.profile_dir, f"{backend}-track.txt") if args.profile_dir else None,
                        duration_s=args.warmup + args.duration,
                    )
                )
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| backend | phase | per second | requests/s | p50 ms | p99 ms | errors "
        "| CPU cores: server / postgres / load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in report["backends"]:
        for phase in backend["phases"]:
            if "skipped" in phase:
                lines.append(f"| {backend['backend']} | {phase['phase']} | skipped: {phase['skipped']} |||||")
                continue
            unit = "identifiers" if "identifiers_per_s" in phase else "objects"
            rate = phase[f"{unit}_per_s"]
            cpu = phase["cpu_cores_used"]
            pg_cpu = cpu["postgres"] if cpu["postgres"] is not None else "-"
            lines.append(
                f"| {backend['backend']} | {phase['phase']} | {rate:,} {unit} | {phase['requests_per_s']} | "
                f"{phase['latency_ms']['p50']} | {phase['latency_ms']['p99']} | "
                f"{sum(phase['errors_by_status'].values()) + phase['unfinished_requests']} | "
                f"{cpu['server']} / {pg_cpu} / {cpu['load_generator']} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", choices=["postgres", "sqlite"], default=["postgres", "sqlite"])
    parser.add_argument("--users", type=int, default=1_000_000, help="users in the workspace")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds sent but not measured per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--rate",
        type=float,
        default=round(250_000 / 3600, 1),
        help="requests/s offered in the open-loop import phases (default: Braze's partner rate limit; 0: none)",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("COHORTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--seed", type=int, default=7, help="random seed for the request bodies")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database afterwards")
    parser.add_argument(
        "--database-url", help="use this existing database instead of a throwaway one (seeded unless already)"
    )
    parser.add_argument("--json-out", help="also write the report as JSON to this file")
    parser.add_argument(
        "--profile-dir", help="record py-spy profiles of the server during each phase into this directory"
    )
    parser.add_argument("--short", action="store_true", help="CI mode: 20k users, 5 s phases, 1 s warm-up")
    args = parser.parse_args(argv)
    if args.short:
        args.users, args.duration, args.warmup = 20_000, 5.0, 1.0

    report: dict[str, Any] = {
        "command": "python -m bench.bench_platform_ingest " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("users", "duration", "warmup", "concurrency", "workers", "rate")},
        "backends": [],
    }
    if args.database_url:
        # An existing database (e.g. one changed by hand for an experiment): its workspace "bench-N" is reused.
        args.backend = ["sqlite" if args.database_url.startswith("sqlite") else "postgres"]
    for backend in args.backend:
        report["backends"].append(bench_backend(backend, args))
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    print(markdown(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
