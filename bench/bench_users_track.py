"""``/users/track`` as a new user loads profiles: 75 objects a request, 8 connections, ``serve --workers 2``.

Each object carries an ``external_id``, an ``email``, a ``country`` and a number (a custom attribute), as a
customer's first import does. Three phases, closed loop:

- **new**: every object names a user that does not exist yet (it is created with its attributes);
- **update**: every object names one of the workspace's existing users (``--users`` of them, seeded by bulk SQL
  with the email and country a first import gave them), as the warehouse's next sync does: the same email, a new
  number, and a new country for 1 object in 100 (:data:`MOVES`), so 1-2% of the rows change an indexed column;
- **update, all move** (the worst case, reported but not the target's): 7 objects in 8 change country, so
  nearly every row changes an indexed column and PostgreSQL rewrites all five of the user's index entries
  (no HOT update).

Reported: objects per second, request latency, where the two cores went (server, PostgreSQL, the load
generator) and the same as milliseconds of CPU per request. The load generator is a minimal HTTP/1.1 client
(keep-alive, ``Content-Length`` bodies) so that it takes little of the two cores the server needs; ``--client
httpx`` uses the shared harness's httpx client instead. ``--profile-dir`` adds py-spy profiles of the server per
phase. Run from the repository root:

    python -m bench.bench_users_track                     # PostgreSQL, 20 s per phase
    python -m bench.bench_users_track --backend sqlite
    python -m bench.bench_users_track --short             # CI: 3 s per phase
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import text

from bench.bench_platform_ingest import measured, new_credentials, seed_workspace, vacuum
from bench.harness import (
    STUCK_AFTER_S,
    LoadResult,
    machine,
    platform_server,
    postgres_settings,
    run_load,
    throwaway_database,
)
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import PlatformSettings

OBJECTS = 75
COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "GB", "ES"]
#: The share of an update's objects that move the user to another country.
MOVES = 0.01

# The seeded users' email and country, as a first import left them: user-N lives in COUNTRIES[N % 8].
_QUOTED = "','".join(COUNTRIES)
_AS_JSON = json.dumps(COUNTRIES)
PROFILE_SQL = {
    "postgresql": "UPDATE users SET email = external_id || '@example.com', "
    f"country = (ARRAY['{_QUOTED}'])[1 + substr(external_id, 6)::int % 8] WHERE workspace_id = :ws",
    "sqlite": "UPDATE users SET email = external_id || '@example.com', "
    f"country = json_extract('{_AS_JSON}', '$[' || (CAST(substr(external_id, 6) AS INTEGER) % 8) || ']') "
    "WHERE workspace_id = :ws",
}


def _object(external_id: str, rng: random.Random, country: str | None = None) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "email": f"{external_id}@example.com",
        "country": country or rng.choice(COUNTRIES),
        "lifetime_value": rng.randrange(10_000),
    }


def give_profiles(runtime: PlatformRuntime, workspace_id: str, fillfactor: int | None = None) -> None:
    """Give the seeded users the email and country of :data:`PROFILE_SQL`, then leave the table as a long-lived
    one is: rewritten to its fill factor (PostgreSQL; ``fillfactor`` replaces the schema's), vacuumed and
    analyzed."""
    dialect = runtime.engine.dialect.name
    with runtime.transaction() as conn:
        conn.execute(text(PROFILE_SQL[dialect]), {"ws": workspace_id})
    if dialect == "postgresql":
        with runtime.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if fillfactor is not None:
                conn.exec_driver_sql(f"ALTER TABLE users SET (fillfactor = {int(fillfactor)})")
            conn.exec_driver_sql("VACUUM FULL users")
    vacuum(runtime)


def new_user_bodies(connection: int, count: int, rng: random.Random) -> list[bytes]:
    tag = f"{rng.getrandbits(32):08x}"
    return [
        orjson.dumps({"attributes": [_object(f"new-{tag}-{connection}-{i}-{k}", rng) for k in range(OBJECTS)]})
        for i in range(count)
    ]


def update_bodies(n_users: int, count: int, rng: random.Random, moves: float = MOVES) -> list[bytes]:
    """Updates of seeded users: their seeded country, except for a share ``moves`` of the objects (1.0: any
    country, the seeded one 1 time in 8)."""

    def country(u: int) -> str | None:
        return None if rng.random() < moves else COUNTRIES[u % len(COUNTRIES)]

    return [
        orjson.dumps(
            {"attributes": [_object(f"user-{u}", rng, country(u)) for u in rng.sample(range(1, n_users + 1), OBJECTS)]}
        )
        for _ in range(count)
    ]


def run_raw_load(
    base_url: str,
    path: str,
    bodies: Sequence[Sequence[bytes]],
    *,
    duration_s: float,
    warmup_s: float,
    headers: dict[str, str],
) -> LoadResult:
    """:func:`bench.harness.run_load`'s closed loop (one connection per list of bodies, counted the same way)
    with a client that writes each request as one buffer and reads the status line, headers and
    ``Content-Length`` body: about a tenth of httpx's CPU per request."""
    return asyncio.run(_raw_load(base_url, path, bodies, duration_s, warmup_s, headers))


async def _raw_load(
    base_url: str,
    path: str,
    bodies: Sequence[Sequence[bytes]],
    duration_s: float,
    warmup_s: float,
    headers: dict[str, str],
) -> LoadResult:
    result = LoadResult(duration_s=duration_s)
    url = urlsplit(base_url)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + duration_s

    async def connection(own: Sequence[bytes]) -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        requests = [f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body for body in own]
        i = 0
        try:
            while (sent := time.perf_counter()) < window_end:
                writer.write(requests[i % len(requests)])
                i += 1
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                content = await reader.readexactly(length)
                status = int(status_line.split(b" ", 2)[1]) if status_line else 599
                result.record(status, content, sent, time.perf_counter(), (window_start, window_end))
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(connection(own)) for own in bodies]
    await result.await_connections(tasks, warmup_s + duration_s + STUCK_AFTER_S)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--users", type=int, default=200_000, help="existing users (the update phase)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-dir", help="write py-spy profiles of the server here")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="the load generator's client")
    parser.add_argument("--short", action="store_true", help="CI: 3 s phases, 20k users")
    parser.add_argument(
        "--fillfactor", type=int, help="PostgreSQL: the users table's fill factor for this run (the schema's: 100)"
    )
    args = parser.parse_args()
    if args.short:
        args.duration, args.warmup, args.users = 3.0, 1.0, 20_000
    rng = random.Random(12)
    # Enough distinct bodies for 60,000 objects/s per phase: new users are never named twice.
    per_connection = int((args.duration + args.warmup) * 60_000 / OBJECTS / args.concurrency) + 10
    report: dict[str, Any] = {"bench": "users_track", "backend": args.backend, "machine": machine(), "phases": []}
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
    with throwaway_database(args.backend) as url:
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        try:
            ws_id = seed_workspace(runtime, args.users)
            give_profiles(runtime, ws_id, args.fillfactor)
            with runtime.transaction() as conn:
                creds = new_credentials(conn, ws_id)
        finally:
            runtime.close()
        database = url.rsplit("/", 1)[-1] if args.backend == "postgres" else None
        if database:
            report["postgres"] = postgres_settings(url)
        auth = {"Authorization": f"Bearer {creds['rest_api_key']}"}
        phases = {
            "new": [new_user_bodies(c, per_connection, rng) for c in range(args.concurrency)],
            "update": [update_bodies(args.users, per_connection, rng) for _ in range(args.concurrency)],
            "update, all move": [
                update_bodies(args.users, per_connection, rng, moves=1.0) for _ in range(args.concurrency)
            ],
        }
        with platform_server(url, args.workers) as server:
            for name, bodies in phases.items():

                def run(bodies: list[list[bytes]] = bodies) -> Any:
                    load = run_raw_load if args.client == "raw" else run_load
                    return load(
                        server.base_url,
                        "/users/track",
                        bodies,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        headers=auth,
                    )

                slug = name.replace(", ", "-").replace(" ", "-")
                profile_to = os.path.join(args.profile_dir, f"{args.backend}-{slug}.txt") if args.profile_dir else None
                report["phases"].append(
                    measured(
                        server,
                        args.backend,
                        f"users/track {name}, {OBJECTS} objects",
                        run,
                        OBJECTS,
                        "objects",
                        database=database,
                        profile_to=profile_to,
                        duration_s=args.warmup + args.duration,
                    )
                )
    for phase in report["phases"]:
        # The figure to compare on a shared machine: CPU per request does not depend on the share of it we got.
        per_s = phase["requests_per_s"] or float("nan")
        phase["cpu_ms_per_request"] = {
            name: round(cores * 1000 / per_s, 2) for name, cores in phase["cpu_cores_used"].items() if cores is not None
        }
    report["client"] = args.client
    report["users_fillfactor"] = args.fillfactor or 100
    report["load_average_at_end"] = os.getloadavg()
    # The target is the new users' and the updates' rate; the worst case is reported beside them.
    rates = [p.get("objects_per_s", 0) for p in report["phases"][:2]]
    report["target_met"] = all(r >= 30_000 for r in rates) if not args.short else None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
