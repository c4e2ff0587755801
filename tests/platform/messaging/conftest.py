"""Fixtures for messaging tests: loopback SMTP and webhook receivers, and a platform server that uses them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cohortflow.settings import MessagingSettings
from tests.platform.messaging.sinks import SmtpSink, WebhookSink
from tests.support import ServerProcess, start_server


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture(scope="session")
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    sink.start()
    yield sink
    sink.stop()


def messaging_env(smtp_port: int) -> dict[str, str]:
    return {
        "COHORTFLOW_MESSAGING__SMTP_HOST": "127.0.0.1",
        "COHORTFLOW_MESSAGING__SMTP_PORT": str(smtp_port),
        "COHORTFLOW_MESSAGING__DELIVERY_RETRY_INITIAL_SECONDS": "0.01",
    }


@pytest.fixture(scope="session")
def messaging_settings(smtp_sink: SmtpSink) -> MessagingSettings:
    return MessagingSettings(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, delivery_retry_initial_seconds=0.01)


@pytest.fixture(scope="session")
def messaging_server(database_url: str, runtime: object, smtp_sink: SmtpSink) -> Iterator[ServerProcess]:
    """A platform server whose email channel is the loopback SMTP sink."""
    proc = start_server(database_url, extra_env=messaging_env(smtp_sink.port))
    yield proc
    proc.stop()


@pytest.fixture
def api(messaging_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=messaging_server.base_url, timeout=30) as c:
        yield c
