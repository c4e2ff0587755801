"""Module-level ASGI app for ``uvicorn cohortflow.platform.api.server:app`` (settings from the environment)."""

from __future__ import annotations

import gc

from cohortflow.logs import configure_logging
from cohortflow.platform.api.app import create_app
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.settings import get_settings

# Each uvicorn worker imports this module in a process of its own, so logging is set up here and not only by the
# CLI: without it structlog's defaults print tracebacks with every local variable, request headers included.
_settings = get_settings()
configure_logging(_settings.log_level, _settings.log_json)
app = create_app(
    PlatformRuntime.open(_settings.platform),
    messaging_worker=_settings.messaging if _settings.messaging.worker_in_process else None,
)
# Everything built so far (modules, the app's routes and models) lives as long as the process: moved out of the
# collector's generations, it is no longer walked by every full collection that request garbage triggers.
gc.freeze()
