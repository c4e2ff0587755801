"""The demo's customer load alone, phase by phase: wall time and the CPU of the platform server and the loader.

Generates the demo's warehouse, starts the platform as ``cohortflow demo`` does (one server process on SQLite),
then loads the back end's profiles (``/users/track``) and the app installs (``/sdk/data``) with the demo's own
loader, and prints, per phase, the wall time, the server's user and system CPU (from ``/proc``) and the loader's.
The machine is shared: read the CPU figures, and the load average printed beside them. From the repository root:

    python -m bench.bench_demo_load [--customers 20000] [--devices-at-once 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import machine
from cohortflow.demo.layout import launch_platform, platform_database_url, reset_directory
from cohortflow.demo.population import load_customers
from cohortflow.demo.warehouse import generate
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import PlatformSettings

PHASES = {"track": ("identified", "alias_only"), "sdk": ("anonymous", "anonymous_then_identified")}


def _server_cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--devices-at-once", type=int, default=32)
    args = parser.parse_args()
    directory = reset_directory(Path(tempfile.mkdtemp(prefix="bench-demo-load-")))
    server = launch_platform(directory)
    warehouse = directory / "warehouse.duckdb"
    generate(warehouse, args.customers)
    results: dict[str, Any] = {}
    with server:
        server.wait_ready()
        runtime = PlatformRuntime.open(PlatformSettings(database_url=platform_database_url(directory)))
        with runtime.transaction() as conn:
            ws = create_workspace(conn, "bench")
        for phase, kinds in PHASES.items():
            user0, sys0 = _server_cpu(server.process.pid)
            own0, started = _own_cpu(), time.monotonic()
            stats = asyncio.run(
                load_customers(
                    server.base_url,
                    ws.rest_api_key.plain,
                    ws.app_key.plain,
                    warehouse,
                    devices_at_once=args.devices_at_once,
                    kinds=kinds,
                )
            )
            wall = time.monotonic() - started
            user1, sys1 = _server_cpu(server.process.pid)
            requests = stats.track_requests + stats.sdk_requests
            results[phase] = {
                "requests": requests,
                "wall_s": round(wall, 2),
                "server_user_s": round(user1 - user0, 2),
                "server_sys_s": round(sys1 - sys0, 2),
                "loader_cpu_s": round(_own_cpu() - own0, 2),
                "server_cpu_ms_per_request": round((user1 - user0 + sys1 - sys0) / requests * 1000, 2),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
            print(phase, json.dumps(results[phase]))
        runtime.close()
    print(json.dumps({"bench": "demo_load", "machine": machine(), "phases": results}))


if __name__ == "__main__":
    main()
