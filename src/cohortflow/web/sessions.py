"""Server-side sessions: the browser holds a random token, the product's store holds its SHA-256 digest.

Server-side rather than signed cookies so that logout (and removing a user) ends a session at once, and no
signing secret has to be shared between server processes. Each session carries its own CSRF token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from cohortflow.clock import utcnow
from cohortflow.keys import hash_key

SESSION_COOKIE = "cf_session"
DEFAULT_SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    user_id: int
    csrf_token: str
    expires_at: datetime


class SessionStore(Protocol):
    """Where a product keeps its sessions (the platform: its database, so every server process sees them)."""

    def create(self, token_digest: str, session: Session) -> None: ...

    def load(self, token_digest: str, now: datetime) -> Session | None:
        """The live session with this digest, or None when unknown or expired."""
        ...

    def delete(self, token_digest: str) -> None: ...


def cookie_is_secure(request: Request) -> bool:
    """Secure cookies whenever the browser talks https (uvicorn applies X-Forwarded-Proto from trusted proxies)."""
    return request.url.scheme == "https"


class SessionManager:
    def __init__(self, store: SessionStore, *, lifetime: timedelta = DEFAULT_SESSION_LIFETIME) -> None:
        self.store = store
        self.lifetime = lifetime

    def start(self, request: Request, response: Response, user_id: int) -> Session:
        token = secrets.token_urlsafe(32)
        session = Session(user_id=user_id, csrf_token=secrets.token_urlsafe(32), expires_at=utcnow() + self.lifetime)
        self.store.create(hash_key(token), session)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.lifetime.total_seconds()),
            httponly=True,
            samesite="lax",
            secure=cookie_is_secure(request),
            path="/",
        )
        return session

    def current(self, request: Request) -> Session | None:
        """The request's session, loaded once per request."""
        if hasattr(request.state, "web_session"):
            cached: Session | None = request.state.web_session
            return cached
        token = request.cookies.get(SESSION_COOKIE)
        session = self.store.load(hash_key(token), utcnow()) if token else None
        request.state.web_session = session
        return session

    def end(self, request: Request, response: Response) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.store.delete(hash_key(token))
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_is_secure(request)
        )
