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


def test_openapi_document_lists_routes_and_the_errors_really_answered(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/healthz", "/partners/{partner}/cohorts", "/partners/{partner}/cohorts/users", "/users/track"):
        assert path in doc["paths"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            # Validation errors are 400 with {"message"}, never FastAPI's 422.
            assert "422" not in responses, (method, path)
            if path != "/healthz":
                assert "401" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(responses), (method, path)
    # A documented 400 is what the server answers to a malformed body.
    r = client.post("/users/track", json={"attributes": "nope"}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401
