"""What a real server process writes to its standard error when clients misbehave or hold secrets."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from cohortflow.platform.runtime import PlatformRuntime
from tests.support import ServerProcess, Tenant, start_server


def _send_half_and_hang_up(server: ServerProcess, path: str, headers: str = "") -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}"
            'Content-Length: 100000\r\n\r\n{"cohort_id": "c", "cohort_changes": ['.encode()
        )
        time.sleep(0.3)  # the server is now waiting for the rest of the body


def test_a_client_that_hangs_up_mid_body_is_one_calm_line(database_url: str, tenant: Tenant, tmp_path: Path) -> None:
    log = tmp_path / "server.err"
    with log.open("wb") as err, start_server(database_url, {"COHORTFLOW_LOG_LEVEL": "INFO"}, stderr=err) as server:
        bearer = f"Authorization: Bearer {tenant.rest_api_key}\r\n"
        for path, headers in [
            (f"/partners/{tenant.partner}/cohorts/users", ""),
            ("/users/track", bearer),
            ("/segments", bearer),
        ]:
            _send_half_and_hang_up(server, path, headers)
        # The server still serves, and has logged what it had to before this answer.
        assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        time.sleep(0.5)
    text = log.read_text()
    assert "Traceback" not in text, text[:3000]
    assert "unhandled" not in text and "Exception in ASGI application" not in text, text[:3000]
    assert text.count("client disconnected") >= 1, text
    assert tenant.rest_api_key not in text


def test_serve_warns_the_operator_when_autovacuum_is_off(
    runtime: PlatformRuntime, database_url: str, tmp_path: Path
) -> None:
    # Stale statistics make user lookups scan whole workspaces; the operator hears it when the server starts.
    if runtime.engine.dialect.name == "postgresql":
        with runtime.engine.connect() as conn:
            off = conn.exec_driver_sql("SHOW autovacuum").scalar() == "off"
    else:
        off = False  # SQLite has no autovacuum to miss
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        server = start_server(database_url, workers=1, stderr=stderr)
        server.stop()
    said = "autovacuum is off" in log.read_text()
    assert said == off
