"""CPU per request of profile ingestion, in process: ``/users/track`` and ``/sdk/data`` as the demo and a
customer's first import send them.

The platform's ASGI app is driven by ``httpx.ASGITransport`` (no sockets, no other process), one request at a
time, and the CPU time of the whole process is divided by the requests: the figure to compare between two
versions of the code when the machine is too busy for throughput to mean anything (alternate the versions).
The client's own cost is included; PostgreSQL's CPU (its backends serving the bench database) is reported
apart. Run from the repository root:

    python -m bench.bench_ingest_cpu                 # SQLite
    python -m bench.bench_ingest_cpu --backend postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.harness import cpu_seconds, machine, postgres_pids, throwaway_database
from cohortflow.platform.api.app import create_app
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import PlatformSettings

OBJECTS = 75


async def measure(database_url: str, scale: float) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds of CPU per request of this process, and of PostgreSQL (empty on SQLite), per shape."""
    runtime = PlatformRuntime.open(PlatformSettings(database_url=database_url))
    with runtime.transaction() as conn:
        ws = create_workspace(conn, "bench")
    app = create_app(runtime)
    tag = os.urandom(4).hex()
    rest = {"Authorization": f"Bearer {ws.rest_api_key.plain}"}
    results: dict[str, float] = {}
    database_cpu: dict[str, float] = {}
    database = database_url.rsplit("/", 1)[-1] if database_url.startswith("postgresql") else None

    def database_seconds() -> float:
        return cpu_seconds(postgres_pids(database)) if database else 0.0

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:

        async def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            response = await client.post(path, json=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")

        def profiles(i: int, version: int) -> list[dict[str, Any]]:
            return [
                {
                    "external_id": f"u-{tag}-{i}-{k}",
                    "email": f"u-{i}-{k}@example.com",
                    "country": ["FR", "DE"][version],
                    "lifetime_value": k + version,
                }
                for k in range(OBJECTS)
            ]

        async def track_new(i: int) -> None:
            await post("/users/track", {"attributes": profiles(i, 0)}, rest)

        async def track_update(i: int) -> None:
            await post("/users/track", {"attributes": profiles(i, 1)}, rest)

        async def track_alias_new(i: int) -> None:
            objects = [
                {
                    "user_alias": {"alias_name": f"a-{tag}-{i}-{k}", "alias_label": "crm"},
                    "_update_existing_only": False,
                    "email": f"a-{i}-{k}@example.com",
                    "country": "FR",
                    "lifetime_value": k,
                }
                for k in range(OBJECTS)
            ]
            await post("/users/track", {"attributes": objects}, rest)

        def device(i: int, login: bool) -> dict[str, Any]:
            body: dict[str, Any] = {
                "api_key": ws.app_key.plain,
                "device_id": f"d-{tag}-{i}-{login}",
                "attributes": {"first_name": "Léa", "country": "FR", "email": f"d-{i}@example.com", "plan": "pro"},
                "events": [{"name": "app_open"}],
            }
            if login:
                body["external_id"] = f"login-{tag}-{i}"
            return body

        async def sdk_new(i: int) -> None:
            await post("/sdk/data", device(i, False))

        async def sdk_login(i: int) -> None:
            await post("/sdk/data", device(i, True))

        shapes: list[tuple[str, Callable[[int], Awaitable[None]], int]] = [
            ("sdk/data new device", sdk_new, 400),
            ("sdk/data new device + changeUser", sdk_login, 300),
            ("users/track 75 new users", track_new, 100),
            ("users/track 75 updates", track_update, 100),
            ("users/track 75 new alias-only users", track_alias_new, 20),
        ]
        for name, send, count in shapes:
            count = max(5, int(count * scale))
            for i in range(10):  # warm-up: statement caches, prepared statements
                await send(1_000_000 + i)
            cpu, db_cpu = time.process_time(), database_seconds()
            for i in range(count):
                await send(i)
            results[name] = round((time.process_time() - cpu) / count * 1000, 2)
            if database:
                database_cpu[name] = round((database_seconds() - db_cpu) / count * 1000, 2)
    runtime.close()
    return results, database_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    args = parser.parse_args()
    host = machine()
    with throwaway_database(args.backend) as url:
        figures, database_figures = asyncio.run(measure(url, args.scale))
    for name, ms in figures.items():
        database = f" + {database_figures[name]:.2f} ms of PostgreSQL" if name in database_figures else ""
        print(f"{args.backend} {name}: {ms:.2f} ms of CPU per request{database}")
    print(json.dumps({"bench": "ingest_cpu", "backend": args.backend, "machine": host,
                      "load_average_at_end": os.getloadavg(), "ms_cpu_per_request": figures,
                      "ms_postgres_cpu_per_request": database_figures}))  # fmt: skip


if __name__ == "__main__":
    main()
