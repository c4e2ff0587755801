"""Running asynchronous work (sync delivery, messaging sends, destination calls) from blocking code."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop: uvloop where available (about a tenth less CPU per
    request than the default loop in bench/bench_sync_delivery_cpu.py, which adds up while a sync holds the rate
    limit for hours), else asyncio's own.

    The callers (``run_sync``, a campaign send) are blocking calls; when their thread already runs an event
    loop (an async web app, a notebook, Playwright's sync API in a test), the work gets a thread of its own
    instead of failing.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _new_loop_run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohortflow-sync") as pool:
        return pool.submit(_new_loop_run, coro).result()


def _new_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # not on every platform (uvicorn[standard] installs it where it builds)
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
