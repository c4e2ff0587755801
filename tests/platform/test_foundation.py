"""Foundation: migrations on both databases, health, error envelope, body limit, OpenAPI."""

from __future__ import annotations

import httpx
from sqlalchemy import inspect

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import metadata


def test_migrations_create_every_table(runtime: PlatformRuntime) -> None:
    tables = set(inspect(runtime.engine).get_table_names())
    assert set(metadata.tables) <= tables


def test_health(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"message": "Not Found"}


def test_body_over_4mb_is_413(client: httpx.Client) -> None:
    r = client.post("/partners/x/cohorts/users", content=b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}")
    assert r.status_code == 413
    assert "4 MB" in r.json()["message"]


def test_openapi_document_lists_routes(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert "/healthz" in doc["paths"]
