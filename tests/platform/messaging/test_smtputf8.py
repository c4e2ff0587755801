"""Addresses with a non-ASCII mailbox (``léa@…``, common among real customers) go out over SMTPUTF8 (RFC 6531),
with the address headers in UTF-8 (RFC 6532); a server without SMTPUTF8 fails that one message with the reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from cohortflow.platform.messaging.delivery import Deliverer
from cohortflow.platform.messaging.messages import EmailMessageSpec
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.sinks import SmtpSink
from tests.support import free_port

MESSAGE = EmailMessageSpec(
    channel="email", from_address="Équipe <équipe@acme.example>", subject="Bonjour {{ first_name }}", text="é"
)


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[SmtpSink, int, bool]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=request.param)
    controller.start()
    try:
        yield sink, port, bool(request.param)
    finally:
        controller.stop()


def test_a_non_ascii_address_is_sent_over_smtputf8_or_fails_with_the_reason(
    server: tuple[SmtpSink, int, bool],
) -> None:
    sink, port, utf8 = server
    deliverer = Deliverer(MessagingSettings(smtp_host="127.0.0.1", smtp_port=port, delivery_max_attempts=1))
    try:
        accented = deliverer.deliver(MESSAGE, {"email": "léa.martin@example.com", "first_name": "Léa"}, "k-1")
        plain = deliverer.deliver(
            MESSAGE.model_copy(update={"from_address": "team@acme.example"}),
            {"email": "lea@example.com", "first_name": "Léa"},
            "k-2",
        )
    finally:
        deliverer.close()
    assert plain.status == "sent", plain.reason
    assert [m["Subject"] for m in sink.to("lea@example.com")] == ["Bonjour Léa"]
    if utf8:
        assert accented.status == "sent", accented.reason
        (message,) = sink.to("léa.martin@example.com")
        assert message["Subject"] == "Bonjour Léa"
        assert message["From"].addresses[0].addr_spec == "équipe@acme.example"
        assert message.get_content().strip() == "é"
    else:
        assert accented.status == "failed"
        assert "does not offer SMTPUTF8" in (accented.reason or "")
        assert sink.to("léa.martin@example.com") == []
