"""The one-statement upsert of ``/users/track`` (PostgreSQL) stores what the general path stores, for any body."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select

from cohortflow.platform import track_request, tracking, user_upsert
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import users
from cohortflow.platform.workspaces import create_workspace
from tests.support import fresh_database, open_runtime

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
_EXTERNAL_IDS = ["u1", "u2", "u3", "u4", "u5"]
# u1-u3 exist before the request (with attributes), u4-u5 do not.
_SEED = [
    {"external_id": "u1", "email": "u1@example.com", "country": "FR", "plan": "pro", "tags": ["a"], "n": 1},
    {"external_id": "u2", "first_name": "Ana", "plan": "free", "nested": {"k": [1, None]}},
    {"external_id": "u3"},
]
_plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-1e20, 1e20, allow_nan=False),
    st.sampled_from(["x", "", "é", "FR"]),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
    st.just({"k": None, "j": [1.5]}),
)
# Operations whose result depends on the stored value are the general path's: rarer, so the upsert gets tried.
_custom = st.one_of(*[_plain] * 12, st.sampled_from([{"inc": 2}, {"add": ["b"]}, {"remove": ["a"]}]))
# Mostly valid values, so that most bodies get as far as the database.
_attributes = st.fixed_dictionaries(
    {},
    optional={
        "first_name": st.sampled_from([None, "Ana", "é" * 3]),
        "email": st.sampled_from([None, "a@b.co", "B@example.com", "a@b.co", "not an email"]),
        "country": st.sampled_from([None, "fr", "DE", "France"]),
        "language": st.sampled_from([None, "en"]),
        "email_subscribe": st.sampled_from([None, "subscribed", "opted_in"]),
        "gender": st.sampled_from([None, "f", "M"]),
        "dob": st.sampled_from([None, "1980-12-21"]),
        "plan": _custom,
        "tags": _custom,
        "n": _custom,
        "nested": _custom,
        "new": _custom,
    },
)
_object = st.builds(
    lambda ext, attrs, only: (
        {"external_id": ext, **attrs} | ({"_update_existing_only": only} if only is not None else {})
    ),
    st.sampled_from(_EXTERNAL_IDS),
    _attributes,
    st.sampled_from([*[None] * 8, False, True]),
)


@pytest.fixture(scope="module")
def pg_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformRuntime]:
    with fresh_database("postgres", Path(tmp_path_factory.mktemp("upsert"))) as url:
        runtime = open_runtime(url)
        yield runtime
        runtime.close()


def _apply(runtime: PlatformRuntime, body: dict[str, Any], *, set_based: bool) -> tuple[Any, list[dict[str, Any]]]:
    """A fresh workspace with the seed users, then ``body``: the response (or the error) and the stored users."""
    with runtime.transaction() as conn:
        workspace_id = create_workspace(conn, "upsert").id
        seed = track_request.TrackRequest.model_validate({"attributes": _SEED})
        tracking.track(conn, workspace_id, seed, now=NOW, set_based=False)
    outcome: Any
    try:
        with runtime.transaction() as conn:
            request = track_request.TrackRequest.model_validate(body)
            outcome = tracking.track(conn, workspace_id, request, now=LATER, set_based=set_based).model_dump()
    except InvalidRequest as exc:
        outcome = ("InvalidRequest", exc.message)
    with runtime.read() as conn:
        rows = conn.execute(select(users).where(users.c.workspace_id == workspace_id).order_by(users.c.external_id))
        stored = [
            {k: v for k, v in row.items() if k not in ("id", "workspace_id", "braze_id", "random_bucket")}
            for row in rows.mappings()
        ]
    return outcome, stored


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_object, min_size=1, max_size=6))
# A later object of the same user sets again what an earlier one removed (and the reverse).
@example(
    [{"external_id": "u1", "plan": None}, {"external_id": "u1", "plan": "x", "n": None}, {"external_id": "u1", "n": 1}]
)
@example([{"external_id": "u4", "plan": None, "email": None}, {"external_id": "u4", "plan": "x"}])
def test_the_upsert_stores_what_the_general_path_stores(pg_runtime: PlatformRuntime, objects: list[Any]) -> None:
    body = {"attributes": objects}
    try:
        track_request.TrackRequest.model_validate(body)
    except ValidationError:
        return
    request = track_request.TrackRequest.model_validate(body)
    event("upsert" if user_upsert._fold(request.attributes or []) is not None else "general path")
    assert _apply(pg_runtime, body, set_based=True) == _apply(pg_runtime, body, set_based=False)


def test_the_common_body_takes_the_upsert(pg_runtime: PlatformRuntime) -> None:
    objects = [{"external_id": e, "email": f"{e}@example.com", "country": "fr", "ltv": 3} for e in _EXTERNAL_IDS]
    request = track_request.TrackRequest.model_validate({"attributes": objects})
    assert user_upsert._fold(request.attributes or []) is not None
    assert _apply(pg_runtime, {"attributes": objects}, set_based=True) == _apply(
        pg_runtime, {"attributes": objects}, set_based=False
    )
