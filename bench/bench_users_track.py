"""``/users/track`` as a new user loads profiles: 75 objects a request, 8 connections, ``serve --workers 2``.

Each object carries an ``external_id``, an ``email``, a ``country`` and a number (a custom attribute), as a
customer's first import does. Two phases, closed loop:

- **new**: every object names a user that does not exist yet (it is created with its attributes);
- **update**: every object names one of the workspace's existing users (``--users`` of them, seeded by bulk SQL).

Reported: objects per second, request latency, and where the two cores went (server, PostgreSQL, the load
generator). ``--profile-dir`` adds py-spy profiles of the server per phase. Run from the repository root:

    python -m bench.bench_users_track                     # PostgreSQL, 20 s per phase
    python -m bench.bench_users_track --backend sqlite
    python -m bench.bench_users_track --short             # CI: 3 s per phase
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Any

import orjson

from bench.bench_platform_ingest import measured, new_credentials, seed_workspace
from bench.harness import machine, platform_server, postgres_settings, run_load, throwaway_database
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import PlatformSettings

OBJECTS = 75
COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "GB", "ES"]


def _object(external_id: str, rng: random.Random) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "email": f"{external_id}@example.com",
        "country": rng.choice(COUNTRIES),
        "lifetime_value": rng.randrange(10_000),
    }


def new_user_bodies(connection: int, count: int, rng: random.Random) -> list[bytes]:
    tag = f"{rng.getrandbits(32):08x}"
    return [
        orjson.dumps({"attributes": [_object(f"new-{tag}-{connection}-{i}-{k}", rng) for k in range(OBJECTS)]})
        for i in range(count)
    ]


def update_bodies(n_users: int, count: int, rng: random.Random) -> list[bytes]:
    return [
        orjson.dumps({"attributes": [_object(f"user-{u}", rng) for u in rng.sample(range(1, n_users + 1), OBJECTS)]})
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--users", type=int, default=200_000, help="existing users (the update phase)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-dir", help="write py-spy profiles of the server here")
    parser.add_argument("--short", action="store_true", help="CI: 3 s phases, 20k users")
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
        }
        with platform_server(url, args.workers) as server:
            for name, bodies in phases.items():

                def run(bodies: list[list[bytes]] = bodies) -> Any:
                    return run_load(
                        server.base_url,
                        "/users/track",
                        bodies,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        headers=auth,
                    )

                profile_to = os.path.join(args.profile_dir, f"{args.backend}-{name}.txt") if args.profile_dir else None
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
    rates = [p.get("objects_per_s", 0) for p in report["phases"]]
    report["target_met"] = all(r >= 30_000 for r in rates) if not args.short else None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
