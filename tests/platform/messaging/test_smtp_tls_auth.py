"""The email channel against an SMTP server that requires STARTTLS and authentication."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from cohortflow.platform.messaging.delivery import Deliverer
from cohortflow.platform.messaging.messages import EmailMessageSpec
from cohortflow.settings import MessagingSettings
from tests.platform.messaging.sinks import SmtpSink
from tests.support import free_port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class _Authenticator:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
        return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[SmtpSink, int]]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    sink = SmtpSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_Authenticator(),
        auth_required=True,
    )
    controller.start()
    yield sink, port
    controller.stop()


def _settings(port: int, cert: Path, password: str) -> MessagingSettings:
    return MessagingSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=True,
        smtp_ca_file=cert,
        smtp_username="mailer",
        smtp_password=SecretStr(password),
        delivery_max_attempts=1,
    )


MESSAGE = EmailMessageSpec(channel="email", from_address="a@acme.example", subject="Hi {{ first_name }}", text="t")


def test_starttls_and_login_deliver(tls_server: tuple[SmtpSink, int], certificate: tuple[Path, Path]) -> None:
    sink, port = tls_server
    deliverer = Deliverer(_settings(port, certificate[0], "s3cret"))
    try:
        outcome = deliverer.deliver(MESSAGE, {"email": "tls@secure.example", "first_name": "Tia"}, "k-1")
    finally:
        deliverer.close()
    assert outcome.status == "sent", outcome.reason
    assert [m["Subject"] for m in sink.to("tls@secure.example")] == ["Hi Tia"]


def test_wrong_password_fails_the_message_with_the_reason(
    tls_server: tuple[SmtpSink, int], certificate: tuple[Path, Path]
) -> None:
    _sink, port = tls_server
    deliverer = Deliverer(_settings(port, certificate[0], "wrong"))
    try:
        outcome = deliverer.deliver(MESSAGE, {"email": "nope@secure.example", "first_name": "N"}, "k-2")
    finally:
        deliverer.close()
    assert outcome.status == "failed"
    assert outcome.reason == "SMTP authentication failed: 535"


def test_plain_connection_to_a_starttls_server_is_refused(tls_server: tuple[SmtpSink, int]) -> None:
    _sink, port = tls_server
    settings = MessagingSettings(smtp_host="127.0.0.1", smtp_port=port, delivery_max_attempts=1)
    deliverer = Deliverer(settings)
    try:
        outcome = deliverer.deliver(MESSAGE, {"email": "plain@secure.example", "first_name": "P"}, "k-3")
    finally:
        deliverer.close()
    assert outcome.status == "failed"
    assert "530" in (outcome.reason or "")
