"""The web kit on a toy product: no platform, in-memory accounts and sessions."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from limits.storage import MemoryStorage

from cohortflow.web import WebKit
from cohortflow.web.kit import safe_next
from cohortflow.web.passwords import hash_password, verify_password
from cohortflow.web.sessions import SESSION_COOKIE, Session, SessionManager
from cohortflow.web.throttle import LoginThrottle

PASSWORD = "correct horse battery"


class Store:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def create(self, token_digest: str, session: Session) -> None:
        self.sessions[token_digest] = session

    def load(self, token_digest: str, now: datetime) -> Session | None:
        s = self.sessions.get(token_digest)
        return s if s and s.expires_at > now else None

    def delete(self, token_digest: str) -> None:
        self.sessions.pop(token_digest, None)


class Accounts:
    def __init__(self) -> None:
        self.hash = hash_password(PASSWORD)

    def credentials(self, email: str) -> tuple[int, str] | None:
        return (1, self.hash) if email == "a@example.com" else None

    def logged_in(self, user_id: int, new_password_hash: str | None) -> None:
        pass


@pytest.fixture
def kit_app(tmp_path: Path) -> tuple[TestClient, Store]:
    (tmp_path / "home.html").write_text(
        '{% extends "web/base.html" %}{% block content %}<p id="who">user {{ session.user_id }}</p>'
        '<form method="post" action="{{ prefix }}/act"><input type="hidden" name="{{ csrf_field }}" '
        'value="{{ csrf_token }}"></form>{% endblock %}'
    )
    store = Store()
    kit = WebKit(
        product_name="Toy",
        templates_dir=tmp_path,
        sessions=SessionManager(store),
        accounts=Accounts(),
        throttle=LoginThrottle(MemoryStorage(), per_account="3 per 15 minutes"),
    )
    app = kit.create_app()

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        kit.require_session(request)
        return kit.render(request, "home.html")

    @app.post("/act")
    def act(request: Request) -> HTMLResponse:
        kit.require_session(request)
        return HTMLResponse("done")

    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/toy", app)
    return TestClient(outer, base_url="http://testserver"), store


def _login(client: TestClient, password: str = PASSWORD) -> object:
    page = client.get("/toy/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    return client.post(
        "/toy/login",
        data={"email": "a@example.com", "password": password, "csrf_token": token, "next": "/toy/"},
        follow_redirects=False,
    )


def _csrf(client: TestClient) -> str:
    return client.get("/toy/").text.split('name="csrf_token" value="')[1].split('"')[0]


def test_no_session_redirects_to_login(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    response = client.get("/toy/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/toy/login?next=/toy/"


def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(kit_app: tuple[TestClient, Store]) -> None:
    client, store = kit_app
    response = _login(client)
    assert response.status_code == 303 and response.headers["location"] == "/toy/"  # type: ignore[attr-defined]
    cookie = response.headers["set-cookie"]  # type: ignore[attr-defined]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http; https gets Secure (below)
    assert client.get("/toy/").status_code == 200
    assert len(store.sessions) == 1
    client.post("/toy/logout", data={"csrf_token": _csrf(client)})
    assert store.sessions == {}
    assert client.get("/toy/", follow_redirects=False).status_code == 303


def test_https_cookies_are_secure(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    client.base_url = "https://testserver"  # type: ignore[assignment]
    response = _login(client)
    assert "Secure" in response.headers["set-cookie"]  # type: ignore[attr-defined]


def test_state_changes_need_the_csrf_token(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    _login(client)
    token = _csrf(client)
    assert client.post("/toy/act", data={}).status_code == 403
    assert client.post("/toy/act", data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/toy/act", data={"csrf_token": token}).status_code == 200
    assert client.post("/toy/act", headers={"X-CSRF-Token": token}).status_code == 200


def test_login_form_needs_its_token(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    response = client.post("/toy/login", data={"email": "a@example.com", "password": PASSWORD})
    assert response.status_code == 403


def test_failed_logins_are_throttled(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    assert [_login(client, "wrong password!").status_code for _ in range(3)] == [401, 401, 401]  # type: ignore[attr-defined]
    assert _login(client).status_code == 429  # type: ignore[attr-defined]  # even the right password waits


def test_pages_carry_security_headers(kit_app: tuple[TestClient, Store]) -> None:
    client, _ = kit_app
    response = client.get("/toy/login")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/toy/static/web/cohortflow-web.css").status_code == 200


def test_next_is_never_an_open_redirect() -> None:
    assert safe_next("/dashboard/w/x", "/") == "/dashboard/w/x"
    for bad in ("https://evil.example", "//evil.example", "/\\evil.example", None, ""):
        assert safe_next(bad, "/home") == "/home"


def test_passwords() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD) == (True, None)
    assert verify_password(stored, "nope nope nope")[0] is False
    assert verify_password(None, PASSWORD)[0] is False
    with pytest.raises(ValueError):
        hash_password("short")


def test_the_kit_never_imports_a_product() -> None:
    code = "import sys, cohortflow.web.kit; print(sorted(m for m in sys.modules if m.startswith('cohortflow.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "cohortflow.platform" not in out and "cohortflow.sync" not in out


def test_product_assets_and_fragment_requests(tmp_path: Path) -> None:
    """A product's own static folder is served beside the kit's; a script asking for a fragment gets 401 when the
    session is gone (a page would be redirected to the login form instead)."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "product.css").write_text("body { color: red; }")
    (tmp_path / "templates" / "page.html").write_text(
        '{% extends "web/base.html" %}{% block head %}<link rel="stylesheet" href="{{ app_static(\'product.css\') }}">'
        "{% endblock %}{% block content %}{{ 'fragment' if fragment else 'page' }}{% endblock %}"
    )
    kit = WebKit(
        product_name="Toy",
        templates_dir=tmp_path / "templates",
        sessions=SessionManager(Store()),
        accounts=Accounts(),
        throttle=LoginThrottle(MemoryStorage()),
        static_dir=tmp_path / "static",
    )
    app = kit.create_app()

    @app.get("/page", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        kit.require_session(request)
        return kit.render(request, "page.html", {"fragment": kit.is_fragment_request(request)})

    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/toy", app)
    client = TestClient(outer, base_url="http://testserver")
    asset = client.get("/toy/static/app/product.css")
    assert asset.status_code == 200 and "no-store" not in asset.headers.get("cache-control", "")
    assert client.get("/toy/static/web/cohortflow-live-1.0.js").status_code == 200
    assert client.get("/toy/page", follow_redirects=False).status_code == 303
    assert client.get("/toy/page", headers={"X-Requested-With": "cohortflow-live"}).status_code == 401
    login = client.get("/toy/login")
    assert "/toy/static/web/cohortflow-live-1.0.js" in login.text and "/toy/static/web/favicon.svg" in login.text
