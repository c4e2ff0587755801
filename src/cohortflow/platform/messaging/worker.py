"""The messaging worker: runs due campaign sends (including resuming crashed ones) and advances Canvases.

Any number of workers may run against the same database: leases decide who runs each send and each
Canvas, so adding workers adds throughput and a dead worker's work is picked up once its lease expires.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine

from cohortflow.clock import Clock, utcnow
from cohortflow.platform.messaging.campaigns import due_sends, run_send
from cohortflow.platform.messaging.canvas import active_canvases, advance_canvas
from cohortflow.platform.store import statistics
from cohortflow.settings import MessagingSettings

log = structlog.get_logger(__name__)


@dataclass
class WorkSummary:
    sends_run: list[int] = field(default_factory=list)
    sends_completed: list[int] = field(default_factory=list)
    canvases_advanced: list[str] = field(default_factory=list)
    users_entered: int = 0
    users_moved: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "sends_run": self.sends_run,
            "sends_completed": self.sends_completed,
            "canvases_advanced": self.canvases_advanced,
            "users_entered": self.users_entered,
            "users_moved": self.users_moved,
        }


def run_once(engine: Engine, settings: MessagingSettings, *, clock: Clock = utcnow) -> WorkSummary:
    """One pass: every due send to its end, then every active Canvas as far as it can go now."""
    summary = WorkSummary()
    with engine.connect() as conn:
        send_ids = due_sends(conn, now=clock())
    for send_id in send_ids:
        result = run_send(engine, settings, send_id, clock=clock)
        if result is None:
            continue
        summary.sends_run.append(send_id)
        if result.completed:
            summary.sends_completed.append(send_id)
        log.info("campaign send ran", send_id=send_id, completed=result.completed, **result.counts)
    with engine.connect() as conn:
        canvas_ids = active_canvases(conn, now=clock())
    for canvas_id in canvas_ids:
        advanced = advance_canvas(engine, settings, canvas_id, clock=clock)
        if advanced is None:
            continue
        summary.canvases_advanced.append(canvas_id)
        summary.users_entered += advanced.entered
        summary.users_moved += advanced.moved
    return summary


def run_forever(
    engine: Engine,
    settings: MessagingSettings,
    *,
    clock: Clock = utcnow,
    stop: threading.Event | None = None,
    poll_seconds: float | None = None,
) -> None:
    """Pass after pass until ``stop`` is set; an error in one pass is logged and the next pass retries. Once a
    minute (the first pass included) a pass also refreshes stale statistics where autovacuum is off
    (:mod:`cohortflow.platform.store.statistics`)."""
    stop = stop or threading.Event()
    interval = poll_seconds if poll_seconds is not None else settings.worker_poll_seconds
    statistics_due = time.monotonic()
    while not stop.is_set():
        try:
            if time.monotonic() >= statistics_due:
                statistics_due = time.monotonic() + statistics.CHECK_EVERY_SECONDS
                statistics.analyze_stale_tables(engine)
            run_once(engine, settings, clock=clock)
        except Exception as exc:  # a database blip must not kill the worker; the next pass retries
            log.exception("worker pass failed", error=type(exc).__name__)
        stop.wait(interval)


class BackgroundWorker:
    """The worker on a daemon thread of another process (the API server's), stopped at its shutdown."""

    def __init__(self, engine: Engine, settings: MessagingSettings, *, clock: Clock = utcnow) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=run_forever,
            args=(engine, settings),
            kwargs={"clock": clock, "stop": self._stop},
            name="cohortflow-messaging-worker",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        # A send in progress keeps going until its batch ends; whatever is left, another worker (or this
        # server's next start) resumes.
        self._stop.set()
        self._thread.join(timeout)
