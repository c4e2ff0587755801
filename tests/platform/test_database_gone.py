"""A server whose PostgreSQL database goes away mid-flight answers 503 with a clear message, not 500."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support import fresh_database, make_tenant, open_runtime, start_server


def test_postgres_database_dropped_under_a_running_server_is_503(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as url:
        runtime = open_runtime(url)
        tenant = make_tenant(runtime)
        runtime.close()
        log = tmp_path / "server.err"
        with log.open("wb") as err, start_server(url, stderr=err) as server:
            bearer = {"Authorization": f"Bearer {tenant.rest_api_key}"}
            assert httpx.get(f"{server.base_url}/segments", headers=bearer).status_code == 200
            admin = create_engine(
                make_url(url).set(drivername="postgresql+psycopg", database="postgres"), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)'))
            admin.dispose()
            answers = [
                httpx.get(f"{server.base_url}/segments", headers=bearer),
                httpx.get(f"{server.base_url}/healthz"),
                httpx.post(
                    f"{server.base_url}/users/track",
                    headers=bearer,
                    json={"attributes": [{"external_id": "a", "n": 1}]},
                ),
                httpx.post(
                    f"{server.base_url}/partners/{tenant.partner}/cohorts/users",
                    json={**tenant.creds(), "cohort_id": "c", "cohort_changes": []},
                ),
            ]
        for r in answers:
            assert r.status_code == 503, (r.request.url, r.text)
            assert r.json() == {"message": "The platform database is unavailable; retry later"}
            assert r.headers["retry-after"] == "5"
        assert "Traceback" not in log.read_text()
