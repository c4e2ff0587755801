"""Dashboard test helpers: dashboard users, signing in over HTTP, CSRF tokens out of pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import httpx

from cohortflow.platform.dashboard_users import create_user
from cohortflow.platform.runtime import PlatformRuntime

PASSWORD = "a long test password"


def make_user(runtime: PlatformRuntime, role: str, workspace_ids: Sequence[str]) -> str:
    """A new dashboard user (password :data:`PASSWORD`); returns its e-mail address."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with runtime.transaction() as conn:
        create_user(conn, email, role, PASSWORD, workspace_ids)
    return email


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(base_url: str, email: str, password: str = PASSWORD) -> httpx.Client:
    """A client holding a dashboard session."""
    client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=True)
    form = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
    )
    assert response.status_code == 200 and "/dashboard/w/" in str(response.url), response.text[:500]
    return client
