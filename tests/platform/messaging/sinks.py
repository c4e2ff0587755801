"""Real receivers on loopback: an SMTP server (aiosmtpd) and an HTTP webhook receiver."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support import free_port


class SmtpSink:
    """Keeps every message the server accepted (answered 250 to)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        # Called with the envelope before accepting; a returned string is the SMTP reply instead of 250.
        self.on_data: Callable[[Envelope], str | None] | None = None
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.on_data is not None:
            reply = self.on_data(envelope)
            if reply is not None:
                return reply
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        # An SMTPUTF8 message has raw UTF-8 headers (RFC 6532), which message_from_bytes would leave undecoded.
        message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    def for_domain(self, domain: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if str(m["To"]).endswith("@" + domain)]


@dataclass
class WebhookCall:
    path: str
    headers: dict[str, str]
    body: Any
    # time.monotonic() on arrival: what a rate limit is judged by.
    received_at: float = 0.0


@dataclass
class WebhookSink:
    calls: list[WebhookCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Called with each call before answering; returns the HTTP status to answer (default 200).
    on_call: Callable[[WebhookCall], int] | None = None
    port: int = 0
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                call = WebhookCall(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw), time.monotonic()
                )
                with sink.lock:
                    sink.calls.append(call)
                status = sink.on_call(call) if sink.on_call is not None else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[WebhookCall]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
