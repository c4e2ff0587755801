"""Property-based tests: whatever body or path a client sends, the partner API answers with a JSON message and
a status below 500, never a traceback. Runs against the real server on SQLite and PostgreSQL.

Examples are bounded (``max_examples``) so the run stays short; three shapes of input are drawn: arbitrary
JSON, bodies with valid keys and fuzzed fields (to reach validation and the database), and arbitrary paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.platform.runtime import PlatformRuntime
from tests.platform.test_cohort_import import add_user
from tests.support import ServerProcess, Tenant, make_tenant

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)
# Identifiers as clients could mangle them: empty, whitespace, NUL, astral characters, very long.
identifiers = st.text(max_size=40) | st.sampled_from(["", " ", "\x00", "a\x00b", "😀", "x" * 3000, "known-fuzz"])
aliases = st.fixed_dictionaries({"alias_name": identifiers, "alias_label": identifiers}) | json_values
changes = (
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "user_ids": st.lists(identifiers, max_size=6) | json_values,
                "device_ids": st.lists(identifiers, max_size=6) | json_values,
                "aliases": st.lists(aliases, max_size=4) | json_values,
                "should_remove": st.booleans() | json_values,
            },
        ),
        max_size=4,
    )
    | json_values
)
ENDPOINTS = ["cohorts", "cohorts/users", "cohorts/list"]


@pytest.fixture(scope="module")
def fuzz_tenant(runtime: PlatformRuntime) -> Tenant:
    tenant = make_tenant(runtime)
    add_user(runtime, tenant.workspace_id, "known-fuzz", aliases=[("known-fuzz", "known-fuzz")], devices=["known-fuzz"])
    return tenant


@pytest.fixture(scope="module")
def fuzz_client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def assert_clean(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text
    assert 'File "' not in r.text
    if r.request.method == "POST" and r.request.url.path.startswith("/partners/"):
        assert isinstance(r.json().get("message"), str)


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_values)
def test_arbitrary_json_bodies(fuzz_client: httpx.Client, fuzz_tenant: Tenant, endpoint: str, body: Any) -> None:
    assert_clean(fuzz_client.post(f"/partners/{fuzz_tenant.partner}/{endpoint}", json=body))


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    cohort_id=identifiers | json_values,
    cohort_changes=changes,
    name=identifiers | json_values,
    created_at=st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=30) | json_values,
    extra=st.dictionaries(st.text(max_size=10), json_values, max_size=2),
    drop=st.sets(st.sampled_from(["cohort_id", "cohort_changes", "name", "created_at"])),
)
def test_valid_keys_with_fuzzed_fields(
    fuzz_client: httpx.Client,
    fuzz_tenant: Tenant,
    endpoint: str,
    cohort_id: Any,
    cohort_changes: Any,
    name: Any,
    created_at: Any,
    extra: dict[str, Any],
    drop: set[str],
) -> None:
    body = {**extra, "cohort_id": cohort_id, "cohort_changes": cohort_changes, "name": name, "created_at": created_at}
    body = {k: v for k, v in body.items() if k not in drop}
    body.update(fuzz_tenant.creds())
    r = fuzz_client.post(f"/partners/{fuzz_tenant.partner}/{endpoint}", json=body)
    assert_clean(r)
    assert r.status_code in (200, 201, 400)


@FUZZ
@given(
    partner=st.text(max_size=30),
    suffix=st.sampled_from([*ENDPOINTS, "", "cohorts/users/x", "../../healthz"]) | st.text(max_size=20),
    raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE"]),
)
def test_arbitrary_paths_and_raw_bodies(
    fuzz_client: httpx.Client, fuzz_tenant: Tenant, partner: str, suffix: str, raw: bytes, method: str
) -> None:
    path = f"/partners/{quote(partner, safe='')}/{quote(suffix, safe='/')}"
    r = fuzz_client.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text
