"""Webhooks: an HTTP POST of a JSON body (sent by :mod:`.concurrent`, with a timeout and retries).

Every request carries an ``Idempotency-Key`` header that is the same for every attempt at the same
message, including a resend after a crash, so a receiver that remembers keys sees each message once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class OutgoingWebhook:
    url: str
    body: Any
    idempotency_key: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None
