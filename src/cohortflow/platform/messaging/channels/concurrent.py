"""Channels for many messages in flight at once: webhooks over one aiohttp connection pool, email over a small
pool of SMTP sessions (as an MTA client would hold), both on one event loop.

Failures are classified as in the one-at-a-time channels: a refusal (HTTP 4xx, SMTP 5xx) is final for that
message, an outage (timeouts, HTTP 5xx/429, SMTP 4xx, dropped connections) is retried with backoff and then
reported. Every webhook carries ``Idempotency-Key`` and every email a ``Message-ID`` derived from the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import aiosmtplib
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from cohortflow import __version__
from cohortflow.platform.messaging.channels.base import DeliveryRejected, DeliveryUnavailable
from cohortflow.platform.messaging.channels.email import OutgoingEmail, check_smtp_settings
from cohortflow.platform.messaging.channels.webhook import IDEMPOTENCY_HEADER, OutgoingWebhook
from cohortflow.settings import MessagingSettings


class ConcurrentChannels:
    """Both channels for one run of the delivery engine; open lazily, close with :meth:`close`."""

    def __init__(self, settings: MessagingSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._smtp: SmtpPool | None = None

    async def _retrying(self, attempt: Callable[[], Awaitable[None]]) -> None:
        # The first try outside tenacity: setting up its retry state costs about as much CPU as the request.
        try:
            await attempt()
            return
        except DeliveryUnavailable:
            if self._settings.delivery_max_attempts == 1:
                raise
        s = self._settings
        await asyncio.sleep(s.delivery_retry_initial_seconds)
        async for retry in AsyncRetrying(
            stop=stop_after_attempt(s.delivery_max_attempts - 1),
            wait=wait_exponential(
                multiplier=s.delivery_retry_initial_seconds, max=max(s.delivery_retry_initial_seconds * 8, 0.001)
            ),
            retry=retry_if_exception_type(DeliveryUnavailable),
            reraise=True,
        ):
            with retry:
                await attempt()

    async def send(self, outgoing: OutgoingEmail | OutgoingWebhook) -> None:
        """Deliver or raise :class:`DeliveryRejected` / :class:`DeliveryUnavailable` with the reason."""
        if isinstance(outgoing, OutgoingEmail):
            if self._smtp is None:
                self._smtp = SmtpPool(self._settings)
            pool = self._smtp
            await self._retrying(lambda: pool.send(outgoing))
        else:
            await self._retrying(lambda: self._post(outgoing))

    async def _post(self, webhook: OutgoingWebhook) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.webhook_connections),
                timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
                headers={"User-Agent": f"cohortflow/{__version__}"},
            )
        headers = {**webhook.headers, "Content-Type": "application/json", IDEMPOTENCY_HEADER: webhook.idempotency_key}
        timeout = aiohttp.ClientTimeout(total=webhook.timeout_seconds) if webhook.timeout_seconds else None
        try:
            async with self._session.post(
                webhook.url, data=orjson.dumps(webhook.body), headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError as exc:
            raise DeliveryUnavailable(f"webhook timed out: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise DeliveryUnavailable(f"webhook unreachable: {exc or type(exc).__name__}") from exc
        if 200 <= status < 300:
            return
        detail = f"webhook answered HTTP {status}"
        if status == 429 or status >= 500:
            raise DeliveryUnavailable(detail)
        raise DeliveryRejected(detail)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._smtp is not None:
            await self._smtp.close()


class SmtpPool:
    """Up to ``smtp_connections`` SMTP sessions, each carrying one message at a time, reused across messages."""

    def __init__(self, settings: MessagingSettings) -> None:
        check_smtp_settings(settings)
        self._settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)

    def _tls_context(self) -> ssl.SSLContext:
        ca = self._settings.smtp_ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        tls = s.smtp_ssl or s.smtp_starttls
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            use_tls=s.smtp_ssl,
            start_tls=s.smtp_starttls,
            tls_context=self._tls_context() if tls else None,
        )
        try:
            await smtp.connect()
            if s.smtp_username is not None and s.smtp_password is not None:
                await smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryRejected(f"SMTP authentication failed: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise DeliveryUnavailable(f"SMTP server {s.smtp_host}:{s.smtp_port} unavailable: {exc}") from exc
        return smtp

    async def send(self, email: OutgoingEmail) -> None:
        async with self._slots:
            smtp = self._idle.pop() if self._idle else await self._connect()
            keep = True
            try:
                # MAIL, RCPT and DATA rather than ``sendmail``, which parses both addresses twice more.
                if email.needs_smtputf8:
                    if smtp.is_ehlo_or_helo_needed:  # the extensions are known only after EHLO
                        await smtp.ehlo()
                    if not smtp.supports_extension("smtputf8"):
                        raise DeliveryRejected(
                            f"SMTP server {self._settings.smtp_host} does not offer SMTPUTF8, which the address "
                            f"{email.to_address!r} needs"
                        )
                    await smtp.mail(email.envelope_sender, options=["SMTPUTF8"], encoding="utf-8")
                    await smtp.rcpt(email.to_address, encoding="utf-8")
                else:
                    await smtp.mail(email.envelope_sender)
                    await smtp.rcpt(email.to_address)
                await smtp.data(email.to_bytes())
            except aiosmtplib.SMTPRecipientRefused as exc:
                keep = await _reset(smtp)
                raise _classify(exc.code, f"SMTP refused recipient: {exc.code} {exc.message}") from exc
            except aiosmtplib.SMTPResponseException as exc:
                keep = await _reset(smtp)
                raise _classify(exc.code, f"SMTP error: {exc.code} {exc.message}") from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                keep = False
                raise DeliveryUnavailable(f"SMTP connection lost: {exc}") from exc
            finally:
                if keep and smtp.is_connected:
                    self._idle.append(smtp)
                else:
                    smtp.close()

    async def close(self) -> None:
        while self._idle:
            smtp = self._idle.pop()
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
            smtp.close()


async def _reset(smtp: aiosmtplib.SMTP) -> bool:
    """After an error reply the session may be mid-transaction: RSET puts it back, or it is dropped."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def _classify(code: int, reason: str) -> DeliveryRejected | DeliveryUnavailable:
    return DeliveryUnavailable(reason) if 400 <= code < 500 else DeliveryRejected(reason)
