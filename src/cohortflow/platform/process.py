"""The platform's HTTP API in a process of its own, on a loopback port.

Used by the demo (so the platform and the client each get a core), by the tests (which must be able to
``kill -9`` a server mid-request) and by the benchmarks.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Protocol
from urllib.parse import urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChildProcess(Protocol):
    """What :class:`ServerProcess` needs of its process: a :class:`subprocess.Popen`, or a forked child."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


@dataclass
class ServerProcess:
    """A running platform server; ``with`` stops it at the end of the block."""

    base_url: str
    database_url: str
    process: ChildProcess
    env: dict[str, str]

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_ready(self, startup_seconds: float = 60.0) -> ServerProcess:
        """Wait until the server answers ``/healthz``; stop it and raise if it exits or does not in time."""
        deadline = time.monotonic() + startup_seconds
        address = urlsplit(self.base_url)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"platform server exited with {self.process.returncode}")
            if _healthy(address.hostname or "127.0.0.1", address.port or 80):
                return self
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"platform server did not start within {startup_seconds:.0f} s")

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _healthy(host: str, port: int) -> bool:
    """Whether ``/healthz`` answers 200. Plain ``http.client``: an ``httpx`` call builds an SSL context each time
    (20-60 ms of CPU a poll, taken from the server that is starting on the same cores)."""
    connection = http.client.HTTPConnection(host, port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start_server(
    database_url: str,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    *,
    startup_seconds: float = 60.0,
    workers: int | None = None,
    stderr: IO[bytes] | None = None,
) -> ServerProcess:
    """Start ``uvicorn cohortflow.platform.api.server:app`` on ``database_url`` and wait until it answers.

    With ``workers``, start ``cohortflow platform serve --workers N`` instead, as an operator runs it. The
    server's standard error (its logs) goes to ``stderr`` when given, else to this process's.
    """
    return launch_server(database_url, extra_env, port, workers=workers, stderr=stderr).wait_ready(startup_seconds)


def launch_server(
    database_url: str,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    *,
    workers: int | None = None,
    stderr: IO[bytes] | None = None,
) -> ServerProcess:
    """Start the server like :func:`start_server` without waiting for it: the caller does other work while it
    imports and starts, then calls :meth:`ServerProcess.wait_ready`."""
    port = port or free_port()
    env = server_environment(database_url, port, extra_env)
    command = (
        [
            sys.executable, "-m", "uvicorn", "cohortflow.platform.api.server:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]
        if workers is None
        else [
            sys.executable, "-m", "cohortflow", "platform", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        ]
    )  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=stderr)
    return ServerProcess(f"http://127.0.0.1:{port}", database_url, process, env)


def server_environment(database_url: str, port: int, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a server process reads its settings from (:mod:`cohortflow.platform.api.server`)."""
    return {
        **os.environ,
        "COHORTFLOW_PLATFORM_DATABASE_URL": database_url,
        "COHORTFLOW_PLATFORM__PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "COHORTFLOW_LOG_LEVEL": os.environ.get("COHORTFLOW_LOG_LEVEL", "WARNING"),
        **(extra_env or {}),
    }
