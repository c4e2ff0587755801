"""What every benchmark needs: the machine's description, a throwaway database, a platform server in its
own process, an HTTP load generator (closed or open loop) and latency statistics.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cohortflow.platform.process import ChildProcess, start_server

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STUCK_AFTER_S = 15.0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@contextmanager
def throwaway_database(kind: str, admin_url: str = DEFAULT_POSTGRES_URL, keep: bool = False) -> Iterator[str]:
    """A new empty database (PostgreSQL: its own database on the server; SQLite: a temporary file)."""
    if kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="cf-bench-"))
        path = directory / "platform.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            if not keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
                directory.rmdir()
        return
    name = f"cf_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


POSTGRES_SETTINGS = ("server_version", "shared_buffers", "autovacuum", "synchronous_commit", "max_wal_size")


def postgres_settings(url: str) -> dict[str, str]:
    """The server settings that move these figures, recorded with them."""
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return {name: str(conn.exec_driver_sql(f"SHOW {name}").scalar()) for name in POSTGRES_SETTINGS}
    finally:
        engine.dispose()


@dataclass
class Server:
    base_url: str
    process: ChildProcess

    def pids(self) -> list[int]:
        """The server process and its descendants (uvicorn workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


@contextmanager
def platform_server(database_url: str, workers: int, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """``cohortflow platform serve --workers N`` as a separate process, as an operator runs it."""
    with start_server(database_url, extra_env, startup_seconds=120, workers=workers) as server:
        # Every worker must be up before measuring, or the first seconds measure start-up.
        time.sleep(1.0 if workers > 1 else 0.0)
        yield Server(server.base_url, server.process)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of processes (children not yet reaped are not included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def postgres_pids(database: str) -> list[int]:
    """The PostgreSQL backends serving ``database`` (titled ``postgres: [cluster:] user database host ...``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
            except OSError:
                continue
            if title[:1] == ["postgres:"] and database in title[1:4]:
                pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds a changing set of processes spends between ``start`` and ``stop``.

    Processes that appear meanwhile (a pool opening connections, so new PostgreSQL backends) count in full.
    """

    def __init__(self, list_pids: Callable[[], list[int]]) -> None:
        self.list_pids = list_pids
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {pid: cpu_seconds([pid]) for pid in self.list_pids()}

    def stop(self) -> float:
        pids = set(self.before) | set(self.list_pids())
        return sum(cpu_seconds([pid]) - self.before.get(pid, 0.0) for pid in pids)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    duration_s: float
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    """``(seconds into the window the request was sent, latency ms)`` for each measured request."""
    responses: list[Any] = field(default_factory=list)
    first_error: str | None = None
    unfinished: int = 0

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.duration_s

    def record(self, status: int, content: bytes, sent: float, done: float, window: tuple[float, float]) -> bool:
        """Count one answer; True when it is a success inside the measured ``window`` (start, end)."""
        if not 200 <= status < 300:
            # Every failure counts, measured or not: a benchmark must not hide errors.
            self.errors[status] = self.errors.get(status, 0) + 1
            self.first_error = self.first_error or f"{status}: {content[:300].decode(errors='replace')}"
            return False
        if not (window[0] <= sent and done <= window[1]):
            return False
        self.ok += 1
        self.latencies_ms.append((done - sent) * 1000)
        self.timeline.append((sent - window[0], (done - sent) * 1000))
        return True

    async def await_connections(self, tasks: Sequence[asyncio.Future[None]], timeout: float) -> None:
        """Wait for the connections' loops; requests still running ``timeout`` after the start are stuck: they
        are counted as unfinished and cancelled, not awaited. A connection that died counts as an error."""
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        self.unfinished = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                self.errors[599] = self.errors.get(599, 0) + 1
                self.first_error = self.first_error or repr(task.exception())

    def summary(self, units_per_request: int, unit: str) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "duration_s": round(self.duration_s, 2),
            "requests_ok": self.ok,
            "errors_by_status": self.errors,
            "unfinished_requests": self.unfinished,
            "first_error": self.first_error,
            "requests_per_s": round(self.requests_per_s, 1),
            f"{unit}_per_s": round(self.requests_per_s * units_per_request),
            "latency_ms": {
                "p50": round(percentile(lat, 50), 1),
                "p90": round(percentile(lat, 90), 1),
                "p99": round(percentile(lat, 99), 1),
                "max": round(lat[-1], 1) if lat else None,
            },
        }


def run_load(
    base_url: str,
    path: str,
    bodies: Sequence[Sequence[bytes]],
    *,
    duration_s: float,
    warmup_s: float,
    headers: dict[str, str] | None = None,
    keep_response: Callable[[bytes], Any] | None = None,
    rate_per_s: float | None = None,
) -> LoadResult:
    """``len(bodies)`` connections, each sending its own bodies in turn.

    Without ``rate_per_s`` it is a closed loop: each connection sends back to back, which measures capacity.
    With it the load is open: request *k* is due at ``k / rate_per_s`` and goes out on the first free
    connection, and its latency counts from when it was due, so time spent waiting for a connection is not
    hidden (no coordinated omission). That is how a partner sending at a fixed rate sees the platform.

    Only requests that start after the warm-up and finish inside the measured window count towards throughput
    and latency; every failed request counts as an error, and requests still running ``STUCK_AFTER_S`` after
    the window are cancelled and reported as unfinished.
    """
    return asyncio.run(_load(base_url, path, bodies, duration_s, warmup_s, headers or {}, keep_response, rate_per_s))


async def _load(
    base_url: str,
    path: str,
    bodies: Sequence[Sequence[bytes]],
    duration_s: float,
    warmup_s: float,
    headers: dict[str, str],
    keep_response: Callable[[bytes], Any] | None,
    rate_per_s: float | None,
) -> LoadResult:
    result = LoadResult(duration_s=duration_s)
    next_slot = 0
    start = time.perf_counter()
    window_start = start + warmup_s
    window_end = window_start + duration_s
    all_headers = {"Content-Type": "application/json", **headers}
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60, headers=all_headers) as client:

        async def connection(own: Sequence[bytes]) -> None:
            nonlocal next_slot
            i = 0
            while True:
                sent = time.perf_counter()
                if rate_per_s is not None:
                    due = start + next_slot / rate_per_s
                    next_slot += 1
                    if due > sent:
                        await asyncio.sleep(due - sent)
                    sent = due
                if sent >= window_end:
                    return
                body = own[i % len(own)]
                i += 1
                try:
                    response = await client.post(path, content=body)
                    status, content = response.status_code, response.content
                except httpx.HTTPError as exc:
                    status, content = 599, repr(exc).encode()
                measured = result.record(status, content, sent, time.perf_counter(), (window_start, window_end))
                if measured and keep_response is not None:
                    result.responses.append(keep_response(content))

        tasks = [asyncio.ensure_future(connection(own)) for own in bodies]
        await result.await_connections(tasks, warmup_s + duration_s + STUCK_AFTER_S)
    return result
