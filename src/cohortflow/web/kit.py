"""The web kit's entry point: a :class:`WebKit` builds a product's web app with login, sessions and CSRF in place.

A product (the platform's dashboard, the sync tool's web app) gives it its templates, its account and session
storage and its throttle storage, then adds its own views to the app :meth:`WebKit.create_app` returns.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cohortflow.web import csrf
from cohortflow.web.passwords import verify_password
from cohortflow.web.sessions import Session, SessionManager, cookie_is_secure
from cohortflow.web.throttle import LoginThrottle

KIT_DIR = Path(__file__).parent
FLASH_COOKIE = "cf_flash"
STATIC_MOUNT = "/static/web"
APP_STATIC_MOUNT = "/static/app"  # a product's own assets (``WebKit(static_dir=...)``)


class Accounts(Protocol):
    """A product's sign-in accounts, as the kit needs them."""

    def credentials(self, email: str) -> tuple[int, str] | None:
        """The account's id and password hash, or None when no enabled account has this e-mail address."""
        ...

    def logged_in(self, user_id: int, new_password_hash: str | None) -> None:
        """Record a successful sign-in (and store a rehashed password when the hash parameters changed)."""
        ...


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, scripts get 401."""


class SecurityHeaders:
    """Headers every page carries: no framing, no inline script, no caching of pages that may show a secret."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = STATIC_MOUNT in scope["path"] or APP_STATIC_MOUNT in scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.HEADERS)
                if not is_static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site: an absolute or scheme-relative URL would make the login an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


class WebKit:
    def __init__(
        self,
        *,
        product_name: str,
        templates_dir: Path,
        sessions: SessionManager,
        accounts: Accounts,
        throttle: LoginThrottle,
        context: Callable[[Request], Mapping[str, Any]] | None = None,
        static_dir: Path | None = None,
    ) -> None:
        self.product_name = product_name
        self.static_dir = static_dir
        self.sessions = sessions
        self.accounts = accounts
        self.throttle = throttle
        self._context = context
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(templates_dir), FileSystemLoader(KIT_DIR / "templates")]),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = when

    # --- the app -------------------------------------------------------------------------------------------

    def create_app(self, **kwargs: Any) -> FastAPI:
        """A FastAPI app (to mount under the product's prefix) whose every route is CSRF-checked."""
        app = FastAPI(
            dependencies=[Depends(self.csrf_guard)], docs_url=None, redoc_url=None, openapi_url=None, **kwargs
        )
        app.mount(STATIC_MOUNT, StaticFiles(directory=KIT_DIR / "static"), name="web-static")
        if self.static_dir is not None:
            app.mount(APP_STATIC_MOUNT, StaticFiles(directory=self.static_dir), name="app-static")
        app.add_middleware(SecurityHeaders)

        @app.exception_handler(LoginRequired)
        async def _login_required(request: Request, _exc: LoginRequired) -> Response:
            if request.method not in csrf.SAFE_METHODS or request.headers.get("x-requested-with"):
                return Response("Sign in first", status_code=401)
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            return RedirectResponse(f"{self.prefix(request)}/login?next={target}", status_code=303)

        @app.exception_handler(csrf.CsrfRefused)
        async def _csrf_refused(request: Request, exc: csrf.CsrfRefused) -> Response:
            return self.error_page(request, 403, "Request refused", str(exc))

        app.include_router(self._auth_router())
        return app

    def _auth_router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/login", response_class=HTMLResponse)
        def login_form(request: Request, next: str | None = None) -> Response:
            return self.render(request, "web/login.html", {"next": next or "", "email": "", "error": None})

        @router.post("/login", response_class=HTMLResponse)
        def login(
            request: Request,
            email: str = Form(""),
            password: str = Form(""),
            next: str = Form(""),
        ) -> Response:
            email = email.strip()
            address = request.client.host if request.client else "unknown"
            context = {"next": next, "email": email}
            if not self.throttle.allowed(email, address):
                error = "Too many failed sign-ins. Wait a few minutes and try again."
                return self.render(request, "web/login.html", {**context, "error": error}, status_code=429)
            found = self.accounts.credentials(email)
            ok, new_hash = verify_password(found[1] if found else None, password)
            if not ok or found is None:
                self.throttle.failed(email, address)
                error = "Wrong e-mail address or password."
                return self.render(request, "web/login.html", {**context, "error": error}, status_code=401)
            self.throttle.succeeded(email)
            self.accounts.logged_in(found[0], new_hash)
            response = RedirectResponse(safe_next(next, f"{self.prefix(request)}/"), status_code=303)
            # A new token at every sign-in, so a token planted before login (session fixation) is worthless.
            self.sessions.end(request, response)
            self.sessions.start(request, response, found[0])
            response.delete_cookie(csrf.PRELOGIN_COOKIE, path="/")
            return response

        @router.post("/logout")
        def logout(request: Request) -> Response:
            response = self.redirect(request, "/login", "You are signed out.")
            self.sessions.end(request, response)
            return response

        return router

    # --- per request ---------------------------------------------------------------------------------------

    @staticmethod
    def prefix(request: Request) -> str:
        """Where the product's app is mounted (``/dashboard``), so templates build links that work anywhere."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def session(self, request: Request) -> Session | None:
        return self.sessions.current(request)

    def require_session(self, request: Request) -> Session:
        session = self.sessions.current(request)
        if session is None:
            raise LoginRequired()
        return session

    async def csrf_guard(self, request: Request) -> None:
        if request.method in csrf.SAFE_METHODS:
            return
        session = await run_in_threadpool(self.sessions.current, request)
        await csrf.check(request, session.csrf_token if session else request.cookies.get(csrf.PRELOGIN_COOKIE))

    def csrf_token(self, request: Request) -> str:
        session = self.sessions.current(request)
        return session.csrf_token if session else csrf.prelogin_token(request)

    # --- responses -----------------------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, context: Mapping[str, Any] | None = None, *, status_code: int = 200
    ) -> HTMLResponse:
        prefix = self.prefix(request)
        values: dict[str, Any] = {
            "request": request,
            "product_name": self.product_name,
            "prefix": prefix,
            "static": lambda name: f"{prefix}{STATIC_MOUNT}/{name}",
            "app_static": lambda name: f"{prefix}{APP_STATIC_MOUNT}/{name}",
            "csrf_field": csrf.CSRF_FIELD,
            "csrf_token": self.csrf_token(request),
            "session": self.sessions.current(request),
            "flash": _read_flash(request),
        }
        if self._context is not None:
            values.update(self._context(request))
        values.update(context or {})
        response = HTMLResponse(self.env.get_template(template).render(values), status_code=status_code)
        csrf.set_prelogin_cookie(request, response)
        if values["flash"]:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def redirect(self, request: Request, path: str, message: str | None = None, kind: str = "info") -> RedirectResponse:
        """Post/redirect/get: ``path`` is relative to the product's prefix; ``message`` shows once on the next page."""
        response = RedirectResponse(f"{self.prefix(request)}{path}", status_code=303)
        if message:
            payload = base64.urlsafe_b64encode(json.dumps({"kind": kind, "text": message}).encode()).decode()
            response.set_cookie(
                FLASH_COOKIE, payload, max_age=60, httponly=True, samesite="lax", secure=cookie_is_secure(request)
            )
        return response

    @staticmethod
    def is_fragment_request(request: Request) -> bool:
        """A script asking for part of a page (``cohortflow-live`` sends ``X-Requested-With``), not a browser."""
        return bool(request.headers.get("x-requested-with"))

    def error_page(self, request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        return self.render(
            request,
            "web/error.html",
            {"title": title, "message": message, "status": status_code},
            status_code=status_code,
        )


def when(value: datetime | None, never: str = "never") -> str:
    """A timestamp as pages show it: UTC to the minute, the same for every viewer."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else never


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"kind": "error" if value.get("kind") == "error" else "info", "text": value["text"]}
