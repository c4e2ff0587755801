"""What the sync-engine benchmarks share: a DuckDB warehouse, a workspace file, seeded sync state, and
child processes measured by the kernel (wall time, CPU seconds, peak RSS).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import yaml
from sqlalchemy import bindparam, text

from cohortflow.sync import load_workspace
from cohortflow.sync.destinations import bind_sync
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import TS

SYNC = "bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_warehouse(path: Path, sql: str) -> int:
    """A DuckDB file whose table ``customers (id BIGINT, external_id VARCHAR)`` holds the rows of ``sql``."""
    con = duckdb.connect(str(path))
    try:
        con.execute(f"CREATE OR REPLACE TABLE customers AS {sql}")
        row = con.execute("SELECT count(*) FROM customers").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def write_workspace(
    directory: Path, endpoint: str, creds: dict[str, str] | None = None, destination: dict[str, Any] | None = None
) -> Path:
    """``cohortflow.yaml``: the warehouse's ``customers`` table synced by external id into a created cohort.

    ``creds``: partner, partner_api_key, client_secret (placeholders when the destination is never called).
    """
    creds = creds or {"partner": "hightouch", "partner_api_key": "unused", "client_secret": "unused"}
    config = {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {"customers": {"source": "warehouse", "table": "customers", "primary_key": "id"}},
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": endpoint,
                "partner": creds["partner"],
                "partner_api_key": creds["partner_api_key"],
                "data_import_key": creds["client_secret"],
                **(destination or {}),
            }
        },
        "syncs": {
            SYNC: {
                "model": "customers",
                "destination": "braze",
                "identifier": {"external_id": "external_id"},
                "cohort": {"mode": "create", "name": "Benchmark cohort"},
            }
        },
    }
    path = directory / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


SQLITE_MEMBERS = """
WITH RECURSIVE g(x) AS (SELECT :lo UNION ALL SELECT x + 1 FROM g WHERE x < :hi)
INSERT INTO sync_members (sync_name, kind, label, value, confirmed_at)
SELECT :sync, 'e', '', :prefix || x, :now FROM g
"""

PG_MEMBERS = """
INSERT INTO sync_members (sync_name, kind, label, value, confirmed_at)
SELECT :sync, 'e', '', :prefix || g, :now FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
"""


def seed_confirmed(workspace: Path, state_url: str, prefix: str, lo: int, hi: int) -> None:
    """Confirmed membership ``{prefix}{lo}`` .. ``{prefix}{hi}`` for the bench sync, as if delivered before.

    Bulk SQL into ``sync_members``, then the sync's target and a fresh membership token through the state
    store's own functions (so the planner treats it as this destination's confirmed state).
    """
    with load_workspace(workspace, state_url=state_url) as ws:
        store: StateStore = ws.store
        target = bind_sync(ws.destination("braze"), SYNC, ws.sync(SYNC)).target
        sql = PG_MEMBERS if store.engine.dialect.name == "postgresql" else SQLITE_MEMBERS
        statement = text(sql).bindparams(bindparam("now", type_=TS))
        chunk = 1_000_000
        for start in range(lo, hi + 1, chunk):
            with store.transaction() as conn:
                params = {"sync": SYNC, "prefix": prefix, "lo": start, "hi": min(hi, start + chunk - 1)}
                conn.execute(statement, {**params, "now": store.clock()})
        with store.transaction() as conn:
            store.bind_target(conn, SYNC, target)
            store.confirm(conn, SYNC, "add", [])  # no rows: only marks membership as changed (a new token)


@dataclass
class ChildResult:
    figures: dict[str, Any]
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def run_child(args: Sequence[str], env: dict[str, str] | None = None) -> ChildResult:
    """Run ``python -m <args>`` and return the JSON object it prints last, with the kernel's accounting."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    return ChildResult(
        figures=json.loads(lines[-1]) if lines else {},
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports kilobytes
    )


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


class _Accept(BaseHTTPRequestHandler):
    """Answers every POST with 201 ``{"message": "success"}`` at once, on a kept-alive connection.

    The answer leaves in one write with Nagle off: written in pieces, each would wait for the client's
    delayed ACK (40 ms), and the receiver, not the sync, would set the pace.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = b'{"message":"success"}'
    answer = (
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.wfile.write(self.answer)


def serve_receiver(port: int) -> None:
    """The fast receiver (blocks): run it in its own process."""
    ThreadingHTTPServer(("127.0.0.1", port), _Accept).serve_forever()


@contextmanager
def receiver_process(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from bench.sync_support import serve_receiver; serve_receiver({port})"]
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
