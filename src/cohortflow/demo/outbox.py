"""A local SMTP server for the demo that writes every message it accepts to ``outbox/NNNNN.eml``."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from cohortflow.platform.process import free_port


class _WriteToDisk:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        with self._lock:
            number = next(self._numbers)
            self.count += 1
        content: Any = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else str(content).encode()
        (self.directory / f"{number:05d}.eml").write_bytes(data)
        return "250 Message accepted for delivery"


class Outbox:
    """``with Outbox(dir) as (host, port): ...``; ``outbox.count`` is the number of messages received."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._handler = _WriteToDisk(directory)
        self.port = free_port()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    @property
    def count(self) -> int:
        return self._handler.count

    def __enter__(self) -> tuple[str, int]:
        self._controller.start()
        return "127.0.0.1", self.port

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()
