"""CSRF protection: every state-changing request carries a token the attacker's page cannot read.

Signed-in requests use the session's token (synchronizer pattern); the login form, which has no session yet,
uses a double-submit cookie so that a third-party page cannot log a victim into the attacker's account.
Forms send the token as the ``csrf_token`` field, scripts as the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from cohortflow.web.sessions import cookie_is_secure

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PRELOGIN_COOKIE = "cf_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Exception):
    """A state-changing request without the right token (answered 403)."""


def prelogin_token(request: Request) -> str:
    """The anonymous visitor's token: the cookie's, or a new one that :func:`set_prelogin_cookie` will send."""
    token = request.cookies.get(PRELOGIN_COOKIE)
    if not token:
        token = getattr(request.state, "new_prelogin_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_prelogin_csrf = token
    return token


def set_prelogin_cookie(request: Request, response: Response) -> None:
    token = getattr(request.state, "new_prelogin_csrf", None)
    if token:
        response.set_cookie(
            PRELOGIN_COOKIE, token, httponly=True, samesite="lax", secure=cookie_is_secure(request), path="/"
        )


async def check(request: Request, expected: str | None) -> None:
    """Raise :class:`CsrfRefused` unless a state-changing ``request`` carries ``expected``."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("the form is missing its CSRF token or it has expired: reload the page and try again")
