"""The ``/users/track`` lane (:mod:`cohortflow.platform.api.track_lane`) answers and stores exactly what the route
does, through real HTTP on SQLite and PostgreSQL.

A request with a ``Content-Length`` and a JSON body that validates takes the lane; the same bytes sent chunked
(no ``Content-Length``) always go on to the FastAPI route, so each body is sent both ways, to two workspaces
that start alike, and the answers and the stored users compared.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.types import Receive, Scope, Send

from cohortflow.platform.api.track_lane import UsersTrackLane
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import user_events, users
from cohortflow.platform.workspaces import authenticate_rest_key, create_rest_api_key, revoke_rest_api_key
from tests.support import Tenant, chunked, make_tenant

SEED = {
    "attributes": [
        {"external_id": "u1", "email": "u1@example.com", "country": "FR", "plan": "pro", "tags": ["a"], "n": 1},
        {"external_id": "u2", "first_name": "Ana", "plan": "free"},
    ]
}
_custom = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-1e20, 1e20, allow_nan=False),
    st.sampled_from(["x", "", "é", "a\x00b"]),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
    st.sampled_from([{"inc": 2}, {"add": ["b"]}, {"remove": ["a"]}, {"inc": "x"}]),
)
_attributes = st.fixed_dictionaries(
    {},
    optional={
        "first_name": st.sampled_from([None, "Ana", "x" * 256]),
        "email": st.sampled_from([None, "a@b.co", "a@b.co", "not an email"]),
        "country": st.sampled_from([None, "fr", "DE"]),
        "email_subscribe": st.sampled_from(["subscribed", "maybe"]),
        "gender": st.sampled_from(["f", "X"]),
        "plan": _custom,
        "tags": _custom,
        "n": _custom,
        "new": _custom,
    },
)
_identifier = st.one_of(
    st.sampled_from([{"external_id": e} for e in ("u1", "u2", "u3", "u4")]),
    st.just({"external_id": "u3", "_update_existing_only": True}),
    st.just({"user_alias": {"alias_name": "a1", "alias_label": "crm"}, "_update_existing_only": False}),
    st.just({"external_id": ""}),
    st.just({}),
)
_object = st.builds(lambda who, attrs: {**attrs, **who}, _identifier, _attributes)
_bodies = st.one_of(
    st.builds(lambda objects: {"attributes": objects}, st.lists(_object, max_size=5)),
    st.builds(
        lambda objects, extra: {"attributes": objects, **extra},
        st.lists(_object, min_size=1, max_size=3),
        st.sampled_from(
            [
                {"events": [{"external_id": "u1", "name": "e", "time": "2026-01-01T00:00:00Z"}]},
                {"purchases": []},
                {"unknown": 1},
            ]
        ),
    ),
    st.sampled_from([{}, [], {"attributes": None}, {"attributes": [1]}, {"attributes": [{"external_id": "u1"}] * 76}]),
)


def _send(client: httpx.Client, tenant: Tenant, raw: bytes, *, lane: bool) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tenant.rest_api_key}", "Content-Type": "application/json"}
    return client.post("/users/track", content=raw if lane else chunked(raw), headers=headers)


def _stored(runtime: PlatformRuntime, tenant: Tenant) -> tuple[list[dict[str, Any]], int]:
    """The workspace's users (without what is drawn at random or from the clock) and its number of events."""
    with runtime.read() as conn:
        rows = conn.execute(
            select(users).where(users.c.workspace_id == tenant.workspace_id).order_by(users.c.external_id)
        ).mappings()
        kept = [
            {k: v for k, v in row.items() if k not in ("id", "workspace_id", "braze_id", "random_bucket")}
            | {"created_at": None, "updated_at": row["updated_at"] > row["created_at"]}
            for row in rows
        ]
        events = conn.execute(
            select(func.count()).select_from(user_events).where(user_events.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
    return kept, int(events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_the_lane_answers_and_stores_what_the_route_does(
    client: httpx.Client, runtime: PlatformRuntime, body: Any
) -> None:
    outcomes = []
    for lane in (True, False):
        tenant = make_tenant(runtime)
        assert _send(client, tenant, orjson.dumps(SEED), lane=lane).status_code == 201
        before = _stored(runtime, tenant)
        response = _send(client, tenant, orjson.dumps(body), lane=lane)
        after = _stored(runtime, tenant)
        if response.status_code != 201:
            assert after == before  # a refused request changes nothing
        outcomes.append((response.status_code, response.headers["content-type"], response.content, after))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"attributes": [{"external_id": "u1", "n": 18446744073709551616}]}',  # orjson: a float; the route: 400
        b'{"attributes": [{"external_id": "u1", "n": 1.8446744073709552e19}]}',
        b'{"attributes": [{"external_id": "u1", "n": NaN}]}',
        b'{"attributes": [{"external_id": "u1", "n": 1, "n": "dup"}]}',
        b'{"attributes": [{"external_id": "u1", "note": "\\ud800"}]}',
    ],
)
def test_documents_decoders_disagree_on_get_the_routes_answer(
    client: httpx.Client, runtime: PlatformRuntime, raw: bytes
) -> None:
    outcomes = []
    for lane in (True, False):
        tenant = make_tenant(runtime)
        response = _send(client, tenant, raw, lane=lane)
        outcomes.append((response.status_code, response.content, _stored(runtime, tenant)))
    assert outcomes[0] == outcomes[1]


class _Route:
    """The application behind the lane, reduced to recording the requests handed on to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_the_lane_serves_the_common_body_and_hands_on_the_rest(runtime: PlatformRuntime) -> None:
    import asyncio

    tenant = make_tenant(runtime)
    route = _Route()
    lane = UsersTrackLane(route, runtime=runtime, handlers={}, max_bytes=4_000_000)
    common = orjson.dumps({"attributes": [{"external_id": "lane-1", "email": "l@example.com", "ltv": 3}]})

    async def call(raw: bytes, key: str | None = tenant.rest_api_key) -> int:
        transport = httpx.ASGITransport(app=lane)
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        async with httpx.AsyncClient(transport=transport, base_url="http://lane") as c:
            return (await c.post("/users/track", content=raw, headers=headers)).status_code

    assert asyncio.run(call(common)) == 201 and route.bodies == []
    invalid = orjson.dumps({"attributes": [{"external_id": "lane-2", "email": "not an email"}]})
    assert asyncio.run(call(invalid)) == 599 and route.bodies == [invalid]  # the route's body intact
    assert asyncio.run(call(common, key=None)) == 599  # no key: the route's 401
    assert asyncio.run(call(b'{"attributes": [NaN]}')) == 599


def test_a_revoked_key_stops_working_at_once(client: httpx.Client, runtime: PlatformRuntime) -> None:
    tenant = make_tenant(runtime)
    body = orjson.dumps({"attributes": [{"external_id": "k1", "email": "k1@example.com"}]})
    with runtime.transaction() as conn:
        _info, spare = create_rest_api_key(conn, tenant.workspace_id)  # the last live key cannot be revoked
    assert _send(client, tenant, body, lane=True).status_code == 201
    with runtime.transaction() as conn:
        key_id = authenticate_rest_key(conn, tenant.rest_api_key).key_id
        revoke_rest_api_key(conn, tenant.workspace_id, str(key_id))
    for lane in (True, False):
        r = _send(client, tenant, body, lane=lane)
        assert (r.status_code, r.json()) == (401, {"message": "Invalid API key"})
    other = Tenant(**{**tenant.__dict__, "rest_api_key": spare.plain})
    assert _send(client, other, body, lane=True).status_code == 201


def test_concurrent_lane_and_route_requests_on_the_same_users(server: Any, runtime: PlatformRuntime) -> None:
    """Eight connections change the same 75 users at once, half through the one-statement upsert (plain values)
    and half through the general path (an increment): no request fails or deadlocks, and every change lands."""
    tenant = make_tenant(runtime)
    tag = uuid.uuid4().hex[:8]
    ids = [f"c-{tag}-{i}" for i in range(75)]

    def send(n: int) -> int:
        order = ids if n % 2 else list(reversed(ids))
        value: Any = {"inc": 1} if n % 4 < 2 else f"v{n}"
        key = "visits" if n % 4 < 2 else f"k{n}"
        body = {"attributes": [{"external_id": e, key: value, "country": "FR"} for e in order]}
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            return _send(c, tenant, orjson.dumps(body), lane=True).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, range(8))) == [201] * 8
    with runtime.read() as conn:
        rows = conn.execute(
            select(users.c.custom_attributes).where(users.c.workspace_id == tenant.workspace_id)
        ).scalars()
        customs = list(rows)
    assert len(customs) == 75
    for custom in customs:
        assert custom == {"visits": 4, **{f"k{n}": f"v{n}" for n in range(8) if n % 4 >= 2}}
