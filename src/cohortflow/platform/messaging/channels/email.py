"""Email over SMTP: plain-text and HTML parts, STARTTLS or implicit TLS, and authentication.

One SMTP connection serves a whole batch of messages; a dropped connection is reopened and the
message retried. A 4xx reply is transient (retried), a 5xx reply rejects that message only.
Each message has a ``Message-ID`` derived from its idempotency key, so a resend after a crash
carries the same id and mail stores that de-duplicate on it keep one copy.
"""

from __future__ import annotations

import contextlib
import functools
import quopri
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from cohortflow.platform.messaging.channels.base import DeliveryRejected, DeliveryUnavailable
from cohortflow.settings import MessagingSettings

IDEMPOTENCY_HEADER = "X-Cohortflow-Idempotency-Key"


@dataclass(frozen=True)
class OutgoingEmail:
    from_address: str
    to_address: str
    subject: str
    text: str
    html: str | None
    idempotency_key: str
    reply_to: str | None = None

    def to_message(self) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = self.to_address
        message["Subject"] = self.subject
        message["Date"] = formatdate(usegmt=True)
        domain = self.from_address.rsplit("@", 1)[-1].strip(" >") or "cohortflow.invalid"
        message["Message-ID"] = f"<{self.idempotency_key}@{domain}>"
        message[IDEMPOTENCY_HEADER] = self.idempotency_key
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message.set_content(self.text)
        if self.html is not None:
            message.add_alternative(self.html, subtype="html")
        return message

    @property
    def envelope_sender(self) -> str:
        return _bare_address(self.from_address)

    def to_bytes(self) -> bytes:
        """The same message as :meth:`to_message`, written directly as MIME bytes.

        ``email.message.EmailMessage`` parses and refolds every header through its header registry, about 2 ms
        of CPU per message: more than everything else a send does. Batched sends build their messages here.
        """
        domain = self.from_address.rsplit("@", 1)[-1].strip(" >") or "cohortflow.invalid"
        headers = [
            ("From", _address(self.from_address)),
            ("To", _address(self.to_address)),
            ("Subject", self.subject),
            ("Date", formatdate(usegmt=True)),
            ("Message-ID", f"<{self.idempotency_key}@{domain}>"),
            (IDEMPOTENCY_HEADER, self.idempotency_key),
        ]
        if self.reply_to:
            headers.append(("Reply-To", _address(self.reply_to)))
        headers.append(("MIME-Version", "1.0"))
        lines = [f"{name}: {_header_value(value)}" for name, value in headers]
        if self.html is None:
            lines += _part("plain", self.text)
        else:
            boundary = f"==cf-{uuid.uuid4().hex}"
            lines += [f'Content-Type: multipart/alternative; boundary="{boundary}"', "", f"--{boundary}"]
            lines += _part("plain", self.text)
            lines += [f"--{boundary}"]
            lines += _part("html", self.html)
            lines += [f"--{boundary}--", ""]
        return "\r\n".join(lines).encode("ascii")


@functools.lru_cache(maxsize=256)
def _bare_address(value: str) -> str:
    # Every message of a send has the same sender: parse it once.
    return parseaddr(value)[1] or value


def _address(value: str) -> str:
    if value.isascii():
        return value
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def _header_value(value: str) -> str:
    # A rendered subject may hold a line break; in a header it would start a new header (injection).
    value = " ".join(value.splitlines())
    return value if value.isascii() else Header(value, "utf-8").encode()


def _part(subtype: str, text: str) -> list[str]:
    body = "\r\n".join(text.splitlines())
    if body.isascii() and all(len(line) <= 998 for line in body.split("\r\n")):
        encoding = "7bit"
    else:
        encoding = "quoted-printable"
        body = "\r\n".join(quopri.encodestring(body.encode("utf-8")).decode("ascii").splitlines())
    return [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {encoding}", "", body]


def check_smtp_settings(settings: MessagingSettings) -> None:
    """Raise ``ValueError`` naming the problem when the SMTP settings cannot work together."""
    if settings.smtp_starttls and settings.smtp_ssl:
        raise ValueError("SMTP settings: smtp_starttls and smtp_ssl are exclusive (STARTTLS upgrades a plain session)")
    if (settings.smtp_username is None) != (settings.smtp_password is None):
        raise ValueError("SMTP settings: smtp_username and smtp_password must be set together")
    if settings.smtp_ca_file is not None and not settings.smtp_ca_file.is_file():
        raise ValueError(f"SMTP settings: smtp_ca_file {str(settings.smtp_ca_file)!r} is not a file")


class EmailChannel:
    def __init__(self, settings: MessagingSettings) -> None:
        check_smtp_settings(settings)
        self._settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext:
        ca = self._settings.smtp_ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        try:
            smtp: smtplib.SMTP
            if s.smtp_ssl:
                smtp = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=self._tls_context()
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.smtp_username is not None and s.smtp_password is not None:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryRejected(f"SMTP authentication failed: {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryUnavailable(f"SMTP server {s.smtp_host}:{s.smtp_port} unavailable: {exc}") from exc
        return smtp

    def send(self, email: OutgoingEmail) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(self._settings.delivery_max_attempts),
            wait=wait_exponential(
                multiplier=self._settings.delivery_retry_initial_seconds,
                max=max(self._settings.delivery_retry_initial_seconds * 8, 0.001),
            ),
            retry=retry_if_exception_type(DeliveryUnavailable),
            reraise=True,
        )
        retrying(self._send_once, email)

    def _send_once(self, email: OutgoingEmail) -> None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.send_message(email.to_message(), from_addr=None, to_addrs=[email.to_address])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            self._after_reply(code)
            raise _classify(code, f"SMTP refused recipient: {code} {_text(reply)}") from exc
        except smtplib.SMTPResponseException as exc:
            self._after_reply(exc.smtp_code)
            raise _classify(exc.smtp_code, f"SMTP error: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise DeliveryUnavailable(f"SMTP connection lost: {exc}") from exc
        if refused:
            code, reply = next(iter(refused.values()))
            raise _classify(code, f"SMTP refused recipient: {code} {_text(reply)}")

    def _after_reply(self, code: int) -> None:
        # After an error reply the session may be mid-transaction; RSET puts it back, or we reconnect.
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._drop()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _classify(code: int, reason: str) -> DeliveryRejected | DeliveryUnavailable:
    return DeliveryUnavailable(reason) if 400 <= code < 500 else DeliveryRejected(reason)
