"""Property-based test over every operation of the platform's own OpenAPI document: no input gives a 5xx.

Schemathesis generates requests that fit each operation's schema (positive) and requests that break it
(negative), against a real server process on loopback. Credentials are real (the REST API key as Bearer, the
partner API key, data import key and app key in the body), so requests get past authentication and reach the
handlers; authentication's own failures are covered by the tests of each route. Each operation gets a workspace
and partner of its own, so an operation that revokes or rotates keys cannot lock the others out.

The number of examples is fixed and the generation derandomized, so a CI run is reproducible and bounded. For a
longer bug hunt by hand: ``COHORTFLOW_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/platform/test_openapi_fuzz.py``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cohortflow.platform.operator_tokens import create_operator_token
from cohortflow.platform.runtime import PlatformRuntime
from tests.support import ServerProcess, Tenant, make_tenant

EXAMPLES = int(os.environ.get("COHORTFLOW_FUZZ_EXAMPLES", "12"))


def _with_credentials(case: Any, tenant: Tenant, operator_token: str) -> None:
    """Put real credentials where each kind of route takes them, whatever was generated there."""
    admin = case.operation.path.startswith("/admin/")
    bearer = operator_token if admin else tenant.rest_api_key
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {bearer}"}
    for name in ("partner", "name" if admin else ""):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = tenant.partner
    if isinstance(case.body, dict):
        if case.operation.path.startswith("/partners/"):
            case.body.update(tenant.creds())
        elif case.operation.path == "/sdk/data":
            case.body["api_key"] = tenant.app_key


def _problem(response: Any) -> str | None:
    """What is wrong with a response, or None: never a 5xx, and every error is a JSON ``{"message": str}``."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.content[:500]!r}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"status {response.status_code} with a body that is not JSON: {response.content[:200]!r}"
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return f"status {response.status_code} without a message: {response.content[:200]!r}"
    return None


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, session: requests.Session, tenant: Tenant, operator_token: str
) -> str | None:
    """Run ``operation`` with generated requests of ``mode``; the first problem found, or None."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        # Shrinking costs many more requests; the failing case is printed as a curl command instead.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        _with_credentials(case, tenant, operator_token)
        response = case.call(base_url=base_url, session=session, timeout=60)
        problem = _problem(response)
        if problem:
            raise AssertionError(f"{problem}\n  {case.as_curl_command()}")

    try:
        check()
    except Unsatisfiable:
        # An operation without parameters or body has no way to break its schema.
        assert mode is GenerationMode.NEGATIVE, operation.label
    except AssertionError as exc:
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_no_operation_answers_5xx(server: ServerProcess, runtime: PlatformRuntime) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20, "the OpenAPI document lost operations"
    with runtime.transaction() as conn:
        _info, token = create_operator_token(conn, "openapi-fuzz")
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            tenant = make_tenant(runtime)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                problem = _fuzz(operation, mode, server.base_url, session, tenant, token.plain)
                if problem:
                    failures.append(problem)
    if failures:
        pytest.fail(f"{len(failures)} operation(s) misbehaved:\n" + "\n".join(failures))
