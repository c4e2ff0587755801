"""Webhooks: an HTTP POST of a JSON body, with a timeout and retries on transient failures.

Every request carries an ``Idempotency-Key`` header that is the same for every attempt at the same
message, including a resend after a crash, so a receiver that remembers keys sees each message once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from cohortflow import __version__
from cohortflow.platform.messaging.channels.base import DeliveryRejected, DeliveryUnavailable

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class OutgoingWebhook:
    url: str
    body: Any
    idempotency_key: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None


class WebhookChannel:
    def __init__(self, *, timeout_seconds: float, max_attempts: int, retry_initial_seconds: float) -> None:
        self._client = httpx.Client(
            timeout=timeout_seconds,
            headers={"User-Agent": f"cohortflow/{__version__}"},
            follow_redirects=False,
        )
        self._max_attempts = max_attempts
        self._retry_initial = retry_initial_seconds

    def send(self, webhook: OutgoingWebhook) -> None:
        """Deliver ``webhook`` or raise :class:`DeliveryRejected` / :class:`DeliveryUnavailable` with the reason."""
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential(multiplier=self._retry_initial, max=max(self._retry_initial * 8, 0.001)),
            retry=retry_if_exception_type(DeliveryUnavailable),
            reraise=True,
        )
        retrying(self._post, webhook)

    def _post(self, webhook: OutgoingWebhook) -> None:
        headers = {**webhook.headers, IDEMPOTENCY_HEADER: webhook.idempotency_key}
        timeout = webhook.timeout_seconds if webhook.timeout_seconds is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = self._client.post(webhook.url, json=webhook.body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise DeliveryUnavailable(f"webhook timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise DeliveryUnavailable(f"webhook unreachable: {exc or type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"webhook answered HTTP {status}"
        if status == 429 or status >= 500:
            raise DeliveryUnavailable(detail)
        raise DeliveryRejected(detail)

    def close(self) -> None:
        self._client.close()
