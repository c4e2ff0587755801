"""HTTP status handling shared by the destination clients: which answers are retried, split or fatal."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import orjson

from cohortflow.redact import redact_url
from cohortflow.sync.debugger import RecordingTransport, RequestRecorder
from cohortflow.sync.errors import (
    DestinationAuthError,
    DestinationBadAnswer,
    DestinationRejected,
    DestinationUnavailable,
)

RETRYABLE_STATUSES = frozenset({408, 423, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (``"12"``) or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:300]


def _success(response: httpx.Response, what: str) -> dict[str, Any]:
    """The body of a 2xx that is Braze's success, ``{"message": "success", ...}``; else DestinationBadAnswer.

    A proxy, a captive portal or a mock that answers 2xx without forwarding must not count as delivered.
    """
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("message") == "success":
        return body
    snippet = response.text[:200] if response.content else "(empty body)"
    raise DestinationBadAnswer(
        f"{what}: POST {redact_url(str(response.request.url))} answered {response.status_code} without Braze's "
        f'success body {{"message": "success"}}: {snippet}'
    )


def check(response: httpx.Response, what: str) -> Any:
    """The body of a successful answer (a 2xx carrying Braze's success body), else the right error."""
    status = response.status_code
    if 200 <= status < 300:
        return _success(response, what)
    message = _message(response)
    if status in (401, 403):
        raise DestinationAuthError(f"{what}: the destination refused the credentials ({status}): {message}")
    if status in RETRYABLE_STATUSES:
        raise DestinationUnavailable(
            f"{what}: {status} {message}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status in (400, 413):
        # Braze's exact sentence: it becomes the rejection reason of the identifiers a split isolates.
        raise DestinationRejected(message, status=status)
    raise DestinationRejected(f"{what}: the destination answered {status}: {message}", status=status)


async def post_json(
    client: httpx.AsyncClient, url: str, body: Any, what: str, headers: dict[str, str] | None = None
) -> Any:
    try:
        response = await client.post(
            url, content=orjson.dumps(body), headers={"content-type": "application/json", **(headers or {})}
        )
    except httpx.TimeoutException as exc:
        where = redact_url(str(client.base_url).rstrip("/") + url)
        raise DestinationUnavailable(f"{what}: POST {where} timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        where = redact_url(str(client.base_url).rstrip("/") + url)
        raise DestinationUnavailable(f"{what}: cannot reach POST {where}: {type(exc).__name__}: {exc}") from exc
    return check(response, what)


def recorded(
    transport: httpx.AsyncBaseTransport | None, max_connections: int, recorder: RequestRecorder | None
) -> httpx.AsyncBaseTransport:
    """The client's transport (a pooled one unless given), wrapped to feed the request debugger when asked."""
    inner = transport or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))
    return RecordingTransport(inner, recorder) if recorder is not None else inner
