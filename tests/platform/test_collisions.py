"""A request that PostgreSQL aborts for a deadlock with a concurrent transaction runs again: the client gets its
201, not the 503 of an unavailable database, and both sides' changes are stored.

Each test builds a real deadlock against a real server: a transaction of the test locks the user that the request
locks second; the request locks its first user and waits; the test's transaction then asks for that first user.
The test's session waits 30 s before looking for a deadlock and the server's sessions 1 s, so PostgreSQL always
aborts the request's side. ``/users/track`` locks users ``a`` then ``b``; ``/sdk/data`` identifying a device locks
the device's anonymous user, then the user it merges into.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.engine import retry_collisions
from tests.support import ServerProcess, Tenant, chunked, fresh_database, make_tenant, open_runtime, start_server


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatformRuntime, ServerProcess]]:
    with fresh_database("postgres", Path(tmp_path_factory.mktemp("collisions"))) as url:
        runtime = open_runtime(url)
        server = start_server(url)
        try:
            yield runtime, server
        finally:
            server.stop()
            runtime.close()


def _libpq_url(runtime: PlatformRuntime) -> str:
    return runtime.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _seed(server: ServerProcess, tenant: Tenant) -> None:
    body = {"attributes": [{"external_id": "a", "first_name": "A"}, {"external_id": "b", "first_name": "B"}]}
    answer = httpx.post(f"{server.base_url}/users/track", json=body, headers=_auth(tenant), timeout=30)
    assert answer.status_code == 201, answer.text


def _auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.rest_api_key}", "Content-Type": "application/json"}


def _user_id(runtime: PlatformRuntime, workspace_id: str, external_id: str) -> int:
    with runtime.read() as conn:
        found = conn.exec_driver_sql(
            "SELECT id FROM users WHERE workspace_id = %s AND external_id = %s", (workspace_id, external_id)
        ).scalar_one()
    return int(found)


def _deadlock_with(runtime: PlatformRuntime, request: Callable[[], Any], first: int, then: int) -> Any:
    """Run ``request`` (which locks user ``first``, then user ``then``) into a deadlock with a transaction that
    locks ``then``, then ``first``, and sets ``first_name`` of both to ``H``; ``request``'s outcome."""
    lock = "SELECT id FROM users WHERE id = %s FOR UPDATE"
    with psycopg.connect(_libpq_url(runtime)) as holder, psycopg.connect(_libpq_url(runtime), autocommit=True) as spy:
        holder.execute("SET deadlock_timeout = '30s'")
        holder.execute(lock, (then,))
        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(request)
            deadline = time.monotonic() + 20
            # Until the request's backend waits for a row lock (the one held here).
            while not spy.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s AND datname = "
                "current_database()",
                (holder.info.backend_pid,),
            ).fetchone():
                assert time.monotonic() < deadline, "the request never waited for the lock held here"
                assert not outcome.done(), outcome.result()
                time.sleep(0.01)
            holder.execute(lock, (first,))  # the request's backend finds the cycle within 1 s
            holder.execute("UPDATE users SET first_name = 'H' WHERE id IN (%s, %s)", (first, then))
            holder.commit()
            return outcome.result(timeout=30)


def _stored(runtime: PlatformRuntime, workspace_id: str) -> dict[str, tuple[str, Any]]:
    with runtime.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT external_id, first_name, custom_attributes FROM users WHERE workspace_id = %s",
            (workspace_id,),
        ).all()
    return {row[0]: (row[1], row[2].get("plan")) for row in rows}


BODIES = {
    # Attributes only: the lane's one statement (users locked in external id order).
    "one statement": {"attributes": [{"external_id": "a", "plan": "x"}, {"external_id": "b", "plan": "x"}]},
    # An event as well: the general path in one transaction (existing users locked in id order: a, then b).
    "general path": {
        "attributes": [{"external_id": "a", "plan": "x"}, {"external_id": "b", "plan": "x"}],
        "events": [{"external_id": "a", "name": "played", "time": "2026-12-01T00:00:00Z"}],
    },
}


@pytest.mark.parametrize("through", ["lane", "route"])
@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_request_aborted_by_a_deadlock_runs_again(
    pg: tuple[PlatformRuntime, ServerProcess], kind: str, through: str
) -> None:
    runtime, server = pg
    tenant = make_tenant(runtime)
    _seed(server, tenant)
    raw = orjson.dumps(BODIES[kind])
    # With a Content-Length the lane serves the request; chunked, the FastAPI route does.
    content = raw if through == "lane" else chunked(raw)

    def request() -> httpx.Response:
        return httpx.post(f"{server.base_url}/users/track", content=content, headers=_auth(tenant), timeout=60)

    ws = tenant.workspace_id
    answer = _deadlock_with(runtime, request, _user_id(runtime, ws, "a"), _user_id(runtime, ws, "b"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["attributes_processed"] == 2
    # The test's transaction committed first (the request waited for it on its second try), then the request.
    assert _stored(runtime, tenant.workspace_id) == {"a": ("H", "x"), "b": ("H", "x")}


def test_an_sdk_identification_aborted_by_a_deadlock_runs_again(pg: tuple[PlatformRuntime, ServerProcess]) -> None:
    # The device's anonymous user is locked, then merged into the user who has the external id.
    runtime, server = pg
    tenant = make_tenant(runtime)
    _seed(server, tenant)
    sdk = f"{server.base_url}/sdk/data"
    anonymous = httpx.post(sdk, json={"api_key": tenant.app_key, "device_id": "d1", "attributes": {"plan": "y"}})
    assert anonymous.status_code == 201, anonymous.text
    with runtime.read() as conn:
        device_user = conn.exec_driver_sql(
            "SELECT user_id FROM user_devices WHERE workspace_id = %s AND device_id = 'd1'", (tenant.workspace_id,)
        ).scalar_one()

    def identify() -> httpx.Response:
        return httpx.post(sdk, json={"api_key": tenant.app_key, "device_id": "d1", "external_id": "a"}, timeout=60)

    answer = _deadlock_with(runtime, identify, int(device_user), _user_id(runtime, tenant.workspace_id, "a"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["merged"] is True
    # The anonymous profile's attribute moved to "a", which kept the name the test's transaction gave it.
    assert _stored(runtime, tenant.workspace_id)["a"] == ("H", "y")


def test_collisions_are_tried_a_bounded_number_of_times(pg: tuple[PlatformRuntime, ServerProcess]) -> None:
    runtime, _server = pg
    tries = []

    def always_collides() -> None:
        tries.append(1)
        with runtime.engine.connect() as conn:
            conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'collided' USING ERRCODE = '40P01'; END $$")

    with pytest.raises(OperationalError, match="collided"):
        retry_collisions(always_collides, attempts=3)
    assert len(tries) == 3

    def fails_otherwise() -> None:
        tries.append(1)
        with runtime.engine.connect() as conn:
            conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = '53100'; END $$")

    tries.clear()
    with pytest.raises(OperationalError, match="disk full"):
        retry_collisions(fails_otherwise)
    assert len(tries) == 1  # only a collision is worth another try
