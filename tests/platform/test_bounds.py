"""Numbers, ids, durations and dates past what Python or the databases can hold: a clear 400, never a 500.

Each case was a 500 (an ``OverflowError`` or a driver error) before the edge bounded it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import canvases, segments, user_events, users
from tests.support import Tenant

TOO_BIG_ID = 2**63
FAR_FUTURE = "9999-12-31T23:59:59-14:00"  # year 10000 in UTC
FAR_PAST = "0001-01-01T00:00:00+01:00"  # year 0 in UTC


def _delay_canvas(**delay: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "entry_segment_id": "seg",
        "steps": [{"id": "d", "type": "delay", **delay, "next": "x"}, {"id": "x", "type": "exit"}],
    }


def _event(time: str) -> dict[str, Any]:
    return {"events": [{"external_id": "bounds-u1", "name": "e", "time": time}]}


def _segment(leaf: dict[str, Any]) -> dict[str, Any]:
    return {"name": "s", "filter": leaf}


# (method, path, body, words the 400's message must contain)
CASES: list[tuple[str, str, Any, str]] = [
    ("POST", "/canvases", _delay_canvas(hours=10**14), "hours"),
    ("POST", "/canvases", _delay_canvas(seconds=10**30), "seconds"),
    ("POST", "/canvases", _delay_canvas(days=36_500, hours=24), "at most 36500 days"),
    ("POST", "/canvases", {**_delay_canvas(days=1), "entry_schedule": {"type": "at", "at": FAR_FUTURE}}, "UTC"),
    (
        "POST",
        "/canvases",
        {**_delay_canvas(days=1), "entry_schedule": {"type": "recurring", "cron": "0 9 * * 1", "until": FAR_PAST}},
        "UTC",
    ),
    ("GET", f"/campaigns/x/sends/{TOO_BIG_ID}", None, "send_id"),
    ("GET", f"/campaigns/x/sends/{TOO_BIG_ID}/log", None, "send_id"),
    ("GET", "/campaigns/x/sends/1/log?after_user_id=" + str(TOO_BIG_ID), None, "after_user_id"),
    ("POST", "/campaigns/x/schedule", {"at": FAR_FUTURE}, "UTC"),
    ("POST", "/users/track", _event(FAR_FUTURE), "UTC"),
    ("POST", "/users/track", _event(FAR_PAST), "UTC"),
    ("POST", "/users/track", {"attributes": [{"external_id": "bounds-u1", "n": 2**64}]}, "64-bit"),
    ("POST", "/users/track", {"attributes": [{"external_id": "bounds-u1", "n": {"inc": -(2**63) - 1}}]}, "64-bit"),
    (
        "POST",
        "/users/track",
        {
            "purchases": [
                {
                    "external_id": "bounds-u1",
                    "product_id": "p",
                    "currency": "USD",
                    "price": 1e308,
                    "time": "2024-01-01T00:00:00Z",
                }
            ]
        },
        "price",
    ),
    (
        "POST",
        "/segments",
        _segment({"type": "custom_event", "event": "e", "within_days": 10**9}),
        "within_days",
    ),
    ("POST", "/segments", _segment({"type": "custom_event", "event": "e", "min_count": 2**63}), "min_count"),
    ("POST", "/segments", _segment({"type": "purchase", "within_days": 10**6}), "within_days"),
    (
        "POST",
        "/segments",
        _segment({"type": "custom_attribute", "attribute": "d", "operator": "within_last_days", "value": 10**9}),
        "at most",
    ),
    (
        "POST",
        "/segments",
        _segment({"type": "standard_attribute", "attribute": "created_at", "operator": "after", "value": FAR_FUTURE}),
        "UTC",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "words"), CASES, ids=[f"{c[0]} {c[1]} {c[3]}" for c in CASES])
def test_out_of_range_is_a_clear_400_that_changes_nothing(
    client: httpx.Client, tenant: Tenant, runtime: PlatformRuntime, method: str, path: str, body: Any, words: str
) -> None:
    def counts() -> list[int]:
        with runtime.engine.connect() as conn:
            return [
                conn.execute(
                    select(func.count()).select_from(t).where(t.c.workspace_id == tenant.workspace_id)
                ).scalar_one()
                for t in (users, user_events, segments, canvases)
            ]

    before = counts()
    r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {tenant.rest_api_key}"})
    assert r.status_code == 400, r.text
    assert words in r.json()["message"], r.json()
    assert counts() == before
