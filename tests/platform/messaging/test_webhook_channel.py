"""The webhook channel's timeout and retries against a slow loopback receiver."""

from __future__ import annotations

import time
import uuid

from cohortflow.platform.messaging.delivery import Deliverer
from cohortflow.platform.messaging.messages import WebhookMessageSpec
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.sinks import WebhookCall, WebhookSink


def test_a_receiver_slower_than_the_timeout_fails_the_message_after_the_retries(webhook_sink: WebhookSink) -> None:
    path = f"/slow/{uuid.uuid4().hex}"

    def slow(call: WebhookCall) -> int:
        if call.path == path:
            time.sleep(1.0)
        return 200

    webhook_sink.on_call = slow
    deliverer = Deliverer(MessagingSettings(delivery_max_attempts=2, delivery_retry_initial_seconds=0.01))
    message = WebhookMessageSpec(
        channel="webhook", url=webhook_sink.url(path), body={"u": "{{ external_id }}"}, timeout_seconds=0.2
    )
    try:
        outcome = deliverer.deliver(message, {"external_id": "slowpoke"}, "key-slow")
    finally:
        deliverer.close()
        webhook_sink.on_call = None
    assert outcome.status == "failed"
    assert outcome.reason == "webhook timed out: TimeoutError"
    calls = webhook_sink.at(path)
    assert len(calls) == 2  # the first try and one retry, both with the same key
    assert {c.headers["idempotency-key"] for c in calls} == {"key-slow"}


def test_an_unreachable_receiver_fails_the_message_with_the_reason() -> None:
    from tests.support import free_port

    deliverer = Deliverer(MessagingSettings(delivery_max_attempts=1))
    message = WebhookMessageSpec(channel="webhook", url=f"http://127.0.0.1:{free_port()}/x", body={})
    try:
        outcome = deliverer.deliver(message, {"external_id": "u"}, "k")
    finally:
        deliverer.close()
    assert outcome.status == "failed"
    assert (outcome.reason or "").startswith("webhook unreachable:")
