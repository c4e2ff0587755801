"""The live request debugger: a bounded sample of every run's requests to the destination.

:class:`RecordingTransport` wraps the destination client's HTTP transport and hands each exchange (a sample of
the body with credentials masked, the status, the start of the answer, the duration, the attempt number) to a
:class:`RequestRecorder`. The delivery loop writes what the recorder holds inside the transactions it commits
anyway (one per batch) and before each retry's wait, so samples appear while the run is in flight at no extra
commit on the happy path.

Bounded per run: the first ``limit`` requests, then only failed ones up to ``2 * limit`` (what a debugger is for).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import Connection, select

from cohortflow.clock import Clock, as_utc, utcnow
from cohortflow.redact import redact_url
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_run_requests

# The retry attempt of the request being sent (set by the delivery loop around each attempt).
current_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("cohortflow_attempt", default=1)

BODY_SAMPLE_CHARS = 2000
ANSWER_SAMPLE_CHARS = 600
LIST_SAMPLE_ITEMS = 5
_SECRET_KEYS = frozenset({"partner_api_key", "client_secret", "rest_api_key", "api_key"})


def _mask(value: Any) -> str:
    return f"{value[:6]}…" if isinstance(value, str) and len(value) > 10 else "…"


def _shrink(value: Any) -> Any:
    """Secrets masked and long lists cut to their first items, so a 1,000-identifier body stays readable."""
    if isinstance(value, dict):
        return {k: _mask(v) if k in _SECRET_KEYS else _shrink(v) for k, v in value.items()}
    if isinstance(value, list):
        head = [_shrink(v) for v in value[:LIST_SAMPLE_ITEMS]]
        if len(value) > LIST_SAMPLE_ITEMS:
            head.append(f"… {len(value) - LIST_SAMPLE_ITEMS} more")
        return head
    return value


def sample_body(content: bytes) -> str:
    try:
        parsed = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return "(not JSON)" if content else ""
    text = orjson.dumps(_shrink(parsed), option=orjson.OPT_INDENT_2).decode()
    return text if len(text) <= BODY_SAMPLE_CHARS else text[:BODY_SAMPLE_CHARS] + "…"


@dataclass(frozen=True)
class RequestSample:
    seq: int
    at: datetime
    method: str
    url: str
    body: str
    status: int | None
    answer: str | None
    duration_ms: float
    attempt: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "method": self.method,
            "url": self.url,
            "path": self.path,
            "body": self.body,
            "status": self.status,
            "answer": self.answer,
            "duration_ms": round(self.duration_ms, 1),
            "attempt": self.attempt,
            "error": self.error,
        }


class RequestRecorder:
    def __init__(self, limit: int = 200, clock: Clock = utcnow) -> None:
        self.limit = limit
        self.clock = clock
        self.seen = 0
        self.kept = 0
        self._pending: list[RequestSample] = []

    def record(
        self,
        request: httpx.Request,
        status: int | None,
        answer: str | None,
        started: float,
        error: str | None,
    ) -> None:
        self.seen += 1
        failed = error is not None or status is None or not 200 <= status < 300
        if self.kept >= self.limit and not (failed and self.kept < 2 * self.limit):
            return
        self.kept += 1
        self._pending.append(
            RequestSample(
                seq=self.seen,
                at=self.clock(),
                method=request.method,
                url=redact_url(str(request.url)),
                body=sample_body(request.content),
                status=status,
                answer=answer[:ANSWER_SAMPLE_CHARS] if answer is not None else None,
                duration_ms=(time.monotonic() - started) * 1000,
                attempt=current_attempt.get(),
                error=error,
            )
        )

    def drain(self) -> list[RequestSample]:
        pending, self._pending = self._pending, []
        return pending


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, recorder: RequestRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()
        except Exception as exc:
            self.recorder.record(request, None, None, started, f"{type(exc).__name__}: {exc}")
            raise
        self.recorder.record(request, response.status_code, response.text, started, None)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def save_samples(conn: Connection, run_id: str, samples: Sequence[RequestSample]) -> None:
    if samples:
        conn.execute(
            sync_run_requests.insert(),
            [
                {
                    "run_id": run_id,
                    "seq": s.seq,
                    "at": s.at,
                    "method": s.method,
                    "url": s.url,
                    "body": s.body,
                    "status": s.status,
                    "answer": s.answer,
                    "duration_ms": s.duration_ms,
                    "attempt": s.attempt,
                    "error": s.error,
                }
                for s in samples
            ],
        )


def run_requests(store: StateStore, run_id: str, after_seq: int = 0, limit: int = 500) -> list[RequestSample]:
    """The recorded requests of a run after ``after_seq`` (the debugger polls with the last seq it has)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(sync_run_requests)
            .where(sync_run_requests.c.run_id == run_id, sync_run_requests.c.seq > after_seq)
            .order_by(sync_run_requests.c.seq)
            .limit(limit)
        ).all()
    return [
        RequestSample(
            seq=r.seq,
            at=as_utc(r.at),
            method=r.method,
            url=r.url,
            body=r.body,
            status=r.status,
            answer=r.answer,
            duration_ms=r.duration_ms,
            attempt=r.attempt,
            error=r.error,
        )
        for r in rows
    ]
