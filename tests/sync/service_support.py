"""Helpers for the sync service tests: a fake clock, multi-sync workspace files, `sync serve` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import free_port
from tests.sync.support import FAST_RETRY, FakeBraze


class FakeClock:
    """An injectable clock: ``store.clock = FakeClock(...)``; ``advance`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def workspace_doc(fake: FakeBraze, syncs: dict[str, dict[str, Any]], **destination: Any) -> dict[str, Any]:
    """A workspace whose syncs all read ``customers`` and write to the fake Braze, one cohort each."""
    return {
        "version": 1,
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {"customers": {"source": "warehouse", "table": "customers", "primary_key": "id"}},
        "destinations": {
            "braze": {
                "type": "braze_cohorts",
                "rest_endpoint": fake.url,
                "partner": fake.partner,
                "partner_api_key": fake.partner_api_key,
                "data_import_key": fake.client_secret,
                "timeout_seconds": 5,
                "retry": FAST_RETRY,
                **destination,
            }
        },
        "syncs": {
            name: {
                "model": "customers",
                "destination": "braze",
                "identifier": {"external_id": "uid"},
                "cohort": {"mode": "create", "name": f"Cohort {name}"},
                **extra,
            }
            for name, extra in syncs.items()
        },
    }


def write_doc(directory: Path, doc: dict[str, Any]) -> Path:
    path = directory / "cohortflow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class ServiceProcess:
    base_url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    workspace: Path, state_url: str, extra_env: dict[str, str] | None = None, startup_seconds: float = 60
) -> ServiceProcess:
    """``cohortflow sync serve`` on a free loopback port; returns once it answers /healthz."""
    port = free_port()
    env = {
        **os.environ,
        "COHORTFLOW_SYNC_STATE_URL": state_url,
        "COHORTFLOW_SYNC__POLL_SECONDS": "0.2",
        "COHORTFLOW_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cohortflow", "sync", "-f", str(workspace), "serve", "--port", str(port)],
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sync serve exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return ServiceProcess(base_url, process)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("sync serve did not start")
