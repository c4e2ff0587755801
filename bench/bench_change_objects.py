"""Server CPU spent on a 4 MB ``/cohorts/users`` body made of ~262,000 empty change objects.

Starts a platform server process on SQLite on loopback, sends the body ``--requests`` times with valid keys and
reads the server process's CPU time (user + system, from ``/proc``) before and after. Run from the repository
root:

    python -m bench.bench_change_objects
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson

from cohortflow.platform.import_keys import create_import_key
from cohortflow.platform.partners import create_partner
from cohortflow.platform.process import start_server
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.workspaces import create_workspace
from cohortflow.settings import PlatformSettings
from cohortflow.wire.cohort_import import MAX_PAYLOAD_BYTES


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/platform.db"
        runtime = PlatformRuntime.open(PlatformSettings(database_url=url))
        with runtime.transaction() as conn:
            ws = create_workspace(conn, "bench")
            partner = create_partner(conn, "hightouch")
            _info, key = create_import_key(conn, ws.id, "hightouch")
        runtime.close()
        head = {"partner_api_key": partner.api_key.plain, "client_secret": key.plain, "cohort_id": "c"}
        empty = b'{"user_ids":[]},'
        room = MAX_PAYLOAD_BYTES - len(orjson.dumps({**head, "cohort_changes": []}))
        count = room // len(empty)
        body = orjson.dumps({**head, "cohort_changes": [{"user_ids": []}] * count})
        assert len(body) <= MAX_PAYLOAD_BYTES
        with start_server(url) as server, httpx.Client(base_url=server.base_url, timeout=120) as client:
            pid = server.process.pid
            statuses = []
            cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
            for _ in range(args.requests):
                r = client.post(
                    "/partners/hightouch/cohorts/users", content=body, headers={"content-type": "application/json"}
                )
                statuses.append(r.status_code)
            cpu = (_cpu_seconds(pid) - cpu0) / args.requests
            wall = (time.perf_counter() - wall0) / args.requests
    print(
        f"{count:,} change objects, {len(body) / 1e6:.1f} MB: status {sorted(set(statuses))}, "
        f"server CPU {cpu * 1000:.0f} ms and wall {wall * 1000:.0f} ms per request (mean of {args.requests})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
